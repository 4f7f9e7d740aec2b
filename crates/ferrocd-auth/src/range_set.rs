//! A set of keys as disjoint, merged ranges: what a user may read (or write), the union of the
//! key ranges of every permission of every role the user has.

use std::collections::BTreeMap;
use std::ops::Bound;

use ferrocd_types::KeyRange;

/// Keys as sorted, disjoint, non-touching half-open ranges `[start, end)`; `end` `None` is no
/// upper bound.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end, merged: no two ranges overlap or touch.
    ranges: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// `a < b` for exclusive ends, `None` being the largest.
fn end_lt(a: &Option<Vec<u8>>, b: &Option<Vec<u8>>) -> bool {
    match (a, b) {
        (_, None) => a.is_some(),
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a < b,
    }
}

impl RangeSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `range` (a permission's `key` / `range_end`, interpreted as etcd does).
    pub fn insert(&mut self, range: &KeyRange) {
        if range.is_empty() {
            return;
        }
        let mut start = range.start().to_vec();
        let mut end = range.end_exclusive();
        // A range starting before (or at) `start` and reaching it absorbs the new one's start.
        if let Some((s, e)) = self.ranges.range(..=start.clone()).next_back()
            && e.as_ref().is_none_or(|e| *e >= start)
        {
            start = s.clone();
            if end_lt(&end, e) {
                end = e.clone();
            }
        }
        // Ranges starting inside the new one (or where it ends) are absorbed.
        let absorbed: Vec<Vec<u8>> = self
            .ranges
            .range((Bound::Included(start.clone()), Bound::Unbounded))
            .take_while(|(s, _)| end.as_ref().is_none_or(|end| *s <= end))
            .map(|(s, _)| s.clone())
            .collect();
        for s in absorbed {
            if let Some(e) = self.ranges.remove(&s)
                && end_lt(&end, &e)
            {
                end = e;
            }
        }
        self.ranges.insert(start, end);
    }

    /// Whether every key of `range` is in the set (an empty range is covered).
    pub fn covers(&self, range: &KeyRange) -> bool {
        if range.is_empty() {
            return true;
        }
        let start = range.start();
        let end = range.end_exclusive();
        // Merged ranges never touch, so one range must hold all of it.
        self.ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(start)))
            .next_back()
            .is_some_and(|(_, e)| !end_lt(e, &end))
    }

    /// Whether the set holds no key.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn r(key: &str, end: &str) -> KeyRange {
        KeyRange::from_request(key.as_bytes(), end.as_bytes())
    }

    #[test]
    fn etcds_forms_of_permission() {
        let mut set = RangeSet::new();
        set.insert(&r("a", ""));
        assert!(set.covers(&r("a", "")));
        assert!(!set.covers(&r("a", "b")), "a single key does not cover its prefix");
        assert!(set.covers(&r("a", "a\0")));
        set.insert(&KeyRange::prefix(b"foo"));
        assert!(set.covers(&KeyRange::prefix(b"foo/bar")));
        assert!(!set.covers(&r("foo", "fop\0")));
        set.insert(&r("z", "\0"));
        assert!(set.covers(&r("zz", "\0")));
        assert!(!set.covers(&r("y", "\0")));
        // Touching ranges merge: [b, c) and [c, d) cover [b, d).
        set.insert(&r("b", "c"));
        set.insert(&r("c", "d"));
        assert!(set.covers(&r("b", "d")));
        // An empty request range is covered by anything.
        assert!(RangeSet::new().covers(&r("b", "a")));
        assert!(!RangeSet::new().covers(&r("b", "")));
    }

    /// Small keys over a small alphabet, so ranges meet, touch and nest often.
    fn key() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(prop::sample::select(vec![0u8, b'a', b'b', b'c']), 0..3)
    }

    fn range() -> impl Strategy<Value = KeyRange> {
        prop_oneof![
            key().prop_map(KeyRange::Single),
            (key(), key()).prop_map(|(start, end)| KeyRange::Range { start, end: Some(end) }),
            key().prop_map(|start| KeyRange::Range { start, end: None }),
        ]
    }

    /// Every key of up to four bytes over the alphabet (and 0xff): every bound the ranges above
    /// can have is among them.
    pub(crate) fn universe() -> Vec<Vec<u8>> {
        let alphabet = [0u8, b'a', b'b', b'c', 0xff];
        let mut out = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..4 {
            last = last
                .iter()
                .flat_map(|k| {
                    alphabet.iter().map(move |c| {
                        let mut k = k.clone();
                        k.push(*c);
                        k
                    })
                })
                .collect();
            out.extend(last.iter().cloned());
        }
        out
    }

    proptest! {
        #[test]
        fn covers_agrees_with_testing_every_key(perms in prop::collection::vec(range(), 0..6), asked in range()) {
            let mut set = RangeSet::new();
            for p in &perms {
                set.insert(p);
            }
            let model = universe()
                .into_iter()
                .filter(|k| asked.contains(k))
                .all(|k| perms.iter().any(|p| p.contains(&k)));
            // Every gap in a union of these ranges starts at a bound of one of them (at most
            // three bytes), a key the model tests: the model is exact here.
            prop_assert_eq!(set.covers(&asked), model, "{:?} {:?}", perms, asked);
            // The set is merged: no two ranges overlap or touch.
            let ranges: Vec<_> = set.ranges.iter().collect();
            for pair in ranges.windows(2) {
                let (_, end) = pair[0];
                let (next, _) = pair[1];
                prop_assert!(end.as_ref().is_some_and(|e| e < next), "{ranges:?}");
            }
        }
    }
}
