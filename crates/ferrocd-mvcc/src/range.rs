//! Range evaluation over the key index, shared by Range requests and reads inside a Txn.

use std::cmp::Ordering;

use ferrocd_proto::etcdserverpb::{
    RangeRequest, RangeResponse, ResponseHeader,
    range_request::{SortOrder, SortTarget},
};
use ferrocd_proto::mvccpb::KeyValue;
use ferrocd_types::KeyRange;

use crate::index::{Entry, KeyIndex};
use crate::{Error, Result};

/// Where values come from: the engine, plus what the current request wrote.
pub(crate) trait Values {
    /// The value `key` was given at `entry`.
    fn value(&self, key: &[u8], entry: &Entry) -> Result<Vec<u8>>;
}

pub(crate) fn key_value(key: &[u8], entry: &Entry, value: Vec<u8>) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        create_revision: entry.create,
        mod_revision: entry.rev.main,
        version: entry.version,
        value,
        lease: entry.lease,
    }
}

/// Resolves the revision a read asks for against the view's current and compacted revisions.
pub(crate) fn read_revision(requested: i64, current: i64, compacted: i64) -> Result<i64> {
    if requested > current {
        return Err(Error::FutureRevision);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < compacted {
        return Err(Error::Compacted);
    }
    Ok(rev)
}

/// The keys a range selected from the index, before values are read.
pub(crate) struct Selection {
    pub(crate) found: Vec<(Vec<u8>, Entry)>,
    pub(crate) count: i64,
}

/// Evaluates `req` at the already-resolved revision `rev` with etcd's rules: `count` ignores
/// `limit` and the revision filters; with a sort order or a filter the limit applies after
/// sorting and filtering; sorting by anything but the key without an order means ascending.
pub(crate) fn select(index: &KeyIndex, req: &RangeRequest, rev: i64) -> Selection {
    let range = KeyRange::from_request(&req.key, &req.range_end);
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let fetch_all = req.sort_order != SortOrder::None as i32 || filtered;
    let fetch_limit = if req.limit > 0 && !fetch_all { req.limit as usize + 1 } else { usize::MAX };
    let mut found = Vec::new();
    let mut count = 0i64;
    index.visit_live(&range, rev, false, |live| {
        count += 1;
        if !req.count_only && found.len() < fetch_limit {
            found.push((live.key.to_vec(), live.entry));
        }
        true
    });
    Selection { found, count }
}

/// Turns a selection into the response: filters, sorts, truncates, then reads the values left.
pub(crate) fn respond(
    mut sel: Selection,
    req: &RangeRequest,
    header_revision: i64,
    values: &dyn Values,
) -> Result<RangeResponse> {
    let header = Some(ResponseHeader { revision: header_revision, ..Default::default() });
    if req.count_only {
        return Ok(RangeResponse { header, kvs: Vec::new(), more: false, count: sel.count });
    }
    let keep = |e: &Entry| {
        (req.max_mod_revision == 0 || e.rev.main <= req.max_mod_revision)
            && (req.min_mod_revision == 0 || e.rev.main >= req.min_mod_revision)
            && (req.max_create_revision == 0 || e.create <= req.max_create_revision)
            && (req.min_create_revision == 0 || e.create >= req.min_create_revision)
    };
    sel.found.retain(|(_, e)| keep(e));

    let target = SortTarget::try_from(req.sort_target).unwrap_or(SortTarget::Key);
    let mut order = SortOrder::try_from(req.sort_order).unwrap_or(SortOrder::None);
    if target != SortTarget::Key && order == SortOrder::None {
        order = SortOrder::Ascend;
    } else if target == SortTarget::Key && order == SortOrder::Ascend {
        order = SortOrder::None;
    }

    let mut kvs: Vec<KeyValue>;
    if target == SortTarget::Value && order != SortOrder::None {
        // Sorting by value needs every value first.
        kvs = sel.found.iter().map(|(k, e)| values.value(k, e).map(|v| key_value(k, e, v))).collect::<Result<_>>()?;
        sort_by(&mut kvs, order, |a, b| a.value.cmp(&b.value));
        let more = req.limit > 0 && kvs.len() > req.limit as usize;
        if more {
            kvs.truncate(req.limit as usize);
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        return Ok(RangeResponse { header, kvs, more, count: sel.count });
    }

    let mut found = sel.found;
    if order != SortOrder::None {
        sort_by(&mut found, order, |a, b| sort_key(target, a).cmp(&sort_key(target, b)));
    }
    let more = req.limit > 0 && found.len() > req.limit as usize;
    if more {
        found.truncate(req.limit as usize);
    }
    kvs = found
        .iter()
        .map(|(k, e)| {
            let value = if req.keys_only { Vec::new() } else { values.value(k, e)? };
            Ok(key_value(k, e, value))
        })
        .collect::<Result<_>>()?;
    Ok(RangeResponse { header, kvs, more, count: sel.count })
}

fn sort_key(target: SortTarget, e: &(Vec<u8>, Entry)) -> (i64, &[u8]) {
    match target {
        SortTarget::Version => (e.1.version, &[]),
        SortTarget::Create => (e.1.create, &[]),
        SortTarget::Mod => (e.1.rev.main, &[]),
        SortTarget::Key | SortTarget::Value => (0, &e.0),
    }
}

/// A stable sort: ties keep key order.
fn sort_by<T>(items: &mut [T], order: SortOrder, cmp: impl Fn(&T, &T) -> Ordering) {
    match order {
        SortOrder::Descend => items.sort_by(|a, b| cmp(b, a)),
        _ => items.sort_by(cmp),
    }
}
