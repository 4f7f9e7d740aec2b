//! etcdctl's printers: `simple`, `json`, `fields`, `protobuf` and `table`, each writing an
//! answer exactly as etcdctl writes it. A format that etcdctl does not offer for an answer is
//! refused with etcdctl's error and exit code.

use std::fmt::Write as _;
use std::io::Write as _;

use ferrocd_proto::authpb::permission::Type as PermType;
use ferrocd_proto::etcdserverpb::{self as pb, response_op::Response};
use ferrocd_proto::mvccpb::{Event, KeyValue, event::EventType};
use prost::Message;

use crate::{CtlError, go, json};

/// An output format (`--write-out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Simple,
    Json,
    Fields,
    Protobuf,
    Table,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format, CtlError> {
        Ok(match s {
            "simple" => Format::Simple,
            "json" => Format::Json,
            "fields" => Format::Fields,
            "protobuf" => Format::Protobuf,
            "table" => Format::Table,
            _ => return Err(CtlError::bad_feature("unsupported output format")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Fields => "fields",
            Format::Protobuf => "protobuf",
            Format::Table => "table",
        }
    }
}

/// Writes answers in one format.
#[derive(Debug, Clone)]
pub struct Printer {
    pub format: Format,
    pub hex: bool,
    pub value_only: bool,
}

type Out = Result<(), CtlError>;

fn emit(s: impl AsRef<[u8]>) -> Out {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(s.as_ref()).and_then(|()| stdout.flush()).map_err(|e| CtlError::io(&e))
}

fn json_line(s: String) -> Out {
    emit(s + "\n")
}

impl Printer {
    fn unsupported(&self) -> CtlError {
        CtlError::bad_feature(format!("{} not supported as output format", self.format.name()))
    }

    /// The formats that print answers as the RPC returned them (`json`, `protobuf`).
    fn rpc(&self, json: impl FnOnce() -> String, message: &impl Message) -> Option<Out> {
        match self.format {
            Format::Json => Some(json_line(json())),
            Format::Protobuf => Some(emit(message.encode_to_vec())),
            _ => None,
        }
    }

    /// `message` in the chosen format: `json` and `protobuf` as the RPC returned it, `simple`
    /// and `fields` as the given functions write it; other formats refused.
    fn answer(
        &self,
        message: &impl Message,
        json: impl FnOnce() -> String,
        simple: impl FnOnce(&mut String),
        fields: impl FnOnce(&mut String),
    ) -> Out {
        if let Some(done) = self.rpc(json, message) {
            return done;
        }
        let mut out = String::new();
        match self.format {
            Format::Simple => simple(&mut out),
            Format::Fields => fields(&mut out),
            _ => return Err(self.unsupported()),
        }
        emit(out)
    }

    /// clientv3's own lease answers: `json` prints them; `protobuf` prints what Go finds to
    /// marshal in them, the embedded response header (revoke's has none: refused).
    fn lease(&self, json: impl FnOnce() -> String, header: Option<&pb::ResponseHeader>, go_type: &str) -> Option<Out> {
        match self.format {
            Format::Json => Some(json_line(json())),
            Format::Protobuf if go_type == "LeaseRevokeResponse" => {
                Some(Err(CtlError::bad_feature(format!("marshal unsupported for type clientv3.{go_type}"))))
            }
            Format::Protobuf => Some(emit(header.map(Message::encode_to_vec).unwrap_or_default())),
            _ => None,
        }
    }

    fn simple_kv(&self, out: &mut String, kv: &KeyValue) {
        let (k, v) = if self.hex {
            (go::hex(&kv.key), go::hex(&kv.value))
        } else {
            (String::from_utf8_lossy(&kv.key).into_owned(), String::from_utf8_lossy(&kv.value).into_owned())
        };
        if !self.value_only {
            out.push_str(&k);
            out.push('\n');
        }
        out.push_str(&v);
        out.push('\n');
    }

    pub fn get(&self, r: &pb::RangeResponse) -> Out {
        self.answer(r, || json::range(r), |out| self.simple_get(out, r), |out| fields_get(out, r))
    }

    fn simple_get(&self, out: &mut String, r: &pb::RangeResponse) {
        for kv in &r.kvs {
            self.simple_kv(out, kv);
        }
    }

    pub fn put(&self, r: &pb::PutResponse) -> Out {
        self.answer(r, || json::put(r), |out| self.simple_put(out, r), |out| fields_put(out, r))
    }

    fn simple_put(&self, out: &mut String, r: &pb::PutResponse) {
        out.push_str("OK\n");
        if let Some(kv) = &r.prev_kv {
            self.simple_kv(out, kv);
        }
    }

    pub fn delete(&self, r: &pb::DeleteRangeResponse) -> Out {
        self.answer(r, || json::delete(r), |out| self.simple_delete(out, r), |out| fields_delete(out, r))
    }

    fn simple_delete(&self, out: &mut String, r: &pb::DeleteRangeResponse) {
        let _ = writeln!(out, "{}", r.deleted);
        for kv in &r.prev_kvs {
            self.simple_kv(out, kv);
        }
    }

    pub fn txn(&self, r: &pb::TxnResponse) -> Out {
        self.answer(r, || json::txn(r), |out| self.simple_txn(out, r), |out| fields_txn(out, r))
    }

    fn simple_txn(&self, out: &mut String, r: &pb::TxnResponse) {
        out.push_str(if r.succeeded { "SUCCESS\n" } else { "FAILURE\n" });
        for op in &r.responses {
            out.push('\n');
            match &op.response {
                Some(Response::ResponseRange(r)) => self.simple_get(out, r),
                Some(Response::ResponsePut(r)) => self.simple_put(out, r),
                Some(Response::ResponseDeleteRange(r)) => self.simple_delete(out, r),
                other => {
                    let _ = writeln!(out, "unexpected response {other:?}");
                }
            }
        }
    }

    pub fn watch(&self, r: &pb::WatchResponse) -> Out {
        if let Some(done) = self.rpc(|| json::watch(r), r) {
            return done;
        }
        let mut out = String::new();
        match self.format {
            Format::Simple => {
                for e in &r.events {
                    out.push_str(event_type(e));
                    out.push('\n');
                    if let Some(prev) = &e.prev_kv {
                        self.simple_kv(&mut out, prev);
                    }
                    self.simple_kv(&mut out, e.kv.as_ref().unwrap_or(&KeyValue::default()));
                }
            }
            Format::Fields => {
                fields_header(&mut out, r.header.as_ref());
                for e in &r.events {
                    let _ = writeln!(out, "\"Type\" : {}", event_type(e));
                    if let Some(prev) = &e.prev_kv {
                        fields_kv(&mut out, "Prev", prev);
                    }
                    fields_kv(&mut out, "", e.kv.as_ref().unwrap_or(&KeyValue::default()));
                }
            }
            _ => return Err(self.unsupported()),
        }
        emit(out)
    }

    pub fn grant(&self, r: &pb::LeaseGrantResponse) -> Out {
        if let Some(done) = self.lease(|| json::grant(r), r.header.as_ref(), "LeaseGrantResponse") {
            return done;
        }
        match self.format {
            Format::Simple => emit(format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl)),
            Format::Fields => self.id_ttl_fields(r.header.as_ref(), r.id, r.ttl),
            _ => Err(self.unsupported()),
        }
    }

    pub fn revoke(&self, id: i64, r: &pb::LeaseRevokeResponse) -> Out {
        if let Some(done) = self.lease(|| json::revoke(r), r.header.as_ref(), "LeaseRevokeResponse") {
            return done;
        }
        match self.format {
            Format::Simple => emit(format!("lease {id:016x} revoked\n")),
            Format::Fields => self.header_fields(r.header.as_ref()),
            _ => Err(self.unsupported()),
        }
    }

    pub fn keep_alive(&self, r: &pb::LeaseKeepAliveResponse) -> Out {
        if let Some(done) = self.lease(|| json::keep_alive(r), r.header.as_ref(), "LeaseKeepAliveResponse") {
            return done;
        }
        match self.format {
            Format::Simple => emit(format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl)),
            Format::Fields => self.id_ttl_fields(r.header.as_ref(), r.id, r.ttl),
            _ => Err(self.unsupported()),
        }
    }

    pub fn time_to_live(&self, r: &pb::LeaseTimeToLiveResponse, keys: bool) -> Out {
        if let Some(done) = self.lease(|| json::time_to_live(r), r.header.as_ref(), "LeaseTimeToLiveResponse") {
            return done;
        }
        match self.format {
            Format::Simple => {
                if r.granted_ttl == 0 && r.ttl == -1 {
                    return emit(format!("lease {:016x} already expired\n", r.id));
                }
                let mut out =
                    format!("lease {:016x} granted with TTL({}s), remaining({}s)", r.id, r.granted_ttl, r.ttl);
                if keys {
                    let ks: Vec<_> = r.keys.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
                    let _ = write!(out, ", attached keys([{}])", ks.join(" "));
                }
                emit(out + "\n")
            }
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                let _ = writeln!(out, "\"ID\" : {}\n\"TTL\" : {}\n\"GrantedTTL\" : {}", r.id, r.ttl, r.granted_ttl);
                for k in &r.keys {
                    let _ = writeln!(out, "\"Key\" : {}", go::quote(k));
                }
                emit(out)
            }
            _ => Err(self.unsupported()),
        }
    }

    pub fn leases(&self, r: &pb::LeaseLeasesResponse) -> Out {
        if let Some(done) = self.lease(|| json::leases(r), r.header.as_ref(), "LeaseLeasesResponse") {
            return done;
        }
        let mut out = String::new();
        match self.format {
            Format::Simple => {
                let _ = writeln!(out, "found {} leases", r.leases.len());
                for l in &r.leases {
                    let _ = writeln!(out, "{:016x}", l.id);
                }
            }
            Format::Fields => {
                fields_header(&mut out, r.header.as_ref());
                for l in &r.leases {
                    let _ = writeln!(out, "\"ID\" : {}", l.id);
                }
            }
            _ => return Err(self.unsupported()),
        }
        emit(out)
    }

    pub fn member_add(&self, r: &pb::MemberAddResponse) -> Out {
        if let Some(done) = self.rpc(|| json::member_add(r), r) {
            return done;
        }
        match self.format {
            Format::Simple => emit(format!(
                "Member {:16x} added to cluster {:16x}\n",
                r.member.as_ref().map_or(0, |m| m.id),
                r.header.as_ref().map_or(0, |h| h.cluster_id)
            )),
            _ => Err(self.unsupported()),
        }
    }

    /// Member remove, update and promote (`verb`: removed from, updated in, promoted in).
    pub fn member_changed(
        &self,
        verb: &str,
        id: u64,
        header: Option<&pb::ResponseHeader>,
        members: &[pb::Member],
        message: &impl Message,
    ) -> Out {
        if let Some(done) = self.rpc(|| json::members(header, members), message) {
            return done;
        }
        match self.format {
            Format::Simple => {
                emit(format!("Member {id:16x} {verb} cluster {:16x}\n", header.map_or(0, |h| h.cluster_id)))
            }
            _ => Err(self.unsupported()),
        }
    }

    pub fn member_list(&self, r: &pb::MemberListResponse) -> Out {
        if let Some(done) = self.rpc(|| json::members(r.header.as_ref(), &r.members), r) {
            return done;
        }
        let (hdr, rows) = member_table(r);
        match self.format {
            Format::Simple => emit(simple_rows(&rows)),
            Format::Table => emit(table(&hdr, &rows)),
            Format::Fields => {
                let mut out = String::new();
                fields_header(&mut out, r.header.as_ref());
                for m in &r.members {
                    let _ = writeln!(out, "\"ID\" : {}\n\"Name\" : {}", m.id, go::quote(m.name.as_bytes()));
                    for u in &m.peer_ur_ls {
                        let _ = writeln!(out, "\"PeerURL\" : {}", go::quote(u.as_bytes()));
                    }
                    for u in &m.client_ur_ls {
                        let _ = writeln!(out, "\"ClientURL\" : {}", go::quote(u.as_bytes()));
                    }
                    let _ = writeln!(out, "\"IsLearner\" : {}\n", m.is_learner);
                }
                emit(out)
            }
            Format::Json | Format::Protobuf => unreachable!("printed above"),
        }
    }

    pub fn endpoint_health(&self, list: &[Health]) -> Out {
        let hdr = ["endpoint", "health", "took", "error"];
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|h| vec![h.endpoint.clone(), h.health.to_string(), h.took.clone(), h.error.clone()])
            .collect();
        match self.format {
            Format::Simple => {
                let mut err = String::new();
                for h in list {
                    if h.error.is_empty() {
                        let _ = writeln!(
                            err,
                            "{} is healthy: successfully committed proposal: took = {}",
                            h.endpoint, h.took
                        );
                    } else {
                        let _ = writeln!(err, "{} is unhealthy: failed to commit proposal: {}", h.endpoint, h.error);
                    }
                }
                eprint!("{err}");
                Ok(())
            }
            Format::Json => json_line(json::array(list, |h| {
                json::Obj::new()
                    .raw("endpoint", go::json_string(h.endpoint.as_bytes()))
                    .raw("health", h.health.to_string())
                    .raw("took", go::json_string(h.took.as_bytes()))
                    .str("error", &h.error)
                    .done()
            })),
            Format::Fields => {
                let mut out = String::new();
                for h in list {
                    let _ = writeln!(
                        out,
                        "\"Endpoint\" : {}\n\"Health\" : {}\n\"Took\" : {}\n\"Error\" : {}\n",
                        go::quote(h.endpoint.as_bytes()),
                        h.health,
                        h.took,
                        h.error
                    );
                }
                emit(out)
            }
            Format::Table => emit(table(&hdr, &rows)),
            Format::Protobuf => Err(self.unsupported()),
        }
    }

    pub fn endpoint_status(&self, list: &[(String, pb::StatusResponse)]) -> Out {
        let hdr = [
            "endpoint",
            "ID",
            "version",
            "db size",
            "is leader",
            "is learner",
            "raft term",
            "raft index",
            "raft applied index",
            "errors",
        ];
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|(ep, s)| {
                let member = s.header.as_ref().map_or(0, |h| h.member_id);
                vec![
                    ep.clone(),
                    format!("{member:x}"),
                    s.version.clone(),
                    go::human_bytes(s.db_size.max(0) as u64),
                    (s.leader == member).to_string(),
                    s.is_learner.to_string(),
                    s.raft_term.to_string(),
                    s.raft_index.to_string(),
                    s.raft_applied_index.to_string(),
                    s.errors.join(", "),
                ]
            })
            .collect();
        match self.format {
            Format::Simple => emit(simple_rows(&rows)),
            Format::Table => emit(table(&hdr, &rows)),
            Format::Json => json_line(json::array(list, |(ep, s)| {
                json::Obj::new().raw("Endpoint", go::json_string(ep.as_bytes())).raw("Status", json::status(s)).done()
            })),
            Format::Fields => {
                let mut out = String::new();
                for (ep, s) in list {
                    fields_header(&mut out, s.header.as_ref());
                    let _ = writeln!(
                        out,
                        "\"Version\" : {}\n\"DBSize\" : {}\n\"Leader\" : {}\n\"IsLearner\" : {}\n\"RaftIndex\" : {}\n\"RaftTerm\" : {}\n\"RaftAppliedIndex\" : {}\n\"Errors\" : [{}]\n\"Endpoint\" : {}\n",
                        go::quote(s.version.as_bytes()),
                        s.db_size,
                        s.leader,
                        s.is_learner,
                        s.raft_index,
                        s.raft_term,
                        s.raft_applied_index,
                        s.errors.join(" "),
                        go::quote(ep.as_bytes())
                    );
                }
                emit(out)
            }
            Format::Protobuf => Err(self.unsupported()),
        }
    }

    pub fn endpoint_hash_kv(&self, list: &[(String, pb::HashKvResponse)]) -> Out {
        let hdr = ["endpoint", "hash"];
        let rows: Vec<Vec<String>> = list.iter().map(|(ep, h)| vec![ep.clone(), h.hash.to_string()]).collect();
        match self.format {
            Format::Simple => emit(simple_rows(&rows)),
            Format::Table => emit(table(&hdr, &rows)),
            Format::Json => json_line(json::array(list, |(ep, h)| {
                json::Obj::new().raw("Endpoint", go::json_string(ep.as_bytes())).raw("HashKV", json::hash_kv(h)).done()
            })),
            Format::Fields => {
                let mut out = String::new();
                for (ep, h) in list {
                    fields_header(&mut out, h.header.as_ref());
                    let _ = writeln!(out, "\"Endpoint\" : {}\n\"Hash\" : {}\n", go::quote(ep.as_bytes()), h.hash);
                }
                emit(out)
            }
            Format::Protobuf => Err(self.unsupported()),
        }
    }

    pub fn alarm(&self, r: &pb::AlarmResponse) -> Out {
        if let Some(done) = self.rpc(|| json::alarm(r), r) {
            return done;
        }
        let mut out = String::new();
        match self.format {
            Format::Simple => {
                for a in &r.alarms {
                    let _ = writeln!(out, "memberID:{} alarm:{} ", a.member_id, alarm_name(a.alarm));
                }
            }
            Format::Fields => {
                fields_header(&mut out, r.header.as_ref());
                for a in &r.alarms {
                    let _ = writeln!(out, "\"MemberID\" : {}\n\"AlarmType\" : {}\n", a.member_id, alarm_name(a.alarm));
                }
            }
            _ => return Err(self.unsupported()),
        }
        emit(out)
    }

    pub fn move_leader(&self, from: u64, to: u64, r: &pb::MoveLeaderResponse) -> Out {
        if let Some(done) = self.rpc(|| json::header_only(r.header.as_ref()), r) {
            return done;
        }
        match self.format {
            Format::Simple => emit(format!("Leadership transferred from {from:x} to {to:x}\n")),
            _ => Err(self.unsupported()),
        }
    }

    /// An auth change whose simple output is one line and whose other outputs are the header.
    pub fn auth_change(&self, simple: String, header: Option<&pb::ResponseHeader>, message: &impl Message) -> Out {
        if let Some(done) = self.rpc(|| json::header_only(header), message) {
            return done;
        }
        match self.format {
            Format::Simple => emit(simple + "\n"),
            Format::Fields => self.header_fields(header),
            _ => Err(self.unsupported()),
        }
    }

    /// A lease's grant or renewal in `fields`: the header, its ID and TTL.
    fn id_ttl_fields(&self, header: Option<&pb::ResponseHeader>, id: i64, ttl: i64) -> Out {
        let mut out = String::new();
        fields_header(&mut out, header);
        let _ = writeln!(out, "\"ID\" : {id}\n\"TTL\" : {ttl}");
        emit(out)
    }

    fn header_fields(&self, header: Option<&pb::ResponseHeader>) -> Out {
        let mut out = String::new();
        fields_header(&mut out, header);
        emit(out)
    }

    pub fn role_get(&self, role: &str, r: &pb::AuthRoleGetResponse) -> Out {
        if let Some(done) = self.rpc(|| json::role_get(r), r) {
            return done;
        }
        let mut out = String::new();
        match self.format {
            Format::Simple => {
                let _ = writeln!(out, "Role {role}\nKV Read:");
                for read in [true, false] {
                    if !read {
                        out.push_str("KV Write:\n");
                    }
                    for p in &r.perm {
                        let t = PermType::try_from(p.perm_type).unwrap_or(PermType::Read);
                        let wanted = t == PermType::Readwrite || (t == PermType::Read) == read;
                        if wanted {
                            permission_line(&mut out, &p.key, &p.range_end);
                        }
                    }
                }
            }
            Format::Fields => {
                fields_header(&mut out, r.header.as_ref());
                for p in &r.perm {
                    let t = PermType::try_from(p.perm_type).map_or("READ", |t| t.as_str_name());
                    let _ = writeln!(
                        out,
                        "\"PermType\" :  {t}\n\"Key\" : {}\n\"RangeEnd\" : {}",
                        go::quote(&p.key),
                        go::quote(&p.range_end)
                    );
                }
            }
            _ => return Err(self.unsupported()),
        }
        emit(out)
    }

    /// Role list and user list: one name a line.
    pub fn names(
        &self,
        header: Option<&pb::ResponseHeader>,
        key: &str,
        names: &[String],
        message: &impl Message,
    ) -> Out {
        if let Some(done) = self.rpc(|| json::names(header, key, names), message) {
            return done;
        }
        let mut out = String::new();
        match self.format {
            Format::Simple => {
                for n in names {
                    let _ = writeln!(out, "{n}");
                }
            }
            Format::Fields if key == "roles" => {
                fields_header(&mut out, header);
                out.push_str("\"Roles\" :");
                for n in names {
                    let _ = write!(out, " {}", go::quote(n.as_bytes()));
                }
                out.push('\n');
            }
            _ => return Err(self.unsupported()),
        }
        emit(out)
    }

    pub fn user_get(&self, user: &str, r: &pb::AuthUserGetResponse) -> Out {
        if let Some(done) = self.rpc(|| json::names(r.header.as_ref(), "roles", &r.roles), r) {
            return done;
        }
        match self.format {
            Format::Simple => {
                let mut out = format!("User: {user}\nRoles:");
                for role in &r.roles {
                    let _ = write!(out, " {role}");
                }
                emit(out + "\n")
            }
            _ => Err(self.unsupported()),
        }
    }
}

