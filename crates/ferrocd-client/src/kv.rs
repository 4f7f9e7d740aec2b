//! Keys and values: [`Client::get`], [`Client::put`], [`Client::delete`], [`Client::txn`],
//! [`Client::compact`], with builders for every option etcd's requests carry.
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! use ferrocd_client::kv::{Compare, CompareOp, PutOptions, Txn, TxnOp};
//!
//! // Create `config` only if it does not exist yet.
//! let txn = Txn::new()
//!     .when([Compare::version("config", CompareOp::Equal, 0)])
//!     .and_then([TxnOp::put("config", "v1", None)])
//!     .or_else([TxnOp::get("config", None)]);
//! let created = client.txn(txn).await?.succeeded;
//! let previous = client.put("config", "v2", Some(PutOptions::new().with_prev_key())).await?.prev_kv;
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use ferrocd_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use ferrocd_proto::etcdserverpb::kv_client::KvClient;
use ferrocd_proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse,
    RangeRequest, RangeResponse, RequestOp, TxnRequest, TxnResponse,
};

use crate::{Client, Repeat, Result};

/// The end of the range of every key starting with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff incremented; `\0` (every key from the start) when there
/// is none.
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The builder methods of an options type with a `span` field: which keys besides the key.
macro_rules! span_methods {
    () => {
        /// Keys from the key up to `end` (exclusive); `\0` means every key from the key on.
        #[must_use]
        pub fn with_range(mut self, end: impl Into<Vec<u8>>) -> Self {
            self.span = $crate::kv::Span::End(end.into());
            self
        }

        /// Every key that starts with the key.
        #[must_use]
        pub fn with_prefix(mut self) -> Self {
            self.span = $crate::kv::Span::Prefix;
            self
        }

        /// Every key from the key on.
        #[must_use]
        pub fn with_from_key(mut self) -> Self {
            self.span = $crate::kv::Span::FromKey;
            self
        }

        /// Every key (the key given is ignored).
        #[must_use]
        pub fn with_all_keys(mut self) -> Self {
            self.span = $crate::kv::Span::All;
            self
        }
    };
}
pub(crate) use span_methods;

/// Which keys a request names besides its key: none (the key alone), a range end, every key
/// with the key as prefix, or every key from it on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Span {
    #[default]
    Key,
    End(Vec<u8>),
    Prefix,
    FromKey,
    All,
}

impl Span {
    /// The request's `key` and `range_end` for `key`.
    pub(crate) fn resolve(&self, key: Vec<u8>) -> (Vec<u8>, Vec<u8>) {
        match self {
            Span::Key => (key, Vec::new()),
            Span::End(end) => (key, end.clone()),
            Span::Prefix if key.is_empty() => (vec![0], vec![0]),
            Span::Prefix => {
                let end = prefix_range_end(&key);
                (key, end)
            }
            Span::FromKey if key.is_empty() => (vec![0], vec![0]),
            Span::FromKey => (key, vec![0]),
            Span::All => (vec![0], vec![0]),
        }
    }
}

/// Options of [`Client::get`] (etcd's `RangeRequest`).
#[derive(Debug, Clone, Default)]
pub struct GetOptions {
    span: Span,
    request: RangeRequest,
}

impl GetOptions {
    pub fn new() -> Self {
        Self::default()
    }

    span_methods!();

    /// At most `limit` keys (0: no limit); `more` tells whether there were others.
    #[must_use]
    pub fn with_limit(mut self, limit: i64) -> Self {
        self.request.limit = limit;
        self
    }

    /// The keys as they were at `revision` (0 or less: now).
    #[must_use]
    pub fn with_revision(mut self, revision: i64) -> Self {
        self.request.revision = revision;
        self
    }

    /// Sorted by `target` in `order`.
    #[must_use]
    pub fn with_sort(mut self, target: SortTarget, order: SortOrder) -> Self {
        self.request.sort_target = target as i32;
        self.request.sort_order = order as i32;
        self
    }

    /// Sorting as raw enum values, passed through unchecked (the server judges them).
    #[must_use]
    pub fn with_sort_raw(mut self, target: i32, order: i32) -> Self {
        self.request.sort_target = target;
        self.request.sort_order = order;
        self
    }

