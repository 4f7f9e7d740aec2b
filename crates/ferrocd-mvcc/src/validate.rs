//! Stateless checks of requests, as etcd makes them before a request enters consensus.
//!
//! They depend only on the request, so the server runs them before proposing and the store
//! runs them again before applying.

use std::collections::HashSet;

use ferrocd_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest, range_request, request_op,
};
use ferrocd_types::KeyRange;

use crate::{Error, Result};

pub fn check_range(req: &RangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if range_request::SortOrder::try_from(req.sort_order).is_err()
        || range_request::SortTarget::try_from(req.sort_target).is_err()
    {
        return Err(Error::InvalidSortOption);
    }
    Ok(())
}

pub fn check_put(req: &PutRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

pub fn check_delete(req: &DeleteRangeRequest) -> Result<()> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    Ok(())
}

/// etcd's checks of a Txn: the op budget (`max_ops` per list, nested txns get what is left),
/// empty keys, every op's own checks, then the duplicate-key rules of each branch.
pub fn check_txn(req: &TxnRequest, max_ops: usize) -> Result<()> {
    check_txn_shape(req, max_ops)?;
    check_duplicates(&req.success)?;
    check_duplicates(&req.failure)?;
    Ok(())
}

fn check_txn_shape(req: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = req.compare.len().max(req.success.len()).max(req.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        check_op(op, max_ops - ops)?;
    }
    Ok(())
}

fn check_op(op: &RequestOp, max_ops: usize) -> Result<()> {
    match &op.request {
        Some(request_op::Request::RequestRange(r)) => check_range(r),
        Some(request_op::Request::RequestPut(r)) => check_put(r),
        Some(request_op::Request::RequestDeleteRange(r)) => check_delete(r),
        Some(request_op::Request::RequestTxn(r)) => check_txn_shape(r, max_ops),
        // etcd answers an empty op so.
        None => Err(Error::KeyNotFound),
    }
}

/// The keys put and the ranges deleted by one branch, nested branches included.
#[derive(Default)]
struct Writes {
    puts: HashSet<Vec<u8>>,
    deletes: Vec<KeyRange>,
}

impl Writes {
    fn deleted(&self, key: &[u8]) -> bool {
        self.deletes.iter().any(|r| r.contains(key))
    }
}

/// Within one branch a key may be put once and not both put and deleted (across nested txns
/// too); overlapping deletes are fine, and so is a key put in both branches of one nested txn.
/// A from-key delete (`range_end = "\0"`) covers every key after its start.
fn check_duplicates(ops: &[RequestOp]) -> Result<()> {
    collect_writes(ops).map(|_| ())
}

fn collect_writes(ops: &[RequestOp]) -> Result<Writes> {
    let mut w = Writes::default();
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(d)) = &op.request {
            w.deletes.push(KeyRange::from_request(&d.key, &d.range_end));
        }
    }
    for op in ops {
        let Some(request_op::Request::RequestTxn(t)) = &op.request else { continue };
        let then = collect_writes(&t.success)?;
        let otherwise = collect_writes(&t.failure)?;
        for k in &then.puts {
            if w.puts.contains(k) || w.deleted(k) {
                return Err(Error::DuplicateKey);
            }
            w.puts.insert(k.clone());
        }
        for k in &otherwise.puts {
            if (w.puts.contains(k) && !then.puts.contains(k)) || w.deleted(k) {
                return Err(Error::DuplicateKey);
            }
            w.puts.insert(k.clone());
        }
        w.deletes.extend(then.deletes);
        w.deletes.extend(otherwise.deletes);
    }
    for op in ops {
        let Some(request_op::Request::RequestPut(p)) = &op.request else { continue };
        if w.puts.contains(&p.key) || w.deleted(&p.key) {
            return Err(Error::DuplicateKey);
        }
        w.puts.insert(p.key.clone());
    }
    Ok(w)
}
