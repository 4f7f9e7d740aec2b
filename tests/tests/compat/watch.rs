//! Watch end to end: raw gRPC transcripts and the real etcdctl's `watch`, each diffed against a
//! real etcd, and the `etcd-client` crate's watch API against ferrocd.

use std::time::Duration;

use ferrocd_mvcc::testing::{KvApi, put_req};
use ferrocd_proto::etcdserverpb::watch_client::WatchClient;
use ferrocd_proto::etcdserverpb::watch_create_request::FilterType;
use ferrocd_proto::etcdserverpb::watch_request::RequestUnion;
use ferrocd_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, RequestOp, TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchRequest,
    WatchResponse, request_op,
};
use ferrocd_proto::mvccpb::Event;
use ferrocd_test_utils::{EtcdctlProcess, Kind, Member, etcdctl_ok};
use tokio::sync::mpsc;
use tonic::Streaming;

use crate::grpc::Grpc;

const WAIT: Duration = Duration::from_secs(20);

/// One Watch stream over gRPC, driven step by step.
struct Session {
    api: Grpc,
    requests: mpsc::UnboundedSender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Session {
    /// Opens a stream whose first request is `first` (etcd sends the stream's headers only
    /// with its first response, so the call completes only once a request was sent).
    fn open(api: Grpc, first: WatchCreateRequest) -> Self {
        let (requests, rx) = mpsc::unbounded_channel();
        requests.send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(first)) }).expect("open");
        let mut client = WatchClient::new(api.channel.clone()).max_decoding_message_size(usize::MAX);
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let responses = api.rt.block_on(client.watch(stream)).expect("a watch stream").into_inner();
        Self { api, requests, responses }
    }

    fn send(&self, request: RequestUnion) {
        self.requests.send(WatchRequest { request_union: Some(request) }).expect("stream open");
    }

    fn create(&self, req: WatchCreateRequest) {
        self.send(RequestUnion::CreateRequest(req));
    }

    /// The next `n` responses, summarised.
    fn expect(&mut self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let responses = &mut self.responses;
                let next = self.api.rt.block_on(async { tokio::time::timeout(WAIT, responses.message()).await });
                match next {
                    Ok(Ok(Some(resp))) => summary(&resp),
                    other => panic!("response {} of {n}: {other:?}", i + 1),
                }
            })
            .collect()
    }
}

fn event_summary(e: &Event) -> String {
    let kv = e.kv.clone().unwrap_or_default();
    let mut value = String::from_utf8_lossy(&kv.value).into_owned();
    if value.len() > 12 {
        value = format!("<{} bytes>", kv.value.len());
    }
    let prev = e.prev_kv.as_ref().map(|p| format!(" prev={}@{}", String::from_utf8_lossy(&p.value), p.mod_revision));
    format!(
        "{} {}={} c{} m{} v{}{}",
        if e.r#type == 0 { "PUT" } else { "DELETE" },
        String::from_utf8_lossy(&kv.key),
        value,
        kv.create_revision,
        kv.mod_revision,
        kv.version,
        prev.unwrap_or_default()
    )
}

/// A response without the member's IDs and term.
fn summary(r: &WatchResponse) -> String {
    let events: Vec<String> = r.events.iter().map(event_summary).collect();
    format!(
        "id={} rev={} created={} canceled={} compact={} reason={:?} fragment={} events={events:?}",
        r.watch_id,
        r.header.as_ref().map_or(0, |h| h.revision),
        r.created,
        r.canceled,
        r.compact_revision,
        r.cancel_reason,
        r.fragment
    )
}

fn create(key: &str, end: &str, start: i64) -> WatchCreateRequest {
    WatchCreateRequest { key: key.into(), range_end: end.into(), start_revision: start, ..Default::default() }
}

fn cancel(s: &Session, watch_id: i64) {
    s.send(RequestUnion::CancelRequest(WatchCancelRequest { watch_id }));
}

