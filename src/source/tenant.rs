//! Tenants of multi-tenant backends (Tempo; Mimir, Cortex and Thanos receive behind the
//! Prometheus API): the `X-Scope-OrgID` header, its value's rules, and which tenants each
//! namespace may read.

use std::collections::{BTreeMap, BTreeSet};

/// The header Tempo, Mimir and Cortex read the tenant from (grafana/dskit `user` package,
/// `OrgIDHeaderName`).
pub const TENANT_HEADER: &str = "X-Scope-OrgID";

/// The longest tenant ID Tempo accepts, in bytes.
pub const MAX_TENANT_LEN: usize = 150;

/// Checks a tenant ID the way Tempo, Mimir and Cortex do (grafana/dskit `tenant`
/// package, `ValidTenantID` and `MaxTenantIDLength`): 1 to 150 bytes of ASCII letters,
/// digits and `!` `-` `_` `.` `*` `'` `(` `)`, and not `.` or `..`. So `|`, dskit's
/// separator of several tenants in one header, is refused: a trigger reads one tenant.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    if tenant.is_empty() {
        return Err("tenant is empty".into());
    }
    if tenant.len() > MAX_TENANT_LEN {
        return Err(format!(
            "tenant is {} bytes long, at most {MAX_TENANT_LEN} are allowed",
            tenant.len()
        ));
    }
    if let Some(bad) = tenant
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "!-_.*'()".contains(c)))
    {
        return Err(format!(
            "tenant {tenant:?} contains {bad:?}: only letters, digits and !-_.*'() are allowed"
        ));
    }
    if tenant == "." || tenant == ".." {
        return Err(format!("tenant {tenant:?} is not allowed"));
    }
    Ok(())
}

/// Parses one `--tempo-tenant-allow` / `--prometheus-tenant-allow`
/// `NAMESPACE=TENANT[,TENANT…]` value. The namespace is
/// a Kubernetes namespace name or `*` (every namespace).
pub fn parse_allow(flag: &str) -> Result<(String, Vec<String>), String> {
    let (namespace, tenants) = flag
        .split_once('=')
        .ok_or_else(|| format!("tenant allowance {flag:?} must be NAMESPACE=TENANT[,TENANT…]"))?;
    let namespace = namespace.trim();
    if namespace != "*" && !is_namespace_name(namespace) {
        return Err(format!(
            "tenant allowance {flag:?}: {namespace:?} is not a namespace name or *"
        ));
    }
    let mut list = Vec::new();
    for tenant in tenants.split(',').map(str::trim) {
        validate_tenant(tenant).map_err(|e| format!("tenant allowance {flag:?}: {e}"))?;
        list.push(tenant.to_string());
    }
    Ok((namespace.to_string(), list))
}

/// A Kubernetes namespace name: an RFC 1123 label.
fn is_namespace_name(s: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(ok_char)
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Which tenants of one kind of backend each namespace's triggers may name.
///
/// With no allowance configured every tenant is allowed (the operator has not asked for
/// isolation). Once one is, a namespace may name only the tenants listed for it or for
/// `*`; a trigger that names no tenant uses the backend default and is always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPolicy {
    allow: BTreeMap<String, BTreeSet<String>>,
}

/// A trigger named a tenant its namespace may not use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("namespace {namespace:?} may not use {kind} tenant {tenant:?}")]
pub struct TenantDenied {
    /// `tempo` or `prometheus`.
    pub kind: &'static str,
    pub namespace: String,
    pub tenant: String,
}

impl TenantPolicy {
    /// Builds the policy from every `--…-tenant-allow` value; repeated namespaces add up.
    pub fn from_flags<I, S>(flags: I) -> Result<TenantPolicy, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut policy = TenantPolicy::default();
        for flag in flags {
            let (namespace, tenants) = parse_allow(flag.as_ref())?;
            policy.allow(namespace, tenants);
        }
        Ok(policy)
    }

    /// Lets `namespace` (or every namespace, for `*`) use `tenants`.
    pub fn allow(&mut self, namespace: String, tenants: impl IntoIterator<Item = String>) {
        self.allow.entry(namespace).or_default().extend(tenants);
    }

    /// Whether any allowance is configured.
    pub fn is_restricted(&self) -> bool {
        !self.allow.is_empty()
    }

    /// Whether triggers in `namespace` may ask a `kind` backend as `tenant` (`None`: the
    /// backend's default).
    pub fn check(
        &self,
        kind: &'static str,
        namespace: &str,
        tenant: Option<&str>,
    ) -> Result<(), TenantDenied> {
        let Some(tenant) = tenant else {
            return Ok(());
        };
        if !self.is_restricted() {
            return Ok(());
        }
        let listed = |ns: &str| self.allow.get(ns).is_some_and(|t| t.contains(tenant));
        if listed(namespace) || listed("*") {
            Ok(())
        } else {
            Err(TenantDenied {
                kind,
                namespace: namespace.to_string(),
                tenant: tenant.to_string(),
            })
        }
    }
}

