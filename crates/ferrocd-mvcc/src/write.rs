//! The write path: Put, DeleteRange, Txn and Compact applied under the store's write lock.
//!
//! Each request is checked completely before it changes anything (etcd's order of checks), so
//! a failed request leaves the store as it was. A request that changes keys gets one new main
//! revision; each changed key gets the next sub revision.

use std::collections::HashMap;

use ferrocd_engine::{Engine, WriteBatch};
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse, compare, request_op, response_op,
};
use ferrocd_proto::mvccpb::{Event, KeyValue, event::EventType};
use ferrocd_types::{KeyRange, Revision};
use prost::Message;

use crate::compact::{self, CompactionJob};
use crate::index::Entry;
use crate::range::{self, Values};
use crate::{
    Error, KEY_BUCKET, Leases, META_BUCKET, META_CURRENT, META_SCHEDULED_COMPACT, Result, State, encode_i64,
    read_value, record_key, validate,
};

pub(crate) struct WriteCtx<'a, E: Engine> {
    state: &'a mut State,
    engine: &'a E,
    leases: &'a dyn Leases,
    max_ops: usize,
    /// The revision this request's changes get.
    main: i64,
    /// How many keys this request changed so far.
    sub: i64,
    batch: WriteBatch,
    /// Values written by this request, for its own later reads.
    pending: HashMap<Revision, Vec<u8>>,
    events: Vec<Event>,
}

fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader { revision, ..Default::default() })
}