    /// Served by the member asked, from what it has applied, without a round to the leader.
    #[must_use]
    pub fn with_serializable(mut self) -> Self {
        self.request.serializable = true;
        self
    }

    /// Keys without values.
    #[must_use]
    pub fn with_keys_only(mut self) -> Self {
        self.request.keys_only = true;
        self
    }

    /// Only how many keys there are.
    #[must_use]
    pub fn with_count_only(mut self) -> Self {
        self.request.count_only = true;
        self
    }

    /// Keys last modified at or after `revision`.
    #[must_use]
    pub fn with_min_mod_revision(mut self, revision: i64) -> Self {
        self.request.min_mod_revision = revision;
        self
    }

    /// Keys last modified at or before `revision`.
    #[must_use]
    pub fn with_max_mod_revision(mut self, revision: i64) -> Self {
        self.request.max_mod_revision = revision;
        self
    }

    /// Keys created at or after `revision`.
    #[must_use]
    pub fn with_min_create_revision(mut self, revision: i64) -> Self {
        self.request.min_create_revision = revision;
        self
    }

    /// Keys created at or before `revision`.
    #[must_use]
    pub fn with_max_create_revision(mut self, revision: i64) -> Self {
        self.request.max_create_revision = revision;
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>) -> RangeRequest {
        let (key, range_end) = self.span.resolve(key);
        RangeRequest { key, range_end, ..self.request.clone() }
    }
}

/// Options of [`Client::put`] (etcd's `PutRequest`).
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    request: PutRequest,
}

impl PutOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Attached to lease `id` (the key goes when the lease does).
    #[must_use]
    pub fn with_lease(mut self, id: i64) -> Self {
        self.request.lease = id;
        self
    }

    /// Answers with the key-value pair as it was before.
    #[must_use]
    pub fn with_prev_key(mut self) -> Self {
        self.request.prev_kv = true;
        self
    }

    /// Keeps the key's value (the key must exist; give no value).
    #[must_use]
    pub fn with_ignore_value(mut self) -> Self {
        self.request.ignore_value = true;
        self
    }

    /// Keeps the key's lease (the key must exist; give no lease).
    #[must_use]
    pub fn with_ignore_lease(mut self) -> Self {
        self.request.ignore_lease = true;
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>, value: Vec<u8>) -> PutRequest {
        PutRequest { key, value, ..self.request.clone() }
    }
}

/// Options of [`Client::delete`] (etcd's `DeleteRangeRequest`).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    span: Span,
    prev_kv: bool,
}

impl DeleteOptions {
    pub fn new() -> Self {
        Self::default()
    }

    span_methods!();

    /// Answers with the deleted key-value pairs.
    #[must_use]
    pub fn with_prev_key(mut self) -> Self {
        self.prev_kv = true;
        self
    }

    pub(crate) fn build(&self, key: Vec<u8>) -> DeleteRangeRequest {
        let (key, range_end) = self.span.resolve(key);
        DeleteRangeRequest { key, range_end, prev_kv: self.prev_kv }
    }
}

/// How a [`Compare`] compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

impl From<CompareOp> for CompareResult {
    fn from(op: CompareOp) -> Self {
        match op {
            CompareOp::Equal => CompareResult::Equal,
            CompareOp::NotEqual => CompareResult::NotEqual,
            CompareOp::Greater => CompareResult::Greater,
            CompareOp::Less => CompareResult::Less,
        }
    }
}

/// One condition of a [`Txn`]: a key's (or a range's) value, version, create or mod revision,
/// or lease compared with a given one.
#[derive(Debug, Clone, PartialEq)]
pub struct Compare(pub(crate) ferrocd_proto::etcdserverpb::Compare);

impl Compare {
    fn new(key: impl Into<Vec<u8>>, op: CompareOp, target: CompareTarget, union: TargetUnion) -> Self {
        Compare(ferrocd_proto::etcdserverpb::Compare {
            result: CompareResult::from(op) as i32,
            target: target as i32,
            key: key.into(),
            range_end: Vec::new(),
            target_union: Some(union),
        })
    }

