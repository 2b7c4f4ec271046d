//! The board's key: who asked and the trigger metadata in one buffer, the pairs sorted,
//! so a lookup compares bytes and allocates nothing.

use crate::proto::wire::Metadata;

/// Who asked and the trigger metadata in one allocation: the namespace, the name, then the
/// metadata pairs sorted by key (for a key sent twice, its last value, as prost decodes a
/// map), each a little-endian `u32` length and its bytes. Two requests are the same
/// ScaledObject trigger exactly when their keys are equal, whatever order the map came in.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Key(pub(super) Box<[u8]>);

impl Key {
    #[cfg(test)]
    pub(super) fn new(namespace: &str, name: &str, md: &Metadata) -> Key {
        let mut out = Vec::new();
        Key::write(&mut out, namespace, name, md);
        Key(out.into_boxed_slice())
    }

    /// Writes the key of this caller and metadata into `out`.
    pub(super) fn write(out: &mut Vec<u8>, namespace: &str, name: &str, md: &Metadata) {
        // The pairs sorted in place: on the stack for up to 16 (KEDA triggers have a
        // handful), on the heap beyond.
        let mut stack: [(&[u8], &[u8]); 16] = [(&[], &[]); 16];
        let mut heap = Vec::new();
        let mut n = 0;
        for pair in md.entry_bytes() {
            if n < stack.len() {
                stack[n] = pair;
            } else {
                if heap.is_empty() {
                    heap.extend_from_slice(&stack);
                }
                heap.push(pair);
            }
            n += 1;
        }
        let pairs: &mut [(&[u8], &[u8])] = if heap.is_empty() {
            &mut stack[..n]
        } else {
            &mut heap
        };
        // UTF-8 sorts as its bytes do, so this is the order of the keys as strings. Stable:
        // for a key sent twice the later pair stays later, and is the one kept.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut put = |part: &[u8]| {
            // Parts are capped far below 4 GiB by tonic's message size limit.
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        };
        put(namespace.as_bytes());
        put(name.as_bytes());
        for (i, (k, v)) in pairs.iter().enumerate() {
            if pairs.get(i + 1).is_none_or(|next| next.0 != *k) {
                put(k);
                put(v);
            }
        }
    }

    /// The parts in order: namespace, name, then key, value, key, value, ...
    fn parts(&self) -> impl Iterator<Item = &str> {
        let mut rest: &[u8] = &self.0;
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let (bytes, tail) = tail.split_at_checked(len)?;
            rest = tail;
            // Made from `&str`s; never fails.
            std::str::from_utf8(bytes).ok()
        })
    }

    pub(super) fn namespace(&self) -> &str {
        self.parts().next().unwrap_or_default()
    }

    pub(super) fn name(&self) -> &str {
        self.parts().nth(1).unwrap_or_default()
    }

    /// The metadata pairs, sorted by key.
    #[cfg(test)]
    fn pairs(&self) -> Vec<(&str, &str)> {
        let mut parts = self.parts().skip(2);
        std::iter::from_fn(|| Some((parts.next()?, parts.next()?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn md(pairs: &[(&str, &str)]) -> Metadata {
        pairs.iter().copied().collect()
    }

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        md(pairs).to_map()
    }

    /// Two keys are equal exactly when the callers and the metadata maps (as prost decodes
    /// them) are, whatever order the pairs came in.
    #[test]
    fn keys_are_equal_only_for_equal_callers_and_maps() {
        fn check(stored: &[(&str, &str)], asked: &[(&str, &str)], want: bool) {
            let a = Key::new("ns", "so", &md(stored));
            let b = Key::new("ns", "so", &md(asked));
            assert_eq!(a == b, want, "{stored:?} vs {asked:?}");
            assert_eq!(map(stored) == map(asked), want, "the table itself is wrong");
        }
        let md3 = [
            ("signal", "latency"),
            ("service", "orders"),
            ("threshold", "300ms"),
        ];
        check(&md3, &md3, true);
        check(&md3, &[md3[2], md3[0], md3[1]], true);
        check(&[], &[], true);
        check(&md3, &md3[..2], false);
        check(&md3[..2], &md3, false);
        check(
            &md3,
            &[
                ("signal", "latency"),
                ("service", "orders"),
                ("threshold", "301ms"),
            ],
            false,
        );
        check(
            &md3,
            &[
                ("signal", "latency"),
                ("service", "orders"),
                ("thresholds", "300ms"),
            ],
            false,
        );
        check(&[], &[("a", "")], false);
        // A key sent twice counts with its last value, as in prost's map.
        check(&[("a", "1"), ("a", "2")], &[("a", "2")], true);
        check(&[("a", "1"), ("a", "2")], &[("a", "1")], false);
        // Lengths, not separators: no pair can be made to look like another.
        check(
            &[("a", "b\0c"), ("d", "")],
            &[("a", "b"), ("c\0d", "")],
            false,
        );
        check(
            &[("ключ", "значение\0"), ("", "")],
            &[("", ""), ("ключ", "значение\0")],
            true,
        );
        // Who asked is part of the key, and cannot be confused with the metadata.
        let m = md(&md3);
        assert_ne!(Key::new("ns", "so", &m), Key::new("ns", "so2", &m));
        assert_ne!(Key::new("ns", "so", &m), Key::new("ns2", "so", &m));
        assert_ne!(Key::new("ab", "c", &m), Key::new("a", "bc", &m));
    }

    #[test]
    fn key_parts_come_back_sorted() {
        let k = Key::new("shop", "orders", &md(&[("b", "2"), ("a", "1"), ("c", "")]));
        assert_eq!((k.namespace(), k.name()), ("shop", "orders"));
        assert_eq!(k.pairs(), [("a", "1"), ("b", "2"), ("c", "")]);
    }
}
