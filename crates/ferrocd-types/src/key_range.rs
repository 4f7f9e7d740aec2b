//! etcd's `key` / `range_end` convention, interpreted in one place.

/// The set of keys a request names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Vec<u8>),
    /// Every key `k` with `start <= k` and, when `end` is `Some`, `k < end`
    /// (`range_end == "\0"` means no upper bound).
    Range { start: Vec<u8>, end: Option<Vec<u8>> },
}

impl KeyRange {
    /// Interprets a request's `key` and `range_end` as etcd does:
    /// empty `range_end` → the single `key`; `"\0"` → every key `>= key`; otherwise
    /// `[key, range_end)`, which is empty when `key >= range_end`.
    pub fn from_request(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => Self::Single(key.to_vec()),
            [0] => Self::Range { start: key.to_vec(), end: None },
            end => Self::Range { start: key.to_vec(), end: Some(end.to_vec()) },
        }
    }

    /// Every key that starts with `prefix` (an empty prefix: every key).
    pub fn prefix(prefix: &[u8]) -> Self {
        Self::Range { start: prefix.to_vec(), end: prefix_end(prefix) }
    }

    /// Whether `key` belongs to the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            Self::Single(k) => k == key,
            Self::Range { start, end } => key >= start.as_slice() && end.as_ref().is_none_or(|e| key < e.as_slice()),
        }
    }

    /// Whether the range can hold no key at all.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Single(_) => false,
            Self::Range { start, end } => end.as_ref().is_some_and(|e| e <= start),
        }
    }

    /// The first key of the range.
    pub fn start(&self) -> &[u8] {
        match self {
            Self::Single(k) => k,
            Self::Range { start, .. } => start,
        }
    }

    /// The exclusive upper bound as bytes: `None` for no bound. A single key `k` has the bound
    /// `k + "\0"`.
    pub fn end_exclusive(&self) -> Option<Vec<u8>> {
        match self {
            Self::Single(k) => {
                let mut end = k.clone();
                end.push(0);
                Some(end)
            }
            Self::Range { end, .. } => end.clone(),
        }
    }

    /// Whether two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let (a_start, a_end) = (self.start(), self.end_exclusive());
        let (b_start, b_end) = (other.start(), other.end_exclusive());
        let a_before_b_ends = b_end.as_ref().is_none_or(|e| a_start < e.as_slice());
        let b_before_a_ends = a_end.as_ref().is_none_or(|e| b_start < e.as_slice());
        a_before_b_ends && b_before_a_ends
    }
}

/// The smallest key greater than every key with `prefix`, as etcd computes it: the last byte
/// below `0xff` incremented and the rest dropped. `None` when no such key exists (the prefix is
/// empty or all `0xff`), meaning "no upper bound".
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let i = prefix.iter().rposition(|&b| b < 0xff)?;
    let mut end = prefix[..=i].to_vec();
    end[i] += 1;
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn etcd_conventions() {
        assert_eq!(KeyRange::from_request(b"a", b""), KeyRange::Single(b"a".to_vec()));
        assert_eq!(KeyRange::from_request(b"a", b"\0"), KeyRange::Range { start: b"a".to_vec(), end: None });
        let all = KeyRange::from_request(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"zzz") && all.contains(b"\xff\xff"));
        assert!(KeyRange::from_request(b"b", b"a").is_empty());
        assert!(KeyRange::from_request(b"b", b"b").is_empty());
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"foo"), Some(b"fop".to_vec()));
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0x61), Just(0xfe), Just(0xff)], 0..4)
    }

    fn range() -> impl Strategy<Value = KeyRange> {
        (key(), key()).prop_map(|(k, e)| KeyRange::from_request(&k, &e))
    }

    proptest! {
        #[test]
        fn prefix_range_is_exactly_the_keys_with_the_prefix(p in key(), k in key()) {
            prop_assert_eq!(KeyRange::prefix(&p).contains(&k), k.starts_with(&p));
        }

        #[test]
        fn overlaps_iff_a_common_key_exists(a in range(), b in range()) {
            // Candidate witnesses: every boundary and its successors.
            let mut candidates = vec![a.start().to_vec(), b.start().to_vec()];
            for k in candidates.clone() {
                let mut next = k.clone();
                next.push(0);
                candidates.push(next);
            }
            let witness = candidates.iter().any(|k| a.contains(k) && b.contains(k));
            prop_assert_eq!(a.overlaps(&b), witness);
            prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
        }

        #[test]
        fn end_exclusive_bounds_membership(r in range(), k in key()) {
            let inside = k.as_slice() >= r.start() && r.end_exclusive().is_none_or(|e| k < e);
            prop_assert_eq!(r.contains(&k), inside);
        }
    }
}
