//! etcd's backend schema: its buckets, its keys and how their values are encoded (etcd 3.6,
//! which 3.4 and 3.5 read as well).

use ferrocd_types::Revision;
use serde::{Deserialize, Serialize};

/// etcd's buckets, in bbolt's (bytewise) order.
pub const BUCKETS: [&[u8]; 10] =
    [ALARM, AUTH, AUTH_ROLES, AUTH_USERS, CLUSTER, KEY, LEASE, MEMBERS, MEMBERS_REMOVED, META];

pub const ALARM: &[u8] = b"alarm";
pub const AUTH: &[u8] = b"auth";
pub const AUTH_ROLES: &[u8] = b"authRoles";
pub const AUTH_USERS: &[u8] = b"authUsers";
pub const CLUSTER: &[u8] = b"cluster";
pub const KEY: &[u8] = b"key";
pub const LEASE: &[u8] = b"lease";
pub const MEMBERS: &[u8] = b"members";
pub const MEMBERS_REMOVED: &[u8] = b"members_removed";
pub const META: &[u8] = b"meta";

/// `meta`: the Raft state as etcd keeps it beside the data, and the compaction revisions.
pub const CONF_STATE: &[u8] = b"confState";
pub const CONSISTENT_INDEX: &[u8] = b"consistent_index";
pub const FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
pub const SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
pub const STORAGE_VERSION: &[u8] = b"storageVersion";
pub const TERM: &[u8] = b"term";
/// `cluster`: the cluster's version.
pub const CLUSTER_VERSION: &[u8] = b"clusterVersion";

/// The storage version written (etcd 3.6's schema).
pub const STORAGE_VERSION_VALUE: &str = "3.6.0";

/// The length of etcd's revision key: main, `_`, sub.
pub const REVISION_KEY_LEN: usize = 17;

/// etcd's key of a revision: main (8 bytes big-endian), `_`, sub (8 bytes big-endian), and a
/// trailing `t` for a deletion.
pub fn revision_key(rev: Revision, tombstone: bool) -> Vec<u8> {
    let mut key = Vec::with_capacity(REVISION_KEY_LEN + 1);
    key.extend_from_slice(&rev.main.to_be_bytes());
    key.push(b'_');
    key.extend_from_slice(&rev.sub.to_be_bytes());
    if tombstone {
        key.push(b't');
    }
    key
}

/// The revision of etcd's revision key and whether it marks a deletion; `None` for bytes of
/// another shape.
pub fn parse_revision_key(key: &[u8]) -> Option<(Revision, bool)> {
    let tombstone = match key.len() {
        REVISION_KEY_LEN => false,
        18 if key[REVISION_KEY_LEN] == b't' => true,
        _ => return None,
    };
    if key[8] != b'_' {
        return None;
    }
    let main = i64::from_be_bytes(key[..8].try_into().ok()?);
    let sub = i64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((Revision::new(main, sub), tombstone))
}

/// etcd's `leasepb.Lease`, the value of a `lease` record.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRecord {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// A member as etcd records it in `members` (Go's JSON of its `membership.Member`): the key is
/// the ID in lower-case hex without padding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    #[serde(rename = "peerURLs")]
    pub peer_urls: Vec<String>,
    #[serde(rename = "isLearner", default, skip_serializing_if = "std::ops::Not::not")]
    pub is_learner: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(rename = "clientURLs", default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
}

impl Member {
    /// The member's key in `members`.
    pub fn key(&self) -> Vec<u8> {
        format!("{:x}", self.id).into_bytes()
    }
}

/// Raft's configuration as etcd records it in `meta` (Go's JSON of `raftpb.ConfState`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfState {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub learners: Vec<u64>,
    #[serde(default)]
    pub auto_leave: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_in_bbolts_order() {
        assert!(BUCKETS.windows(2).all(|w| w[0] < w[1]));
        let meta = [CONF_STATE, CONSISTENT_INDEX, FINISHED_COMPACT, SCHEDULED_COMPACT, STORAGE_VERSION, TERM];
        assert!(meta.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn members_and_conf_state_are_go_json() {
        let m = Member {
            id: 10,
            peer_urls: vec!["http://a:2380".into()],
            is_learner: false,
            name: "a".into(),
            client_urls: vec![],
        };
        assert_eq!(serde_json::to_string(&m).unwrap(), r#"{"id":10,"peerURLs":["http://a:2380"],"name":"a"}"#);
        assert_eq!(m.key(), b"a");
        let learner = Member { is_learner: true, name: String::new(), ..m };
        assert_eq!(
            serde_json::to_string(&learner).unwrap(),
            r#"{"id":10,"peerURLs":["http://a:2380"],"isLearner":true}"#
        );
        let cs = ConfState { voters: vec![1, 2], ..Default::default() };
        assert_eq!(serde_json::to_string(&cs).unwrap(), r#"{"voters":[1,2],"auto_leave":false}"#);
    }

    proptest! {
        #[test]
        fn revision_keys_round_trip_and_keep_order(a in (0..i64::MAX, 0..i64::MAX, any::<bool>()), b in (0..i64::MAX, 0..i64::MAX)) {
            let ra = Revision::new(a.0, a.1);
            prop_assert_eq!(parse_revision_key(&revision_key(ra, a.2)), Some((ra, a.2)));
            let rb = Revision::new(b.0, b.1);
            prop_assert_eq!(ra.cmp(&rb), revision_key(ra, false).cmp(&revision_key(rb, false)));
        }
    }

    #[test]
    fn other_shapes_are_not_revision_keys() {
        assert_eq!(parse_revision_key(&[0; 16]), None);
        assert_eq!(parse_revision_key(&[0; 17]), None, "no separator");
        let mut k = revision_key(Revision::new(1, 0), false);
        k.push(b'x');
        assert_eq!(parse_revision_key(&k), None);
    }
}