/// One endpoint's health, as `endpoint health` reports it.
#[derive(Debug, Clone)]
pub struct Health {
    pub endpoint: String,
    pub health: bool,
    pub took: String,
    pub error: String,
}

fn event_type(e: &Event) -> &'static str {
    EventType::try_from(e.r#type).map_or("PUT", |t| t.as_str_name())
}

fn alarm_name(alarm: i32) -> &'static str {
    pb::AlarmType::try_from(alarm).map_or("NONE", |a| a.as_str_name())
}

fn permission_line(out: &mut String, key: &[u8], end: &[u8]) {
    let key_s = String::from_utf8_lossy(key);
    if end.is_empty() {
        let _ = writeln!(out, "\t{key_s}");
        return;
    }
    let end_s = String::from_utf8_lossy(end);
    if end == b"\0" {
        let _ = write!(out, "\t[{key_s}, <open ended>");
    } else {
        let _ = write!(out, "\t[{key_s}, {end_s})");
    }
    if ferrocd_client::kv::prefix_range_end(key) == end {
        let _ = write!(out, " (prefix {key_s})");
    }
    out.push('\n');
}

fn fields_header(out: &mut String, h: Option<&pb::ResponseHeader>) {
    let h = h.cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "\"ClusterID\" : {}\n\"MemberID\" : {}\n\"Revision\" : {}\n\"RaftTerm\" : {}",
        h.cluster_id, h.member_id, h.revision, h.raft_term
    );
}

