//! The plain HTTP endpoints on the client port, beside gRPC: `/health`, `/livez`, `/readyz`,
//! `/version` and Go's 404 for anything else, as etcd 3.6 answers them (fact sheet §5.2), and
//! beside a real etcd 3.4 where 3.4 has them. Requests are written by hand on a TCP stream, as
//! `curl` sends them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ferrocd_test_utils::{Cluster, Kind, Member, etcdctl_ok, wait_for};

/// One HTTP/1.1 answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Sends `method path` to `endpoint` over HTTP/1.1 and reads the whole answer.
pub(crate) fn http(endpoint: &str, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(endpoint).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {endpoint}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("the answer");
    let raw = String::from_utf8(raw).expect("a text answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v == "chunked");
    let body = if chunked { unchunk(body) } else { body.to_string() };
    Answer { status, headers, body }
}

/// A chunked body's data.
pub(crate) fn unchunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if size == 0 {
            break;
        }
        data.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    data
}

#[test]
fn health_livez_readyz_and_version_answer_as_etcd_does() {
    let member = Member::start(Kind::Ferrocd, &[]);
    let ep = member.endpoint();
    let get = |path| http(&ep, "GET", path);

    let health = get("/health");
    assert_eq!((health.status, health.body.as_str()), (200, r#"{"health":"true","reason":""}"#));
    assert_eq!(get("/health?serializable=true").body, r#"{"health":"true","reason":""}"#);
    assert_eq!(get("/health?exclude=NOSPACE").status, 200);
    let post = http(&ep, "POST", "/health");
    assert_eq!((post.status, post.body.as_str()), (405, "Method Not Allowed\n"));
    assert_eq!(post.header("allow"), Some("GET"));

    let livez = get("/livez");
    assert_eq!((livez.status, livez.body.as_str()), (200, "ok\n"));
    assert_eq!(livez.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(get("/livez?verbose").body, "[+]serializable_read ok\nok\n");
    assert_eq!(
        get("/readyz?verbose").body,
        "[+]data_corruption ok\n[+]serializable_read ok\n[+]linearizable_read ok\n[+]non_learner ok\nok\n"
    );
    assert_eq!(get("/readyz").body, "ok\n");
    // Excluded checks are not run; excluding one that does not exist is no error.
    assert_eq!(
        get("/readyz?verbose&exclude=non_learner&exclude=data_corruption&exclude=nope").body,
        "[+]serializable_read ok\n[+]linearizable_read ok\nok\n"
    );
    assert_eq!(get("/readyz/linearizable_read?verbose").body, "[+]linearizable_read ok\nok\n");
    assert_eq!(get("/livez/serializable_read").body, "ok\n");
    assert_eq!(get("/readyz/nope").status, 404);

    let version = get("/version");
    assert_eq!(version.status, 200);
    assert_eq!(version.header("content-type"), Some("application/json"));
    assert_eq!(version.body, r#"{"etcdserver":"3.6.0","etcdcluster":"3.6.0","storage":"3.6.0"}"#);

    let missing = get("/nothing/here");
    assert_eq!((missing.status, missing.body.as_str()), (404, "404 page not found\n"));
    // gRPC is served on the same port all along.
    etcdctl_ok(&ep, &["put", "k", "v"]);
    assert_eq!(etcdctl_ok(&ep, &["get", "k", "--print-value-only"]), "v\n");

    // Beside etcd 3.4, where it has the same endpoints.
    let etcd = Member::start(Kind::Etcd, &[]);
    let theirs = |path| http(&etcd.endpoint(), "GET", path);
    let health: serde_json::Value = serde_json::from_str(&theirs("/health").body).unwrap();
    assert_eq!(health["health"], "true");
    let version: serde_json::Value = serde_json::from_str(&theirs("/version").body).unwrap();
    assert!(version["etcdserver"].as_str().unwrap().starts_with("3."), "{version}");
    let missing_there = theirs("/nothing/here");
    assert_eq!((missing_there.status, missing_there.body.as_str()), (404, "404 page not found\n"));
    let post_there = http(&etcd.endpoint(), "POST", "/health");
    assert_eq!((post_there.status, post_there.body.as_str()), (405, "Method Not Allowed\n"));
}

#[test]
fn health_and_readyz_fail_on_a_member_without_a_leader() {
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, &["--heartbeat-interval", "50", "--election-timeout", "500"]);
    let ep = cluster.members[0].endpoint();
    for member in &mut cluster.members[1..] {
        member.kill();
    }
    // Until the member notices the leader is gone, the read fails instead (its reason differs).
    wait_for("/health to say there is no leader", Duration::from_secs(60), || {
        http(&ep, "GET", "/health").body.contains("RAFT NO LEADER")
    });
    let health = http(&ep, "GET", "/health");
    assert_eq!(health.body, "{\"health\":\"false\",\"reason\":\"RAFT NO LEADER\"}\n");
    assert_eq!(health.header("x-content-type-options"), Some("nosniff"));
    // This member alone is fine: serializable checks pass.
    assert_eq!(http(&ep, "GET", "/health?serializable=true").status, 200);
    assert_eq!(http(&ep, "GET", "/livez").body, "ok\n");
    let readyz = http(&ep, "GET", "/readyz");
    assert_eq!(readyz.status, 503);
    let lines: Vec<&str> = readyz.body.lines().collect();
    assert_eq!(lines[..2], ["[+]data_corruption ok", "[+]serializable_read ok"]);
    assert!(lines[2].starts_with("[-]linearizable_read failed: etcdserver: "), "{}", readyz.body);
    assert_eq!(lines[3], "[+]non_learner ok");
}

/// The samples of a `/metrics` page, parsed by a Prometheus text-format parser.
fn scrape(endpoint: &str) -> prometheus_parse::Scrape {
    let page = http(endpoint, "GET", "/metrics");
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    prometheus_parse::Scrape::parse(page.body.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text page")
}

/// The kind of each metric family the issue names, as etcd's dashboards and alerts use them.
const FAMILIES: &[(&str, &str)] = &[
    ("etcd_server_has_leader", "gauge"),
    ("etcd_server_is_leader", "gauge"),
    ("etcd_server_leader_changes_seen_total", "counter"),
    ("etcd_server_proposals_committed_total", "gauge"),
    ("etcd_server_proposals_applied_total", "gauge"),
    ("etcd_server_proposals_pending", "gauge"),
    ("etcd_server_proposals_failed_total", "counter"),
    ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
    ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge"),
    ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
    ("etcd_disk_backend_commit_duration_seconds", "histogram"),
    ("etcd_debugging_mvcc_keys_total", "gauge"),
    ("grpc_server_started_total", "counter"),
    ("grpc_server_handled_total", "counter"),
    ("etcd_server_version", "gauge"),
    ("process_resident_memory_bytes", "gauge"),
];

/// The kind a scrape gives each family.
fn kinds(scrape: &prometheus_parse::Scrape) -> std::collections::BTreeMap<String, &'static str> {
    use prometheus_parse::Value;
    let mut kinds = std::collections::BTreeMap::new();
    for s in &scrape.samples {
        let kind = match s.value {
            Value::Counter(_) => "counter",
            Value::Gauge(_) => "gauge",
            Value::Histogram(_) => "histogram",
            Value::Summary(_) => "summary",
            Value::Untyped(_) => "untyped",
        };
        kinds.insert(s.metric.clone(), kind);
    }
    kinds
}

/// The value of `name`'s sample whose labels include `labels` (a histogram: its count).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {name} {labels:?}"));
    match &sample.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
        Value::Summary(_) => f64::NAN,
    }
}

#[test]
fn metrics_have_etcds_names_and_types_and_move_with_traffic() {
    let metrics_port = ferrocd_test_utils::free_port();
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let member = Member::start(Kind::Ferrocd, &["--listen-metrics-urls", &metrics_url]);
    let ep = member.endpoint();
    let before = scrape(&ep);
    let kinds_here = kinds(&before);
    for (name, kind) in FAMILIES {
        assert_eq!(kinds_here.get(*name).copied(), Some(*kind), "{name}");
    }
    // Every method's series exist from the start, at zero.
    let range_ok = [("grpc_method", "Range"), ("grpc_service", "etcdserverpb.KV"), ("grpc_code", "OK")];
    let put = [("grpc_method", "Put"), ("grpc_type", "unary"), ("grpc_code", "OK")];
    assert_eq!(value(&before, "grpc_server_handled_total", &put), 0.0);
    let ranges_before = value(&before, "grpc_server_handled_total", &range_ok);
    assert_eq!(value(&before, "etcd_server_has_leader", &[]), 1.0);
    assert_eq!(value(&before, "etcd_server_is_leader", &[]), 1.0);
    assert!(value(&before, "etcd_server_leader_changes_seen_total", &[]) >= 1.0);

    for i in 0..5 {
        etcdctl_ok(&ep, &["put", &format!("k{i}"), "v"]);
    }
    etcdctl_ok(&ep, &["get", "k0"]);
    assert!(!ferrocd_test_utils::etcdctl(&ep, &["get", ""], None).status.success(), "an empty key is refused");
    let after = scrape(&ep);
    assert_eq!(value(&after, "grpc_server_handled_total", &put), 5.0);
    assert_eq!(value(&after, "grpc_server_started_total", &[("grpc_method", "Put")]), 5.0);
    assert_eq!(value(&after, "grpc_server_handled_total", &range_ok), ranges_before + 1.0);
    let refused = [("grpc_method", "Range"), ("grpc_code", "InvalidArgument")];
    assert_eq!(value(&after, "grpc_server_handled_total", &refused), 1.0);
    assert!(value(&after, "etcd_disk_wal_fsync_duration_seconds", &[]) >= 5.0);
    assert!(value(&after, "etcd_disk_backend_commit_duration_seconds", &[]) >= 5.0);
    assert_eq!(value(&after, "etcd_debugging_mvcc_keys_total", &[]), 5.0);
    assert!(
        value(&after, "etcd_server_proposals_applied_total", &[])
            > value(&before, "etcd_server_proposals_applied_total", &[])
    );
    assert!(value(&after, "etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    assert_eq!(value(&after, "etcd_server_proposals_pending", &[]), 0.0);

    // The metrics URL serves the plain endpoints alone.
    let metrics_ep = format!("127.0.0.1:{metrics_port}");
    assert_eq!(kinds(&scrape(&metrics_ep)).get("etcd_server_has_leader").copied(), Some("gauge"));
    assert_eq!(http(&metrics_ep, "GET", "/health").status, 200);
    assert_eq!(http(&metrics_ep, "GET", "/readyz").body, "ok\n");

    // etcd 3.4 gives the same families the same kinds.
    let etcd = Member::start(Kind::Etcd, &[]);
    let theirs = kinds(&scrape_any(&etcd.endpoint()));
    for (name, kind) in FAMILIES {
        if let Some(their) = theirs.get(*name) {
            assert_eq!(their, kind, "{name} in etcd 3.4");
        }
    }
}

/// A `/metrics` page whatever its content type (etcd 3.4's client_golang may negotiate).
fn scrape_any(endpoint: &str) -> prometheus_parse::Scrape {
    let page = http(endpoint, "GET", "/metrics");
    assert_eq!(page.status, 200);
    prometheus_parse::Scrape::parse(page.body.lines().map(|l| Ok(l.to_string()))).expect("a Prometheus text page")
}

#[test]
fn peer_traffic_is_counted_per_peer_on_both_sides() {
    let mut cluster = Cluster::start(Kind::Ferrocd, 3, &[]);
    let eps: Vec<String> = cluster.members.iter().map(Member::endpoint).collect();
    etcdctl_ok(&eps[0], &["put", "k", "v"]);
    let pages: Vec<prometheus_parse::Scrape> = eps.iter().map(|ep| scrape(ep)).collect();
    let ids: Vec<String> = pages
        .iter()
        .map(|page| {
            let id = page.samples.iter().find(|s| s.metric == "etcd_server_id").unwrap().labels.get("server_id");
            id.unwrap().to_string()
        })
        .collect();
    let leader = pages.iter().position(|p| value(p, "etcd_server_is_leader", &[]) == 1.0).expect("a leader");
    for (i, page) in pages.iter().enumerate() {
        // Who a member exchanged with: the leader with both followers, a follower with the
        // leader (at least); bytes both ways, and round trips measured for what it sent.
        let peers: Vec<&String> =
            if i == leader { ids.iter().filter(|id| **id != ids[i]).collect() } else { vec![&ids[leader]] };
        for peer in peers {
            assert!(value(page, "etcd_network_peer_sent_bytes_total", &[("To", peer)]) > 0.0, "{} to {peer}", ids[i]);
            assert!(
                value(page, "etcd_network_peer_received_bytes_total", &[("From", peer)]) > 0.0,
                "{} from {peer}",
                ids[i]
            );
        }
        let rtts: f64 = page
            .samples
            .iter()
            .filter(|s| s.metric == "etcd_network_peer_round_trip_time_seconds")
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
                _ => 0.0,
            })
            .sum();
        assert_eq!(kinds(page).get("etcd_network_peer_round_trip_time_seconds").copied(), Some("histogram"));
        if i == leader {
            assert!(rtts > 0.0, "the leader measured no round trip");
        }
    }
    cluster.members.clear();
}
