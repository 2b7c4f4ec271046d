//! Per-namespace allowances: which backends, raw queries and AWS roles the triggers of a
//! namespace may use.
//!
//! A policy keyed by namespace is only as strong as the caller's identity: the namespace
//! is a field the caller writes. The server therefore starts with one only when callers are
//! authenticated by client certificates (KEDA's `tlsClientCert`), or when the operator
//! says explicitly that the namespace field is trusted (see `config`).

use std::collections::{BTreeMap, BTreeSet};

/// `NAMESPACE=VALUE[,VALUE…]` rules; namespace `*` is every namespace.
///
/// With no rule configured everything is allowed (the operator has not asked for
/// isolation). Once one is, a namespace may use only the values listed for it or for `*`;
/// the value `*` allows every value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowance {
    rules: BTreeMap<String, BTreeSet<String>>,
}

impl Allowance {
    /// Builds an allowance from every value of one repeatable flag; `valid` checks each
    /// listed value (returning why it is not one).
    pub fn from_flags<S: AsRef<str>>(
        flags: &[S],
        valid: impl Fn(&str) -> Result<(), String>,
    ) -> Result<Allowance, String> {
        let mut a = Allowance::default();
        for flag in flags {
            let flag = flag.as_ref();
            let (namespace, values) = flag
                .split_once('=')
                .ok_or_else(|| format!("{flag:?} must be NAMESPACE=VALUE[,VALUE…]"))?;
            let namespace = namespace.trim();
            if namespace != "*" && !crate::trigger::is_dns1123_label(namespace) {
                return Err(format!(
                    "{flag:?}: {namespace:?} is not a namespace name or *"
                ));
            }
            let set = a.rules.entry(namespace.to_string()).or_default();
            for v in values.split(',').map(str::trim) {
                if v != "*" {
                    valid(v).map_err(|e| format!("{flag:?}: {e}"))?;
                }
                set.insert(v.to_string());
            }
        }
        Ok(a)
    }

    /// Whether any rule is configured.
    pub fn is_restricted(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Whether `namespace` may use `value`.
    pub fn allows(&self, namespace: &str, value: &str) -> bool {
        if !self.is_restricted() {
            return true;
        }
        let listed = |ns: &str| {
            self.rules
                .get(ns)
                .is_some_and(|set| set.contains(value) || set.contains("*"))
        };
        listed(namespace) || listed("*")
    }
}

/// Every per-namespace allowance of the server.
#[derive(Debug, Clone, Default)]
pub struct NamespacePolicy {
    /// Named Prometheus / Tempo backends each namespace may read (`--backend-allow`).
    pub backends: Allowance,
    /// Backends each namespace may send raw queries to (`--raw-query-allow`).
    pub raw_queries: Allowance,
    /// Role ARNs each namespace's SQS triggers may assume (`--aws-role-allow`); with none,
    /// `awsRoleArn` is refused altogether.
    pub aws_roles: Allowance,
}

impl NamespacePolicy {
    /// Whether any allowance is configured (each trusts the caller's namespace).
    pub fn is_restricted(&self) -> bool {
        self.backends.is_restricted()
            || self.raw_queries.is_restricted()
            || self.aws_roles.is_restricted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowance(flags: &[&str]) -> Allowance {
        Allowance::from_flags(flags, |v| {
            if v.is_empty() {
                Err("empty value".into())
            } else {
                Ok(())
            }
        })
        .unwrap()
    }

    #[test]
    fn rules() {
        let open = allowance(&[]);
        assert!(open.allows("shop", "anything"));
        let a = allowance(&["shop=prom-a,prom-b", "*=shared", "ops=*"]);
        let cases = [
            ("shop", "prom-a", true),
            ("shop", "prom-b", true),
            ("shop", "shared", true),
            ("shop", "prom-c", false),
            ("billing", "shared", true),
            ("billing", "prom-a", false),
            ("ops", "anything", true),
        ];
        for (ns, v, want) in cases {
            assert_eq!(a.allows(ns, v), want, "{ns} {v}");
        }
    }

    #[test]
    fn bad_flags_are_refused() {
        let valid = |_: &str| Ok(());
        for flag in ["shop", "Team-A=x", "a/b=x", "=x"] {
            assert!(Allowance::from_flags(&[flag], valid).is_err(), "{flag}");
        }
        assert!(
            Allowance::from_flags(&["shop="], |v: &str| if v.is_empty() {
                Err("empty".into())
            } else {
                Ok(())
            })
            .is_err()
        );
    }
}