    /// The key's value.
    pub fn value(key: impl Into<Vec<u8>>, op: CompareOp, value: impl Into<Vec<u8>>) -> Self {
        Self::new(key, op, CompareTarget::Value, TargetUnion::Value(value.into()))
    }

    /// The key's version (0: the key does not exist).
    pub fn version(key: impl Into<Vec<u8>>, op: CompareOp, version: i64) -> Self {
        Self::new(key, op, CompareTarget::Version, TargetUnion::Version(version))
    }

    /// The revision the key was created at.
    pub fn create_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::Create, TargetUnion::CreateRevision(revision))
    }

    /// The revision the key was last modified at.
    pub fn mod_revision(key: impl Into<Vec<u8>>, op: CompareOp, revision: i64) -> Self {
        Self::new(key, op, CompareTarget::Mod, TargetUnion::ModRevision(revision))
    }

    /// The key's lease.
    pub fn lease(key: impl Into<Vec<u8>>, op: CompareOp, lease: i64) -> Self {
        Self::new(key, op, CompareTarget::Lease, TargetUnion::Lease(lease))
    }

    /// Compares every key from the key up to `end` instead (all must hold).
    #[must_use]
    pub fn with_range(mut self, end: impl Into<Vec<u8>>) -> Self {
        self.0.range_end = end.into();
        self
    }

    /// Compares every key with the key as prefix instead.
    #[must_use]
    pub fn with_prefix(mut self) -> Self {
        self.0.range_end = prefix_range_end(&self.0.key);
        self
    }

    /// Any compare, as etcd's message (for raw enum values the server should judge).
    pub fn from_raw(compare: ferrocd_proto::etcdserverpb::Compare) -> Self {
        Compare(compare)
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnOp(pub(crate) RequestOp);

impl TxnOp {
    pub fn get(key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Self {
        TxnOp::from_op(Op::RequestRange(options.unwrap_or_default().build(key.into())))
    }

    pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>, options: Option<PutOptions>) -> Self {
        TxnOp::from_op(Op::RequestPut(options.unwrap_or_default().build(key.into(), value.into())))
    }

    pub fn delete(key: impl Into<Vec<u8>>, options: Option<DeleteOptions>) -> Self {
        TxnOp::from_op(Op::RequestDeleteRange(options.unwrap_or_default().build(key.into())))
    }

    /// A nested transaction.
    pub fn txn(txn: Txn) -> Self {
        TxnOp::from_op(Op::RequestTxn(txn.0))
    }

    /// An operation with no request in it (the server refuses it as etcd does).
    pub fn empty() -> Self {
        TxnOp(RequestOp { request: None })
    }

    fn from_op(op: Op) -> Self {
        TxnOp(RequestOp { request: Some(op) })
    }
}

/// A transaction: if every compare holds, the `and_then` branch runs, else the `or_else` one,
/// all at one revision.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Txn(pub(crate) TxnRequest);

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// The conditions (added to any before).
    #[must_use]
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.0.compare.extend(compares.into_iter().map(|c| c.0));
        self
    }

    /// What runs when every condition holds.
    #[must_use]
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.success.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// What runs otherwise.
    #[must_use]
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.0.failure.extend(ops.into_iter().map(|o| o.0));
        self
    }

    /// Whether any operation, nested ones included, writes (such a transaction is not sent
    /// again after a failure that may have reached a server).
    pub fn writes(&self) -> bool {
        fn writes(ops: &[RequestOp]) -> bool {
            ops.iter().any(|op| match &op.request {
                Some(Op::RequestPut(_) | Op::RequestDeleteRange(_)) => true,
                Some(Op::RequestTxn(t)) => writes(&t.success) || writes(&t.failure),
                _ => false,
            })
        }
        writes(&self.0.success) || writes(&self.0.failure)
    }
}

