//! etcd's answers as etcdctl's `-w json` prints them: Go's `encoding/json` over the gogoproto
//! structs — proto field names, fields at their zero value left out, bytes in base64, 64-bit
//! integers as plain numbers, fields in the structs' order.

use base64::Engine as _;
use ferrocd_proto::authpb;
use ferrocd_proto::etcdserverpb::{self as pb, response_op::Response};
use ferrocd_proto::mvccpb::{Event, KeyValue};

use crate::go;

/// An object being written, field by field.
#[derive(Default)]
pub struct Obj(Vec<String>);

impl Obj {
    pub fn new() -> Self {
        Obj::default()
    }

    /// A field always written (`value` already JSON).
    pub fn raw(mut self, key: &str, value: impl Into<String>) -> Self {
        self.0.push(format!("\"{key}\":{}", value.into()));
        self
    }

    /// A field written unless `value` is `None` (`omitempty`, or a nil pointer).
    pub fn opt(self, key: &str, value: Option<String>) -> Self {
        match value {
            Some(v) => self.raw(key, v),
            None => self,
        }
    }

    pub fn int(self, key: &str, v: i64) -> Self {
        self.opt(key, (v != 0).then(|| v.to_string()))
    }

    pub fn uint(self, key: &str, v: u64) -> Self {
        self.opt(key, (v != 0).then(|| v.to_string()))
    }

    pub fn flag(self, key: &str, v: bool) -> Self {
        self.opt(key, v.then(|| "true".into()))
    }

    pub fn str(self, key: &str, v: &str) -> Self {
        self.opt(key, (!v.is_empty()).then(|| go::json_string(v.as_bytes())))
    }

    pub fn bytes(self, key: &str, v: &[u8]) -> Self {
        self.opt(key, (!v.is_empty()).then(|| base64_string(v)))
    }

    /// A slice written unless empty (`omitempty`).
    pub fn list<T>(self, key: &str, items: &[T], each: impl Fn(&T) -> String) -> Self {
        self.opt(key, (!items.is_empty()).then(|| array(items, each)))
    }

    pub fn done(self) -> String {
        format!("{{{}}}", self.0.join(","))
    }
}

pub fn base64_string(v: &[u8]) -> String {
    format!("\"{}\"", base64::engine::general_purpose::STANDARD.encode(v))
}

/// A slice that is written even when empty: `[]` for an empty one, `null` for a nil one.
pub fn array<T>(items: &[T], each: impl Fn(&T) -> String) -> String {
    format!("[{}]", items.iter().map(each).collect::<Vec<_>>().join(","))
}

/// A nil-able Go slice: `null` when empty (what a nil slice marshals to).
pub fn nil_array<T>(items: &[T], each: impl Fn(&T) -> String) -> String {
    if items.is_empty() { "null".into() } else { array(items, each) }
}

fn header_fields(h: &pb::ResponseHeader) -> Obj {
    Obj::new()
        .uint("cluster_id", h.cluster_id)
        .uint("member_id", h.member_id)
        .int("revision", h.revision)
        .uint("raft_term", h.raft_term)
}

pub fn header(h: &pb::ResponseHeader) -> String {
    header_fields(h).done()
}

/// The header's fields promoted into the enclosing object (clientv3's lease responses embed a
/// `*ResponseHeader`).
pub fn embedded_header(h: Option<&pb::ResponseHeader>) -> Obj {
    h.map(header_fields).unwrap_or_default()
}

fn with_header(h: Option<&pb::ResponseHeader>) -> Obj {
    Obj::new().opt("header", h.map(header))
}