fn grpc_watch_transcript(member: &Member) -> Vec<String> {
    let mut api = Grpc::connect(&member.endpoint());
    for (k, v) in [("a", "1"), ("b", "2"), ("a", "3")] {
        api.put(put_req(k, v)).unwrap();
    }
    api.delete_range(DeleteRangeRequest { key: "b".into(), ..Default::default() }).unwrap();
    // Revision 5. Replay from the past, with previous values.
    let mut s = Session::open(api, WatchCreateRequest { prev_kv: true, ..create("a", "", 2) });
    let mut log = Vec::new();
    let mut step = |s: &mut Session, what: &str, n: usize| {
        for line in s.expect(n) {
            log.push(format!("{what}: {line}"));
        }
    };
    step(&mut s, "replay a from 2", 2);
    s.api.put(put_req("a", "5")).unwrap();
    step(&mut s, "live put a", 1);
    cancel(&s, 0);
    step(&mut s, "cancel 0", 1);
    s.create(WatchCreateRequest { watch_id: 7, ..create("b", "c", 1) });
    step(&mut s, "replay [b, c) from 1 as id 7", 2);
    s.create(WatchCreateRequest { watch_id: 7, ..create("x", "", 0) });
    step(&mut s, "duplicate id", 1);
    s.create(create("b", "a", 0));
    step(&mut s, "empty range", 1);
    s.create(create("", "\0", 0));
    step(&mut s, "every key from now", 1);
    let txn = TxnRequest {
        success: ["t1", "t2"]
            .iter()
            .map(|k| RequestOp { request: Some(request_op::Request::RequestPut(put_req(k, "v"))) })
            .collect(),
        ..Default::default()
    };
    s.api.txn(txn).unwrap();
    step(&mut s, "one txn, one response", 1);
    cancel(&s, 1);
    step(&mut s, "cancel the every-key watcher (id 1: ids are not reused)", 1);
    s.create(WatchCreateRequest { filters: vec![FilterType::Noput as i32], ..create("t1", "", 0) });
    step(&mut s, "no puts", 1);
    s.api.put(put_req("t1", "again")).unwrap();
    s.api.delete_range(DeleteRangeRequest { key: "t1".into(), ..Default::default() }).unwrap();
    step(&mut s, "put then delete t1", 1);
    cancel(&s, 7);
    step(&mut s, "cancel 7", 1);
    cancel(&s, 99);
    // Revision 9; compact at 7.
    s.api.compact(CompactionRequest { revision: 7, physical: true }).unwrap();
    s.create(create("a", "", 3));
    step(&mut s, "start below the compaction", 2);
    s.create(create("a", "", 11));
    step(&mut s, "future start", 1);
    s.api.put(put_req("a", "10")).unwrap();
    s.api.put(put_req("a", "11")).unwrap();
    step(&mut s, "future start reached", 1);
    // Three values of 700 KiB in one response is past max-request-bytes + 512 KiB.
    for k in ["f1", "f2", "f3"] {
        s.api.put(put_req(k, &"x".repeat(700 << 10))).unwrap();
    }
    s.create(WatchCreateRequest { fragment: true, ..create("f", "g", 12) });
    step(&mut s, "fragmented replay", 3);
    s.create(create("f", "g", 12));
    step(&mut s, "the same, whole", 2);
    log
}

#[test]
fn grpc_watch_responses_match_etcd() {
    let etcd = Member::start(Kind::Etcd, &[]);
    let ferrocd = Member::start(Kind::Ferrocd, &[]);
    let want = grpc_watch_transcript(&etcd);
    let got = grpc_watch_transcript(&ferrocd);
    let diffs: Vec<String> =
        want.iter().zip(&got).filter(|(w, g)| w != g).map(|(w, g)| format!("  etcd:    {w}\n  ferrocd: {g}")).collect();
    assert!(diffs.is_empty(), "{} of {} responses differ:\n{}", diffs.len(), want.len(), diffs.join("\n"));
}