impl Client {
    /// The key (or the keys the options name).
    ///
    /// # Errors
    /// etcd's: e.g. [`crate::EtcdError::Compacted`] or [`crate::EtcdError::FutureRev`] for a
    /// revision out of reach; an unreachable cluster.
    pub async fn get(&self, key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Result<RangeResponse> {
        self.range(options.unwrap_or_default().build(key.into())).await
    }

    /// Sets the key's value.
    ///
    /// # Errors
    /// etcd's: e.g. [`crate::EtcdError::LeaseNotFound`], [`crate::EtcdError::NoSpace`].
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse> {
        self.put_request(options.unwrap_or_default().build(key.into(), value.into())).await
    }

    /// Deletes the key (or the keys the options name).
    ///
    /// # Errors
    /// etcd's; an unreachable cluster.
    pub async fn delete(&self, key: impl Into<Vec<u8>>, options: Option<DeleteOptions>) -> Result<DeleteRangeResponse> {
        self.delete_range(options.unwrap_or_default().build(key.into())).await
    }

    /// Runs a transaction.
    ///
    /// # Errors
    /// etcd's: e.g. [`crate::EtcdError::DuplicateKey`], [`crate::EtcdError::TooManyOps`].
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let repeat = if txn.writes() { Repeat::Once } else { Repeat::Idempotent };
        self.call(txn.0, repeat, |ch, r| async move { KvClient::new(ch).txn(r).await }).await
    }

    pub(crate) async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.call(request, Repeat::Idempotent, |ch, r| async move { KvClient::new(ch).range(r).await }).await
    }

    pub(crate) async fn put_request(&self, request: PutRequest) -> Result<PutResponse> {
        self.call(request, Repeat::Once, |ch, r| async move { KvClient::new(ch).put(r).await }).await
    }

    pub(crate) async fn delete_range(&self, request: DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        self.call(request, Repeat::Once, |ch, r| async move { KvClient::new(ch).delete_range(r).await }).await
    }

    /// Compacts the history up to `revision`; with `physical`, answers once the space is freed.
    ///
    /// # Errors
    /// etcd's: [`crate::EtcdError::Compacted`], [`crate::EtcdError::FutureRev`].
    pub async fn compact(&self, revision: i64, physical: bool) -> Result<CompactionResponse> {
        let request = CompactionRequest { revision, physical };
        self.call(request, Repeat::Idempotent, |ch, r| async move { KvClient::new(ch).compact(r).await }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn spans_resolve_as_etcdctl_sends_them() {
        assert_eq!(Span::Key.resolve(b"a".to_vec()), (b"a".to_vec(), vec![]));
        assert_eq!(Span::Prefix.resolve(b"a".to_vec()), (b"a".to_vec(), b"b".to_vec()));
        assert_eq!(Span::Prefix.resolve(b"a\xff".to_vec()), (b"a\xff".to_vec(), b"b".to_vec()));
        assert_eq!(Span::Prefix.resolve(b"\xff\xff".to_vec()), (b"\xff\xff".to_vec(), vec![0]));
        assert_eq!(Span::Prefix.resolve(vec![]), (vec![0], vec![0]));
        assert_eq!(Span::FromKey.resolve(b"a".to_vec()), (b"a".to_vec(), vec![0]));
        assert_eq!(Span::All.resolve(b"ignored".to_vec()), (vec![0], vec![0]));
    }

    #[test]
    fn a_txn_writes_when_any_branch_does_at_any_depth() {
        let read = Txn::new().and_then([TxnOp::get("a", None)]);
        assert!(!read.writes());
        let nested = Txn::new().or_else([TxnOp::txn(Txn::new().and_then([TxnOp::delete("a", None)]))]);
        assert!(nested.writes());
    }

    proptest! {
        /// Every key with the prefix is inside [prefix, end); the first key after them is not.
        #[test]
        fn prefix_range_end_bounds_exactly_the_prefixed_keys(prefix in prop::collection::vec(any::<u8>(), 1..6), tail in prop::collection::vec(any::<u8>(), 0..4), other in prop::collection::vec(any::<u8>(), 0..8)) {
            let end = prefix_range_end(&prefix);
            let mut key = prefix.clone();
            key.extend(&tail);
            prop_assert!(end == [0] || key < end);
            if !other.starts_with(&prefix) && other >= prefix {
                prop_assert!(end != [0] && other >= end);
            }
        }
    }
}
