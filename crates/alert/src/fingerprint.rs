//! Stable alert fingerprints.

use std::collections::BTreeMap;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(FNV_PRIME))
}

/// The fingerprint of an alert: 64-bit FNV-1a over its sorted label set (which holds
/// `alertname` = rule, `model`, `version`, `severity` and the rule's labels), written as 16
/// lowercase hex digits.
///
/// The hash is defined here byte for byte, so it is the same in every run, on every platform and
/// with every Rust version: each label contributes its name, a 0xFE byte, its value and a 0xFF
/// byte, in name order (0xFE and 0xFF never occur in UTF-8, so no two label sets collide by
/// concatenation).
///
/// ```
/// use std::collections::BTreeMap;
/// let labels = BTreeMap::from([("alertname".to_owned(), "slow".to_owned())]);
/// assert_eq!(modelwatch_alert::fingerprint(&labels).len(), 16);
/// ```
pub fn fingerprint(labels: &BTreeMap<String, String>) -> String {
    let h = labels.iter().fold(FNV_OFFSET, |h, (k, v)| {
        let h = fnv1a(h, k.as_bytes());
        let h = fnv1a(h, &[0xfe]);
        let h = fnv1a(h, v.as_bytes());
        fnv1a(h, &[0xff])
    });
    format!("{h:016x}")
}

/// A 64-bit FNV-1a hash of `text` as 16 hex digits (group keys' idempotency keys).
pub(crate) fn hash_hex(text: &str) -> String {
    format!("{:016x}", fnv1a(FNV_OFFSET, text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(hash_hex(""), "cbf29ce484222325");
        assert_eq!(hash_hex("a"), "af63dc4c8601ec8c");
        assert_eq!(hash_hex("foobar"), "85944171f73967e8");
    }

    #[test]
    fn fingerprints_depend_on_labels_not_on_insertion_order() {
        let a: BTreeMap<String, String> = [("model", "m"), ("alertname", "r"), ("version", "v1")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let mut b = BTreeMap::new();
        for (k, v) in a.iter().rev() {
            b.insert(k.clone(), v.clone());
        }
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.insert("version".into(), "v2".into());
        assert_ne!(fingerprint(&a), fingerprint(&b));
        // No collision by moving characters between a name and its value.
        let c = BTreeMap::from([("ab".to_owned(), "c".to_owned())]);
        let d = BTreeMap::from([("a".to_owned(), "bc".to_owned())]);
        assert_ne!(fingerprint(&c), fingerprint(&d));
    }
}