fn fields_kv(out: &mut String, pfx: &str, kv: &KeyValue) {
    let _ = writeln!(
        out,
        "\"{pfx}Key\" : {}\n\"{pfx}CreateRevision\" : {}\n\"{pfx}ModRevision\" : {}\n\"{pfx}Version\" : {}\n\"{pfx}Value\" : {}\n\"{pfx}Lease\" : {}",
        go::quote(&kv.key),
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        go::quote(&kv.value),
        kv.lease
    );
}

fn fields_get(out: &mut String, r: &pb::RangeResponse) {
    fields_header(out, r.header.as_ref());
    for kv in &r.kvs {
        fields_kv(out, "", kv);
    }
    let _ = writeln!(out, "\"More\" : {}\n\"Count\" : {}", r.more, r.count);
}

fn fields_put(out: &mut String, r: &pb::PutResponse) {
    fields_header(out, r.header.as_ref());
    if let Some(kv) = &r.prev_kv {
        fields_kv(out, "Prev", kv);
    }
}

fn fields_delete(out: &mut String, r: &pb::DeleteRangeResponse) {
    fields_header(out, r.header.as_ref());
    let _ = writeln!(out, "\"Deleted\" : {}", r.deleted);
    for kv in &r.prev_kvs {
        fields_kv(out, "Prev", kv);
    }
}