/// The tenant policies of both multi-tenant kinds of backend: `--tempo-tenant-allow` and
/// `--prometheus-tenant-allow`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantPolicies {
    pub tempo: TenantPolicy,
    pub prometheus: TenantPolicy,
}

impl TenantPolicies {
    /// Whether any allowance is configured.
    pub fn is_restricted(&self) -> bool {
        self.tempo.is_restricted() || self.prometheus.is_restricted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants() {
        let check = |input: &str, expect: bool| {
            assert_eq!(validate_tenant(input).is_ok(), expect, "{input:?}");
        };
        check("team-a", true);
        check("Team_A.prod", true);
        check("a!b*c'd(e)", true);
        check("...", true);
        check(".a", true);
        check(&"x".repeat(150), true);
        check(&"x".repeat(151), false);
        check("", false);
        check(".", false);
        check("..", false);
        check("a|b", false);
        check("a b", false);
        check("a/b", false);
        check("a,b", false);
        check("a\"b", false);
        check("a\nb", false);
        check("é", false);
        // `!-_` in the documented set is three characters, not a range.
        check("a#b", false);
        check("a+b", false);
        check("a:b", false);
        check("a@b", false);
    }

    #[test]
    fn allow_flags() {
        let check = |input: &str, expect: Option<(&str, &[&str])>| {
            let got = parse_allow(input).ok();
            let expect = expect.map(|(ns, ts)| {
                (
                    ns.to_string(),
                    ts.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                )
            });
            assert_eq!(got, expect, "{input:?}");
        };
        check("shop=team-shop", Some(("shop", &["team-shop"])));
        check("shop=a,b", Some(("shop", &["a", "b"])));
        check(" shop = a , b ", Some(("shop", &["a", "b"])));
        check("*=shared", Some(("*", &["shared"])));
        check("shop", None);
        check("shop=", None);
        check("shop=a,,b", None);
        check("=a", None);
        check("Shop=a", None);
        check("-shop=a", None);
        check("shop=a|b", None);
        check("shop=..", None);
    }

    #[test]
    fn bad_allow_flags_name_the_flag() {
        let err = parse_allow("shop=a|b").unwrap_err();
        assert!(err.contains("shop=a|b") && err.contains("'|'"), "{err}");
    }

    #[test]
    fn policy() {
        let policy = TenantPolicy::from_flags([
            "shop=team-shop",
            "payments=team-pay,audit",
            "shop=legacy",
            "*=shared",
        ])
        .unwrap();
        let check = |namespace: &str, tenant: Option<&str>, expect: bool| {
            assert_eq!(
                policy.check("tempo", namespace, tenant).is_ok(),
                expect,
                "{namespace} {tenant:?}"
            );
        };
        check("shop", Some("team-shop"), true);
        check("shop", Some("legacy"), true);
        check("shop", Some("shared"), true);
        check("shop", None, true);
        check("shop", Some("team-pay"), false);
        check("shop", Some("Team-shop"), false);
        check("payments", Some("audit"), true);
        check("payments", Some("team-shop"), false);
        check("other", Some("shared"), true);
        check("other", Some("team-shop"), false);
        check("other", None, true);
    }

    #[test]
    fn no_policy_allows_everything() {
        let policy = TenantPolicy::from_flags(Vec::<String>::new()).unwrap();
        assert!(!policy.is_restricted());
        assert_eq!(policy.check("tempo", "shop", Some("anyone")), Ok(()));
        assert_eq!(policy.check("tempo", "shop", None), Ok(()));
    }

    #[test]
    fn denial_names_namespace_and_tenant() {
        let policy = TenantPolicy::from_flags(["shop=team-shop"]).unwrap();
        let err = policy
            .check("prometheus", "payments", Some("team-shop"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "namespace \"payments\" may not use prometheus tenant \"team-shop\""
        );
    }
}
