//! Lease ids for grants that leave the id to the server.

use crate::LeaseId;

const COUNTER_BITS: u32 = 8;
const TIME_BITS: u32 = 40;
const SUFFIX_BITS: u32 = TIME_BITS + COUNTER_BITS;

/// etcd's id generator (`pkg/idutil`): the member id's low 16 bits, then 40 bits of the
/// creation time in milliseconds, then an 8-bit counter, with the counter carrying into the
/// time bits. Ids of different members never collide, and a restarted member starts past the
/// ids it handed out before (unless its clock went back), which is why etcd uses it.
///
/// Deterministic for a given member id and start time, so tests can predict its ids. The
/// server masks the sign bit off, as etcd does, so every id is positive; see
/// [`crate::Lessor::fresh_id`] to skip ids already in use.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    prefix: u64,
    suffix: u64,
}

impl IdGenerator {
    /// A generator for member `member_id` started at `unix_millis`.
    pub fn new(member_id: u64, unix_millis: u64) -> Self {
        let prefix = (member_id & 0xffff) << SUFFIX_BITS;
        let suffix = (unix_millis & ((1 << TIME_BITS) - 1)) << COUNTER_BITS;
        Self { prefix, suffix }
    }

    /// The next id: positive, never 0.
    pub fn next_id(&mut self) -> LeaseId {
        loop {
            self.suffix = self.suffix.wrapping_add(1);
            let id = (self.prefix | (self.suffix & ((1 << SUFFIX_BITS) - 1))) & (i64::MAX as u64);
            if id != 0 {
                return id as LeaseId;
            }
        }
    }
}