impl<'a, E: Engine> WriteCtx<'a, E> {
    pub(crate) fn new(state: &'a mut State, engine: &'a E, leases: &'a dyn Leases, max_ops: usize) -> Self {
        let main = state.current + 1;
        Self {
            state,
            engine,
            leases,
            max_ops,
            main,
            sub: 0,
            batch: WriteBatch::new(),
            pending: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// The revision this request's reads see: the new one once it changed something.
    fn view_rev(&self) -> i64 {
        if self.sub > 0 { self.main } else { self.main - 1 }
    }

    pub(crate) fn put_request(&mut self, req: PutRequest) -> Result<PutResponse> {
        validate::check_put(&req)?;
        if req.lease != 0 && !self.leases.exists(req.lease) {
            return Err(Error::LeaseNotFound);
        }
        if (req.ignore_value || req.ignore_lease) && self.state.index.get(&req.key, i64::MAX).is_none() {
            return Err(Error::KeyNotFound);
        }
        let mut resp = self.put(&req)?;
        resp.header = header(self.view_rev());
        Ok(resp)
    }

    pub(crate) fn delete_request(&mut self, req: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        validate::check_delete(&req)?;
        let mut resp = self.delete(&req)?;
        resp.header = header(self.view_rev());
        Ok(resp)
    }

    pub(crate) fn txn_request(&mut self, req: TxnRequest) -> Result<TxnResponse> {
        validate::check_txn(&req, self.max_ops)?;
        let mut path = Vec::new();
        self.choose_path(&req, &mut path)?;
        self.check_path(&req, &mut path.iter().copied())?;
        let mut resp = self.txn(&req, &mut path.iter().copied())?;
        resp.header = header(self.view_rev());
        Ok(resp)
    }

    pub(crate) fn compact_request(&mut self, req: CompactionRequest) -> Result<(CompactionResponse, CompactionJob)> {
        if req.revision <= self.state.compacted {
            return Err(Error::Compacted);
        }
        if req.revision > self.state.current {
            return Err(Error::FutureRevision);
        }
        self.state.compacted = req.revision;
        self.batch.put(META_BUCKET, META_SCHEDULED_COMPACT, encode_i64(req.revision));
        let job = compact::plan(&mut self.state.index, req.revision);
        Ok((CompactionResponse { header: header(self.state.current) }, job))
    }

    /// Writes the request's changes (with `extra`) to the engine, unsynced, and advances the
    /// store revision. Returns the store revision and the events.
    pub(crate) fn commit(mut self, extra: WriteBatch) -> Result<(i64, Vec<Event>)> {
        if self.sub > 0 {
            self.state.current = self.main;
            self.batch.put(META_BUCKET, META_CURRENT, encode_i64(self.main));
        }
        self.batch.append(extra);
        if !self.batch.is_empty() {
            self.engine.write(std::mem::take(&mut self.batch), false)?;
        }
        Ok((self.state.current, self.events))
    }

    fn next_rev(&mut self) -> Revision {
        let rev = Revision::new(self.main, self.sub);
        self.sub += 1;
        rev
    }

    fn full_kv(&self, key: &[u8], entry: &Entry) -> Result<KeyValue> {
        Ok(range::key_value(key, entry, self.value(key, entry)?))
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse> {
        let prev = self.state.index.get(&req.key, i64::MAX);
        let prev_kv = match prev {
            Some(p) if req.prev_kv || req.ignore_value => Some(self.full_kv(&req.key, &p)?),
            _ => None,
        };
        let (create, version) = prev.map_or((self.main, 1), |p| (p.create, p.version + 1));
        let lease = match (req.ignore_lease, prev) {
            (true, Some(p)) => p.lease,
            _ => req.lease,
        };
        let value = match (&prev_kv, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let rev = self.next_rev();
        let entry = Entry { rev, create, version, lease };
        let kv = range::key_value(&req.key, &entry, value);
        self.batch.put(KEY_BUCKET, record_key(rev, false), kv.encode_to_vec());
        self.state.index.push(&req.key, entry);
        self.pending.insert(rev, kv.value.clone());
        self.events.push(Event { r#type: EventType::Put as i32, kv: Some(kv), prev_kv: None });
        Ok(PutResponse { header: header(self.main), prev_kv: prev_kv.filter(|_| req.prev_kv) })
    }

    /// Deletes the listed keys that exist, in key order, at one revision (a lease's revoke).
    pub(crate) fn delete_keys(&mut self, keys: &[Vec<u8>]) -> Result<DeleteRangeResponse> {
        let mut doomed: Vec<(Vec<u8>, Entry)> =
            keys.iter().filter_map(|k| self.state.index.get(k, i64::MAX).map(|e| (k.clone(), e))).collect();
        doomed.sort_by(|a, b| a.0.cmp(&b.0));
        doomed.dedup_by(|a, b| a.0 == b.0);
        self.tombstone(&doomed, false, &mut Vec::new())?;
        Ok(DeleteRangeResponse { header: header(self.view_rev()), deleted: doomed.len() as i64, prev_kvs: Vec::new() })
    }

    fn delete(&mut self, req: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let range = KeyRange::from_request(&req.key, &req.range_end);
        let mut doomed = Vec::new();
        self.state.index.visit_live(&range, i64::MAX, false, |live| {
            doomed.push((live.key.to_vec(), live.entry));
            true
        });
        let mut prev_kvs = Vec::new();
        self.tombstone(&doomed, req.prev_kv, &mut prev_kvs)?;
        Ok(DeleteRangeResponse { header: header(self.view_rev()), deleted: doomed.len() as i64, prev_kvs })
    }

    /// Records a deletion of each of `doomed` (live keys), with their values in `prev_kvs`
    /// when asked.
    fn tombstone(&mut self, doomed: &[(Vec<u8>, Entry)], prev_kv: bool, prev_kvs: &mut Vec<KeyValue>) -> Result<()> {
        for (key, entry) in doomed {
            if prev_kv {
                prev_kvs.push(self.full_kv(key, entry)?);
            }
            let rev = self.next_rev();
            let tombstone = KeyValue { key: key.clone(), mod_revision: self.main, ..Default::default() };
            self.batch.put(KEY_BUCKET, record_key(rev, true), tombstone.encode_to_vec());
            self.state.index.push(key, Entry { rev, create: 0, version: 0, lease: 0 });
            self.events.push(Event { r#type: EventType::Delete as i32, kv: Some(tombstone), prev_kv: None });
        }
        Ok(())
    }

    fn range_in_txn(&self, req: &RangeRequest) -> Result<RangeResponse> {
        let view = self.view_rev();
        let rev = range::read_revision(req.revision, view, self.state.compacted)?;
        let selection = range::select(&self.state.index, req, rev);
        range::respond(selection, req, view, self)
    }

    /// The branch each txn on the executed path takes, in depth-first order, all decided on the
    /// state before the txn (as etcd does).
    fn choose_path(&self, req: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &req.compare {
            if !self.compare(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &req.success } else { &req.failure } {
            if let Some(request_op::Request::RequestTxn(t)) = &op.request {
                self.choose_path(t, path)?;
            }
        }
        Ok(())
    }

    /// etcd's checks of the ops on the chosen path against the state before the txn.
    fn check_path(&self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<()> {
        let ok = path.next().unwrap_or(true);
        for op in if ok { &req.success } else { &req.failure } {
            match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    if r.revision != 0 {
                        if r.revision > self.state.current {
                            return Err(Error::FutureRevision);
                        }
                        if r.revision < self.state.compacted {
                            return Err(Error::Compacted);
                        }
                    }
                }
                Some(request_op::Request::RequestPut(p)) => {
                    if (p.ignore_value || p.ignore_lease) && self.state.index.get(&p.key, i64::MAX).is_none() {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.exists(p.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                }
                Some(request_op::Request::RequestTxn(t)) => self.check_path(t, path)?,
                Some(request_op::Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn txn(&mut self, req: &TxnRequest, path: &mut impl Iterator<Item = bool>) -> Result<TxnResponse> {
        let succeeded = path.next().unwrap_or(true);
        let mut responses = Vec::new();
        for op in if succeeded { &req.success } else { &req.failure } {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(r)) => {
                    response_op::Response::ResponseRange(self.range_in_txn(r)?)
                }
                Some(request_op::Request::RequestPut(r)) => response_op::Response::ResponsePut(self.put(r)?),
                Some(request_op::Request::RequestDeleteRange(r)) => {
                    response_op::Response::ResponseDeleteRange(self.delete(r)?)
                }
                Some(request_op::Request::RequestTxn(t)) => response_op::Response::ResponseTxn(self.txn(t, path)?),
                None => return Err(Error::KeyNotFound),
            };
            responses.push(ResponseOp { response: Some(response) });
        }
        // etcd gives a nested txn's answer an empty header; the top level's is filled later.
        Ok(TxnResponse { header: Some(ResponseHeader::default()), succeeded, responses })
    }

    /// etcd's compare: every key of the range must satisfy it; with no key, it is made against
    /// an all-zero key-value, except a value compare, which then fails.
    fn compare(&self, c: &Compare) -> Result<bool> {
        let range = KeyRange::from_request(&c.key, &c.range_end);
        let mut found = Vec::new();
        self.state.index.visit_live(&range, i64::MAX, false, |live| {
            found.push((live.key.to_vec(), live.entry));
            true
        });
        let target = compare::CompareTarget::try_from(c.target).ok();
        if found.is_empty() {
            if target == Some(compare::CompareTarget::Value) {
                return Ok(false);
            }
            return Ok(compare_kv(c, target, &KeyValue::default()));
        }
        for (key, entry) in &found {
            let kv = if target == Some(compare::CompareTarget::Value) {
                self.full_kv(key, entry)?
            } else {
                range::key_value(key, entry, Vec::new())
            };
            if !compare_kv(c, target, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn compare_kv(c: &Compare, target: Option<compare::CompareTarget>, kv: &KeyValue) -> bool {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let ordering = match target {
        // etcd compares an unknown target as equal.
        None => std::cmp::Ordering::Equal,
        Some(t @ (CompareTarget::Version | CompareTarget::Create | CompareTarget::Mod | CompareTarget::Lease)) => {
            let have = match t {
                CompareTarget::Version => kv.version,
                CompareTarget::Create => kv.create_revision,
                CompareTarget::Mod => kv.mod_revision,
                _ => kv.lease,
            };
            // A missing target_union, or one of another kind, compares against zero.
            let want = match (t, &c.target_union) {
                (CompareTarget::Version, Some(TargetUnion::Version(v)))
                | (CompareTarget::Create, Some(TargetUnion::CreateRevision(v)))
                | (CompareTarget::Mod, Some(TargetUnion::ModRevision(v)))
                | (CompareTarget::Lease, Some(TargetUnion::Lease(v))) => *v,
                _ => 0,
            };
            have.cmp(&want)
        }
        Some(CompareTarget::Value) => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value.as_slice().cmp(want)
        }
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering.is_eq(),
        Ok(CompareResult::NotEqual) => ordering.is_ne(),
        Ok(CompareResult::Greater) => ordering.is_gt(),
        Ok(CompareResult::Less) => ordering.is_lt(),
        // etcd holds an unknown result as true.
        Err(_) => true,
    }
}

impl<E: Engine> Values for WriteCtx<'_, E> {
    fn value(&self, key: &[u8], entry: &Entry) -> Result<Vec<u8>> {
        match self.pending.get(&entry.rev) {
            Some(v) => Ok(v.clone()),
            None => read_value(self.engine, key, entry),
        }
    }
}
