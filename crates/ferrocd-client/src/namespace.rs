//! A namespace: the cluster seen through a key prefix (etcd's `clientv3/namespace`). Keys given
//! to a [`Namespace`] get the prefix put in front, keys it answers with have it taken off, and a
//! range that would run to the end of the keyspace ends at the end of the prefix instead, so
//! an application written for a whole cluster can share one without seeing its neighbours.
//!
//! ```
//! # let member = ferrocd_test_utils::Member::start(ferrocd_test_utils::Kind::Ferrocd, &[]);
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! # let client = ferrocd_client::Client::connect([member.url()], Default::default()).await?;
//! use ferrocd_client::kv::GetOptions;
//!
//! let tenant = client.namespace("tenants/blue/");
//! tenant.put("config", "v1", None).await?; // stored as `tenants/blue/config`
//! let all = tenant.get("", Some(GetOptions::new().with_all_keys())).await?;
//! assert_eq!(all.kvs[0].key, b"config");
//! # Ok::<(), ferrocd_client::Error>(())
//! # }).unwrap();
//! ```

use ferrocd_proto::etcdserverpb::request_op::Request as Op;
use ferrocd_proto::etcdserverpb::response_op::Response as Reply;
use ferrocd_proto::etcdserverpb::{
    DeleteRangeRequest, DeleteRangeResponse, PutResponse, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse,
};
use ferrocd_proto::mvccpb::KeyValue;

use crate::kv::{DeleteOptions, GetOptions, PutOptions, Txn, prefix_range_end};
use crate::watch::{WatchOptions, WatchStream};
use crate::{Client, Result};

/// The cluster seen through a key prefix; see the [module](self) docs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Namespace {
    client: Client,
    prefix: Vec<u8>,
}

impl Client {
    /// This client seen through `prefix`: every key it names or is answered with is under it.
    pub fn namespace(&self, prefix: impl Into<Vec<u8>>) -> Namespace {
        Namespace { client: self.clone(), prefix: prefix.into() }
    }
}

impl Namespace {
    /// The prefix.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The client underneath, which sees every key.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// [`Client::get`] inside the namespace.
    ///
    /// # Errors
    /// As [`Client::get`].
    pub async fn get(&self, key: impl Into<Vec<u8>>, options: Option<GetOptions>) -> Result<RangeResponse> {
        let mut request = options.unwrap_or_default().build(key.into());
        self.range_in(&mut request);
        let mut reply = self.client.range(request).await?;
        self.strip_range(&mut reply);
        Ok(reply)
    }

    /// [`Client::put`] inside the namespace.
    ///
    /// # Errors
    /// As [`Client::put`].
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: Option<PutOptions>,
    ) -> Result<PutResponse> {
        let mut request = options.unwrap_or_default().build(key.into(), value.into());
        request.key = self.key_in(&request.key);
        let mut reply = self.client.put_request(request).await?;
        self.strip(reply.prev_kv.as_mut());
        Ok(reply)
    }

    /// [`Client::delete`] inside the namespace.
    ///
    /// # Errors
    /// As [`Client::delete`].
    pub async fn delete(&self, key: impl Into<Vec<u8>>, options: Option<DeleteOptions>) -> Result<DeleteRangeResponse> {
        let mut request = options.unwrap_or_default().build(key.into());
        self.delete_in(&mut request);
        let mut reply = self.client.delete_range(request).await?;
        reply.prev_kvs.iter_mut().for_each(|kv| self.strip(Some(kv)));
        Ok(reply)
    }

    /// [`Client::txn`] inside the namespace: its compares and operations, nested ones
    /// included, name keys inside it, and its answers are stripped of the prefix.
    ///
    /// # Errors
    /// As [`Client::txn`].
    pub async fn txn(&self, mut txn: Txn) -> Result<TxnResponse> {
        self.txn_in(&mut txn.0);
        let mut reply = self.client.txn(txn).await?;
        self.strip_txn(&mut reply);
        Ok(reply)
    }

    /// [`Client::watch`] inside the namespace: events name keys without the prefix.
    ///
    /// # Errors
    /// As [`Client::watch`].
    pub async fn watch(&self, key: impl Into<Vec<u8>>, options: Option<WatchOptions>) -> Result<WatchStream> {
        let mut create = options.unwrap_or_default().build(key.into());
        (create.key, create.range_end) = self.interval(&create.key, &create.range_end);
        self.client.watch_request(create, self.prefix.len()).await
    }

    fn key_in(&self, key: &[u8]) -> Vec<u8> {
        [&self.prefix[..], key].concat()
    }

    /// A key and range end inside the namespace (etcd's `prefixInterval`): `\0` as the end,
    /// the end of the keyspace, becomes the end of the prefix.
    fn interval(&self, key: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let end = match end {
            [] => Vec::new(),
            [0] if self.prefix.is_empty() => vec![0],
            [0] => prefix_range_end(&self.prefix),
            end => self.key_in(end),
        };
        (self.key_in(key), end)
    }

    fn range_in(&self, request: &mut RangeRequest) {
        (request.key, request.range_end) = self.interval(&request.key, &request.range_end);
    }

    fn delete_in(&self, request: &mut DeleteRangeRequest) {
        (request.key, request.range_end) = self.interval(&request.key, &request.range_end);
    }

    fn txn_in(&self, txn: &mut TxnRequest) {
        for compare in &mut txn.compare {
            (compare.key, compare.range_end) = self.interval(&compare.key, &compare.range_end);
        }
        for op in txn.success.iter_mut().chain(txn.failure.iter_mut()) {
            self.op_in(op);
        }
    }

    fn op_in(&self, op: &mut RequestOp) {
        match &mut op.request {
            Some(Op::RequestRange(r)) => self.range_in(r),
            Some(Op::RequestPut(p)) => p.key = self.key_in(&p.key),
            Some(Op::RequestDeleteRange(d)) => self.delete_in(d),
            Some(Op::RequestTxn(t)) => self.txn_in(t),
            None => {}
        }
    }

    fn strip(&self, kv: Option<&mut KeyValue>) {
        strip_prefix(self.prefix.len(), kv);
    }

    fn strip_range(&self, reply: &mut RangeResponse) {
        reply.kvs.iter_mut().for_each(|kv| self.strip(Some(kv)));
    }

    fn strip_txn(&self, reply: &mut TxnResponse) {
        for op in &mut reply.responses {
            match &mut op.response {
                Some(Reply::ResponseRange(r)) => self.strip_range(r),
                Some(Reply::ResponsePut(p)) => self.strip(p.prev_kv.as_mut()),
                Some(Reply::ResponseDeleteRange(d)) => d.prev_kvs.iter_mut().for_each(|kv| self.strip(Some(kv))),
                Some(Reply::ResponseTxn(t)) => self.strip_txn(t),
                None => {}
            }
        }
    }
}