fn etcdctl_watch_transcript(member: &Member) -> Vec<Vec<String>> {
    let ep = member.endpoint();
    etcdctl_ok(&ep, &["put", "app/a", "1"]);
    etcdctl_ok(&ep, &["put", "app/b", "2"]);
    etcdctl_ok(&ep, &["put", "app/a", "3"]);
    etcdctl_ok(&ep, &["del", "app/b"]);
    let mut out = Vec::new();
    // History with previous values: PUT a (3 lines), PUT b (3), PUT a with prev (5), DELETE b with prev (5).
    let mut replay = EtcdctlProcess::spawn(&ep, &["watch", "app/", "--prefix", "--rev", "2", "--prev-kv"]);
    out.push(replay.lines(16, WAIT));
    // Live events from revision 6 on: a txn of two puts, then a delete.
    let mut live = EtcdctlProcess::spawn(&ep, &["watch", "app/", "app/z", "--rev", "6"]);
    let txn = ferrocd_test_utils::etcdctl(&ep, &["txn"], Some("\nput app/x 1\nput app/y 2\n\n\n"));
    assert!(txn.status.success());
    etcdctl_ok(&ep, &["del", "app/x"]);
    out.push(live.lines(9, WAIT));
    out.push(replay.lines(11, WAIT));
    // Progress notifications (the servers run with a 200 ms interval).
    let mut progress = EtcdctlProcess::spawn(&ep, &["watch", "quiet", "--progress-notify"]);
    out.push(progress.lines(1, WAIT));
    // A watch from a compacted revision is canceled: etcdctl reports it and exits.
    etcdctl_ok(&ep, &["compact", "5"]);
    let mut compacted = EtcdctlProcess::spawn_with_stderr(&ep, &["watch", "app/", "--prefix", "--rev", "3"]);
    out.push(compacted.lines(2, WAIT));
    out
}

#[test]
fn etcdctl_watch_matches_etcd() {
    let flags = ["--experimental-watch-progress-notify-interval=200ms"];
    let etcd = Member::start(Kind::Etcd, &flags);
    let ferrocd = Member::start(Kind::Ferrocd, &flags);
    let want = etcdctl_watch_transcript(&etcd);
    let got = etcdctl_watch_transcript(&ferrocd);
    assert_eq!(got, want);
}

#[test]
fn etcd_client_crate_watches() {
    use etcd_client::{Client, EventType, WatchOptions};
    let member = Member::start(Kind::Ferrocd, &[]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut client = Client::connect([member.url()], None).await.unwrap();
        client.put("svc/a", "1", None).await.unwrap();
        let mut stream = client.watch("svc/", Some(WatchOptions::new().with_prefix().with_prev_key())).await.unwrap();
        let first = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
        assert!(first.created());
        let created = first.watch_id();
        client.put("svc/a", "2", None).await.unwrap();
        client.delete("svc/a", None).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let resp = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
            for e in resp.events() {
                let prev = e.prev_kv().map(|p| p.value_str().unwrap().to_string());
                seen.push((e.event_type(), e.kv().unwrap().key_str().unwrap().to_string(), prev));
            }
        }
        assert_eq!(
            seen,
            [(EventType::Put, "svc/a".into(), Some("1".into())), (EventType::Delete, "svc/a".into(), Some("2".into()))]
        );
        stream.request_progress().await.unwrap();
        let progress = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
        assert!(progress.events().is_empty() && progress.watch_id() == -1);
        assert_eq!(progress.header().unwrap().revision(), 4);
        stream.cancel(created).await.unwrap();
        let canceled = tokio::time::timeout(WAIT, stream.message()).await.unwrap().unwrap().unwrap();
        assert!(canceled.canceled() && canceled.watch_id() == created);

        client.compact(3, None).await.unwrap();
        let mut old = client.watch("svc/a", Some(WatchOptions::new().with_start_revision(2))).await.unwrap();
        let created = tokio::time::timeout(WAIT, old.message()).await.unwrap().unwrap().unwrap();
        assert!(created.created());
        let resp = tokio::time::timeout(WAIT, old.message()).await.unwrap().unwrap().unwrap();
        assert_eq!((resp.canceled(), resp.compact_revision()), (true, 3));
    });
}