pub fn kv(kv: &KeyValue) -> String {
    Obj::new()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

pub fn range(r: &pb::RangeResponse) -> String {
    with_header(r.header.as_ref()).list("kvs", &r.kvs, kv).flag("more", r.more).int("count", r.count).done()
}

pub fn put(r: &pb::PutResponse) -> String {
    with_header(r.header.as_ref()).opt("prev_kv", r.prev_kv.as_ref().map(kv)).done()
}

pub fn delete(r: &pb::DeleteRangeResponse) -> String {
    with_header(r.header.as_ref()).int("deleted", r.deleted).list("prev_kvs", &r.prev_kvs, kv).done()
}

pub fn txn(r: &pb::TxnResponse) -> String {
    let op = |op: &pb::ResponseOp| {
        let inner = match &op.response {
            Some(Response::ResponseRange(r)) => Some(Obj::new().raw("ResponseRange", range(r)).done()),
            Some(Response::ResponsePut(r)) => Some(Obj::new().raw("ResponsePut", put(r)).done()),
            Some(Response::ResponseDeleteRange(r)) => Some(Obj::new().raw("ResponseDeleteRange", delete(r)).done()),
            Some(Response::ResponseTxn(r)) => Some(Obj::new().raw("ResponseTxn", txn(r)).done()),
            None => None,
        };
        Obj::new().opt("Response", inner).done()
    };
    with_header(r.header.as_ref()).flag("succeeded", r.succeeded).list("responses", &r.responses, op).done()
}

pub fn event(e: &Event) -> String {
    Obj::new()
        .int("type", i64::from(e.r#type))
        .opt("kv", e.kv.as_ref().map(kv))
        .opt("prev_kv", e.prev_kv.as_ref().map(kv))
        .done()
}

/// clientv3's `WatchResponse`: Go field names, nothing left out.
pub fn watch(r: &pb::WatchResponse) -> String {
    let header = r.header.as_ref().map(header).unwrap_or_else(|| "{}".into());
    Obj::new()
        .raw("Header", header)
        .raw("Events", nil_array(&r.events, event))
        .raw("CompactRevision", r.compact_revision.to_string())
        .raw("Canceled", r.canceled.to_string())
        .raw("Created", r.created.to_string())
        .done()
}

pub fn grant(r: &pb::LeaseGrantResponse) -> String {
    embedded_header(r.header.as_ref())
        .raw("ID", r.id.to_string())
        .raw("TTL", r.ttl.to_string())
        .raw("Error", go::json_string(r.error.as_bytes()))
        .done()
}

pub fn revoke(r: &pb::LeaseRevokeResponse) -> String {
    with_header(r.header.as_ref()).done()
}

pub fn keep_alive(r: &pb::LeaseKeepAliveResponse) -> String {
    embedded_header(r.header.as_ref()).raw("ID", r.id.to_string()).raw("TTL", r.ttl.to_string()).done()
}

pub fn time_to_live(r: &pb::LeaseTimeToLiveResponse) -> String {
    embedded_header(r.header.as_ref())
        .raw("id", r.id.to_string())
        .raw("ttl", r.ttl.to_string())
        .raw("granted-ttl", r.granted_ttl.to_string())
        .raw("keys", nil_array(&r.keys, |k| base64_string(k)))
        .done()
}

pub fn leases(r: &pb::LeaseLeasesResponse) -> String {
    let lease = |l: &pb::LeaseStatus| Obj::new().raw("id", l.id.to_string()).done();
    embedded_header(r.header.as_ref()).raw("leases", array(&r.leases, lease)).done()
}

pub fn member(m: &pb::Member) -> String {
    let url = |u: &String| go::json_string(u.as_bytes());
    Obj::new()
        .uint("ID", m.id)
        .str("name", &m.name)
        .list("peerURLs", &m.peer_ur_ls, url)
        .list("clientURLs", &m.client_ur_ls, url)
        .flag("isLearner", m.is_learner)
        .done()
}

pub fn members(header: Option<&pb::ResponseHeader>, members: &[pb::Member]) -> String {
    with_header(header).list("members", members, member).done()
}

pub fn member_add(r: &pb::MemberAddResponse) -> String {
    with_header(r.header.as_ref())
        .opt("member", r.member.as_ref().map(member))
        .list("members", &r.members, member)
        .done()
}

pub fn status(r: &pb::StatusResponse) -> String {
    with_header(r.header.as_ref())
        .str("version", &r.version)
        .int("dbSize", r.db_size)
        .uint("leader", r.leader)
        .uint("raftIndex", r.raft_index)
        .uint("raftTerm", r.raft_term)
        .uint("raftAppliedIndex", r.raft_applied_index)
        .list("errors", &r.errors, |e| go::json_string(e.as_bytes()))
        .int("dbSizeInUse", r.db_size_in_use)
        .flag("isLearner", r.is_learner)
        .done()
}

pub fn hash_kv(r: &pb::HashKvResponse) -> String {
    with_header(r.header.as_ref()).uint("hash", u64::from(r.hash)).int("compact_revision", r.compact_revision).done()
}

pub fn alarm(r: &pb::AlarmResponse) -> String {
    let member = |a: &pb::AlarmMember| Obj::new().uint("memberID", a.member_id).int("alarm", i64::from(a.alarm)).done();
    with_header(r.header.as_ref()).list("alarms", &r.alarms, member).done()
}

/// Any answer that is only a header (auth changes, move-leader, revoke).
pub fn header_only(h: Option<&pb::ResponseHeader>) -> String {
    with_header(h).done()
}

pub fn role_get(r: &pb::AuthRoleGetResponse) -> String {
    let perm = |p: &authpb::Permission| {
        Obj::new().int("permType", i64::from(p.perm_type)).bytes("key", &p.key).bytes("range_end", &p.range_end).done()
    };
    with_header(r.header.as_ref()).list("perm", &r.perm, perm).done()
}

pub fn names(h: Option<&pb::ResponseHeader>, key: &str, names: &[String]) -> String {
    with_header(h).list(key, names, |n| go::json_string(n.as_bytes())).done()
}