/// Takes the first `len` bytes (a namespace's prefix) off the key of `kv`.
pub(crate) fn strip_prefix(len: usize, kv: Option<&mut KeyValue>) {
    if let Some(kv) = kv {
        kv.key.drain(..len.min(kv.key.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConnectOptions;
    use crate::kv::{Compare, CompareOp, TxnOp};

    async fn namespace(prefix: &str) -> Namespace {
        // Never connected: only the request translation is exercised here.
        Client::connect(["127.0.0.1:1"], ConnectOptions::new()).await.unwrap().namespace(prefix)
    }

    #[tokio::test]
    async fn ranges_stay_inside_the_prefix() {
        let ns = namespace("app/").await;
        assert_eq!(ns.interval(b"k", b""), (b"app/k".to_vec(), vec![]));
        assert_eq!(ns.interval(b"a", b"c"), (b"app/a".to_vec(), b"app/c".to_vec()));
        // The end of the keyspace is the end of the prefix.
        assert_eq!(ns.interval(b"k", b"\0"), (b"app/k".to_vec(), b"app0".to_vec()));
        assert_eq!(ns.interval(b"\0", b"\0"), (b"app/\0".to_vec(), b"app0".to_vec()));
        let top = namespace("\u{7f}").await;
        assert_eq!(top.interval(b"k", b"\0").1, b"\x80".to_vec());
        let none = namespace("").await;
        assert_eq!(none.interval(b"k", b"\0"), (b"k".to_vec(), vec![0]));
    }

    #[tokio::test]
    async fn a_txn_is_translated_at_every_depth() {
        let ns = namespace("p/").await;
        let inner = Txn::new().and_then([TxnOp::delete("d", Some(DeleteOptions::new().with_prefix()))]);
        let mut txn = Txn::new()
            .when([Compare::value("c", CompareOp::Equal, "x").with_range("e")])
            .and_then([TxnOp::put("k", "v", None), TxnOp::txn(inner)])
            .or_else([TxnOp::get("g", Some(GetOptions::new().with_from_key()))]);
        ns.txn_in(&mut txn.0);
        assert_eq!((&txn.0.compare[0].key[..], &txn.0.compare[0].range_end[..]), (&b"p/c"[..], &b"p/e"[..]));
        let Some(Op::RequestPut(put)) = &txn.0.success[0].request else { panic!() };
        assert_eq!(put.key, b"p/k");
        let Some(Op::RequestTxn(nested)) = &txn.0.success[1].request else { panic!() };
        let Some(Op::RequestDeleteRange(del)) = &nested.success[0].request else { panic!() };
        assert_eq!((&del.key[..], &del.range_end[..]), (&b"p/d"[..], &b"p/e"[..]));
        let Some(Op::RequestRange(get)) = &txn.0.failure[0].request else { panic!() };
        assert_eq!((&get.key[..], &get.range_end[..]), (&b"p/g"[..], &b"p0"[..]));
    }
}
