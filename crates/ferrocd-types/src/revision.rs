//! etcd's revisions.

/// A point in the history of the keyspace.
///
/// `main` is the store revision a write request produced (one per request); `sub` orders the
/// changes inside that request. Revisions order by `(main, sub)`, and so do their encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    /// The length of [`Revision::to_bytes`].
    pub const ENCODED_LEN: usize = 16;

    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// Big-endian `main` then `sub`: byte order equals revision order for non-negative revisions.
    pub fn to_bytes(self) -> [u8; Self::ENCODED_LEN] {
        let mut out = [0u8; Self::ENCODED_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Decodes the first [`Self::ENCODED_LEN`] bytes of `bytes`; `None` when too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let main = i64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let sub = i64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
        Some(Self { main, sub })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encoding_round_trips_and_keeps_order(a in (0..i64::MAX, 0..i64::MAX), b in (0..i64::MAX, 0..i64::MAX)) {
            let (ra, rb) = (Revision::new(a.0, a.1), Revision::new(b.0, b.1));
            prop_assert_eq!(Revision::from_bytes(&ra.to_bytes()), Some(ra));
            prop_assert_eq!(ra.cmp(&rb), ra.to_bytes().cmp(&rb.to_bytes()));
        }
    }

    #[test]
    fn short_input_is_rejected() {
        assert_eq!(Revision::from_bytes(&[0; 15]), None);
    }
}