fn fields_txn(out: &mut String, r: &pb::TxnResponse) {
    fields_header(out, r.header.as_ref());
    let _ = writeln!(out, "\"Succeeded\" : {}", r.succeeded);
    for op in &r.responses {
        match &op.response {
            Some(Response::ResponseRange(r)) => fields_get(out, r),
            Some(Response::ResponsePut(r)) => fields_put(out, r),
            Some(Response::ResponseDeleteRange(r)) => fields_delete(out, r),
            other => {
                let _ = writeln!(out, "\"Unknown\" : {}", go::quote(format!("{other:?}").as_bytes()));
            }
        }
    }
}

fn member_table(r: &pb::MemberListResponse) -> ([&'static str; 6], Vec<Vec<String>>) {
    let hdr = ["ID", "Status", "Name", "Peer Addrs", "Client Addrs", "Is Learner"];
    let rows = r
        .members
        .iter()
        .map(|m| {
            vec![
                format!("{:x}", m.id),
                if m.name.is_empty() { "unstarted" } else { "started" }.to_string(),
                m.name.clone(),
                m.peer_ur_ls.join(","),
                m.client_ur_ls.join(","),
                m.is_learner.to_string(),
            ]
        })
        .collect();
    (hdr, rows)
}

fn simple_rows(rows: &[Vec<String>]) -> String {
    rows.iter().map(|r| r.join(", ") + "\n").collect()
}

/// A table as etcdctl's tablewriter draws it: upper-case centred headers, cells aligned right.
pub fn table(hdr: &[&str], rows: &[Vec<String>]) -> String {
    let hdr: Vec<String> = hdr.iter().map(|h| h.to_uppercase()).collect();
    let widths: Vec<usize> = (0..hdr.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([hdr[i].chars().count()]).max().unwrap_or(0))
        .collect();
    let line: String = widths.iter().map(|w| format!("+{}", "-".repeat(w + 2))).collect::<String>() + "+\n";
    let mut out = line.clone();
    for (h, w) in hdr.iter().zip(&widths) {
        let gap = w - h.chars().count();
        let left = gap / 2;
        let _ = write!(out, "| {}{h}{} ", " ".repeat(left), " ".repeat(gap - left));
    }
    out.push_str("|\n");
    out.push_str(&line);
    for row in rows {
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(out, "| {cell:>w$} ");
        }
        out.push_str("|\n");
    }
    out.push_str(&line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_as_tablewriter_draws_them() {
        let t = table(&["endpoint", "hash"], &[vec!["127.0.0.1:23791".into(), "2239915254".into()]]);
        assert_eq!(
            t,
            "+-----------------+------------+\n\
             |    ENDPOINT     |    HASH    |\n\
             +-----------------+------------+\n\
             | 127.0.0.1:23791 | 2239915254 |\n\
             +-----------------+------------+\n"
        );
    }
}
