//! TLS with etcd's flags, driven by etcdctl and the `etcd-client` crate: a 3-member cluster
//! with client certificates on both ports, a client without a certificate refused, a
//! certificate's common name as the user, a certificate rotated on disk, `--auto-tls`, and
//! HTTP/1.1 over TLS on the client port. The certificates are made by the test.

use std::path::Path;
use std::sync::Arc;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use ferrocd_test_utils::{Cluster, Https, Kind, Member, etcdctl, etcdctl_ok, etcdctl_stderr};
use ferrocd_tls::testing::{Pair, Pki, Spec};
use ferrocd_tls::{Connector, Stream, TlsInfo};

/// etcdctl's flags for `pair` trusted by `ca`.
fn etcdctl_flags(ca: &Path, pair: Option<&Pair>) -> Vec<String> {
    let mut flags = vec![format!("--cacert={}", ca.display())];
    if let Some(pair) = pair {
        flags.push(format!("--cert={}", pair.cert.display()));
        flags.push(format!("--key={}", pair.key.display()));
    }
    flags
}

fn with(flags: &[String], args: &[&str]) -> Vec<String> {
    flags.iter().cloned().chain(args.iter().map(|a| (*a).to_owned())).collect()
}

fn ctl(url: &str, flags: &[String], args: &[&str]) -> std::process::Output {
    let args = with(flags, args);
    etcdctl(url, &args.iter().map(String::as_str).collect::<Vec<_>>(), None)
}

fn ctl_ok(url: &str, flags: &[String], args: &[&str]) -> String {
    let args = with(flags, args);
    etcdctl_ok(url, &args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// A single member serving `server`'s certificate and asking clients for one `pki` signed;
/// the test harness reaches it with `etcdctl_flags`.
fn client_cert_member(pki: &Pki, server: &Pair, etcdctl_flags: &[String]) -> Member {
    let flags = [
        "--cert-file",
        &path(&server.cert),
        "--key-file",
        &path(&server.key),
        "--trusted-ca-file",
        &path(&pki.ca),
        "--client-cert-auth",
    ];
    let mut member = Member::new(Kind::Ferrocd, "m1", &flags);
    member.set_https(&Https { client: true, peer: false, etcdctl: etcdctl_flags.to_vec() });
    member.spawn();
    member.wait_until_serving();
    member
}

/// The certificate `url` (`https://host:port`) presents to a client trusting `ca`.
async fn served_certificate(url: &str, ca: &Path) -> Vec<u8> {
    let (host, port) = url.trim_start_matches("https://").rsplit_once(':').unwrap();
    let info = TlsInfo { trusted_ca_file: Some(ca.to_path_buf()), ..TlsInfo::default() };
    let stream = Connector::tls(info.client_config().unwrap()).connect(host, port.parse().unwrap()).await.unwrap();
    let Stream::Tls(tls) = stream else { panic!("a TLS stream") };
    tls.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_on_both_ports_serves_etcdctl_and_the_etcd_client_crate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.issue("server", &Spec { hosts: &["127.0.0.1", "localhost"], ..Spec::default() });
    let peer = pki.issue("peer", &Spec { hosts: &["127.0.0.1"], cn: Some("member"), ..Spec::default() });
    let client = pki.issue("client", &Spec { cn: Some("client"), ..Spec::default() });
    let flags = [
        "--cert-file",
        &path(&server.cert),
        "--key-file",
        &path(&server.key),
        "--trusted-ca-file",
        &path(&pki.ca),
        "--client-cert-auth",
        "--peer-cert-file",
        &path(&peer.cert),
        "--peer-key-file",
        &path(&peer.key),
        "--peer-trusted-ca-file",
        &path(&pki.ca),
        "--peer-client-cert-auth",
        "--peer-cert-allowed-cn",
        "member",
    ];
    let ctl_flags = etcdctl_flags(&pki.ca, Some(&client));
    let https = Https { client: true, peer: true, etcdctl: ctl_flags.clone() };
    let mut cluster = Cluster::prepare_https(Kind::Ferrocd, 3, &flags, &https);
    cluster.launch();
    let urls: Vec<String> = cluster.members.iter().map(Member::url).collect();
    // Writes through every member (followers forward to the leader over peer TLS), reads
    // from every member.
    for (i, url) in urls.iter().enumerate() {
        assert_eq!(ctl_ok(url, &ctl_flags, &["put", &format!("k{i}"), "v"]), "OK\n");
    }
    for url in &urls {
        assert_eq!(ctl_ok(url, &ctl_flags, &["get", "k", "--prefix", "--keys-only"]), "k0\n\nk1\n\nk2\n\n");
    }
    let members = ctl_ok(&urls[0], &ctl_flags, &["member", "list"]);
    assert_eq!(members.matches("https://127.0.0.1:").count(), 6, "{members}");
    // Lock runs its recipe over the member's own services, as the caller.
    assert!(ctl_ok(&urls[1], &ctl_flags, &["lock", "l", "echo", "held"]).contains("held"));
    // Without a client certificate, or over plain HTTP, nothing is served.
    let refused = ctl(&urls[0], &etcdctl_flags(&pki.ca, None), &["--dial-timeout=2s", "get", "k0"]);
    assert!(!refused.status.success());
    let plain = etcdctl(&cluster.members[0].endpoint(), &["--dial-timeout=2s", "get", "k0"], None);
    assert!(!plain.status.success(), "{}", etcdctl_stderr(&plain));
    // The etcd-client crate (tonic over rustls), with the client certificate.
    let read = |p: &Path| std::fs::read(p).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(read(&pki.ca)))
        .identity(Identity::from_pem(read(&client.cert), read(&client.key)));
    let options = ConnectOptions::new().with_tls(tls);
    let mut crate_client = Client::connect([urls[2].clone()], Some(options)).await.unwrap();
    crate_client.put("from-crate", "x", None).await.unwrap();
    let got = crate_client.get("from-crate", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"x");
    let status = crate_client.status().await.unwrap();
    assert!(status.leader() != 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificates_common_name_is_the_user_when_no_token_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.issue("server", &Spec { hosts: &["127.0.0.1"], ..Spec::default() });
    let root = pki.issue("root", &Spec { cn: Some("root"), ..Spec::default() });
    let alice = pki.issue("alice", &Spec { cn: Some("alice"), ..Spec::default() });
    let mallory = pki.issue("mallory", &Spec { cn: Some("mallory"), ..Spec::default() });
    let expired = pki.issue("expired", &Spec { cn: Some("root"), expired: true, ..Spec::default() });
    let stranger =
        Pki::new(&dir.path().join("other"), "other").issue("stranger", &Spec { cn: Some("root"), ..Spec::default() });
    let root_flags = etcdctl_flags(&pki.ca, Some(&root));
    let member = client_cert_member(&pki, &server, &root_flags);
    let url = member.url();
    for args in [
        &["user", "add", "root", "--new-user-password=r"][..],
        &["user", "add", "alice", "--new-user-password=a"],
        &["role", "add", "app"],
        &["role", "grant-permission", "app", "readwrite", "app/", "--prefix"],
        &["user", "grant-role", "alice", "app"],
        &["auth", "enable"],
    ] {
        ctl_ok(&url, &root_flags, args);
    }
    let alice_flags = etcdctl_flags(&pki.ca, Some(&alice));
    assert_eq!(ctl_ok(&url, &alice_flags, &["put", "app/x", "1"]), "OK\n");
    let denied = ctl(&url, &alice_flags, &["put", "other", "1"]);
    assert!(etcdctl_stderr(&denied).contains("permission denied"), "{}", etcdctl_stderr(&denied));
    // An expired certificate, or one another CA signed, is refused at the handshake, whatever
    // name it carries.
    for refused in [&expired, &stranger] {
        let out = ctl(&url, &etcdctl_flags(&pki.ca, Some(refused)), &["--dial-timeout=2s", "get", "app/x"]);
        assert!(!out.status.success(), "{refused:?}");
    }
    // A certificate naming no user has no permission.
    let nobody = ctl(&url, &etcdctl_flags(&pki.ca, Some(&mallory)), &["get", "app/x"]);
    assert!(!nobody.status.success());
    // Lock runs as alice: her prefix is hers to lock, another is not.
    assert!(ctl_ok(&url, &alice_flags, &["lock", "app/l", "echo", "held"]).contains("held"));
    let denied = ctl(&url, &alice_flags, &["lock", "other/l", "echo", "held"]);
    assert!(!denied.status.success(), "{}", String::from_utf8_lossy(&denied.stdout));
    // A token wins over the certificate: root's password with alice's certificate is root.
    assert_eq!(ctl_ok(&url, &alice_flags, &["--user=root:r", "put", "other", "1"]), "OK\n");
    assert_eq!(ctl_ok(&url, &root_flags, &["get", "other", "--print-value-only"]), "1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let first = pki.issue("first", &Spec { hosts: &["127.0.0.1"], ..Spec::default() });
    let second = pki.issue("second", &Spec { hosts: &["127.0.0.1"], ..Spec::default() });
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server-key.pem"));
    std::fs::copy(&first.cert, &cert).unwrap();
    std::fs::copy(&first.key, &key).unwrap();
    let mut member = Member::new(Kind::Ferrocd, "m1", &["--cert-file", &path(&cert), "--key-file", &path(&key)]);
    let flags = etcdctl_flags(&pki.ca, None);
    member.set_https(&Https { client: true, peer: false, etcdctl: flags.clone() });
    member.spawn();
    member.wait_until_serving();
    let url = member.url();
    let der = |p: &Path| {
        let pem = std::fs::read(p).unwrap();
        let der: rustls_pki_types::CertificateDer<'_> = rustls_pki_types::pem::PemObject::from_pem_slice(&pem).unwrap();
        der.as_ref().to_vec()
    };
    assert_eq!(served_certificate(&url, &pki.ca).await, der(&first.cert));
    std::fs::copy(&second.key, &key).unwrap();
    std::fs::copy(&second.cert, &cert).unwrap();
    assert_eq!(served_certificate(&url, &pki.ca).await, der(&second.cert));
    assert_eq!(ctl_ok(&url, &flags, &["put", "k", "v"]), "OK\n");
    assert!(member.log().contains("reloaded the TLS certificate"));
}

#[test]
fn auto_tls_serves_clients_and_peers_with_generated_certificates() {
    let skip = vec!["--insecure-transport=false".into(), "--insecure-skip-tls-verify".into()];
    let https = Https { client: true, peer: true, etcdctl: skip };
    let mut cluster = Cluster::prepare_https(Kind::Ferrocd, 3, &["--auto-tls", "--peer-auto-tls"], &https);
    cluster.launch();
    let flags = &https.etcdctl;
    let url = cluster.members[2].url();
    assert_eq!(ctl_ok(&url, flags, &["put", "k", "v"]), "OK\n");
    assert_eq!(ctl_ok(&cluster.members[0].url(), flags, &["get", "k", "--print-value-only"]), "v\n");
    for member in &cluster.members {
        for side in ["client", "peer"] {
            let fixtures = member.data_dir().join("fixtures").join(side);
            assert!(fixtures.join("cert.pem").exists() && fixtures.join("key.pem").exists(), "{fixtures:?}");
        }
    }
    // The same certificates after a restart.
    let before = std::fs::read(cluster.members[0].data_dir().join("fixtures/client/cert.pem")).unwrap();
    cluster.members[0].stop();
    cluster.members[0].restart();
    assert_eq!(std::fs::read(cluster.members[0].data_dir().join("fixtures/client/cert.pem")).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_over_tls_shares_the_client_port_with_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.issue("server", &Spec { hosts: &["127.0.0.1"], ..Spec::default() });
    let mut member =
        Member::new(Kind::Ferrocd, "m1", &["--cert-file", &path(&server.cert), "--key-file", &path(&server.key)]);
    member.set_https(&Https { client: true, peer: false, etcdctl: etcdctl_flags(&pki.ca, None) });
    member.spawn();
    member.wait_until_serving();
    // A client offering only HTTP/1.1 in ALPN (as curl over https does without --http2).
    let info = TlsInfo { trusted_ca_file: Some(pki.ca.clone()), ..TlsInfo::default() };
    let mut config = (*info.client_config().unwrap()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (host, port) = member.endpoint().rsplit_once(':').map(|(h, p)| (h.to_owned(), p.parse().unwrap())).unwrap();
    let mut stream = Connector::tls(Arc::new(config)).connect(&host, port).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""health":"true""#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferrocd_client_and_ferrocdctl_speak_tls_with_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "ca");
    let server = pki.issue("server", &Spec { hosts: &["127.0.0.1"], ..Spec::default() });
    let client = pki.issue("client", &Spec { cn: Some("client"), ..Spec::default() });
    let flags = etcdctl_flags(&pki.ca, Some(&client));
    let member = client_cert_member(&pki, &server, &flags);
    let url = member.url();
    // The SDK with the CA and a client certificate: served; without the certificate: refused.
    let read = |p: &Path| std::fs::read(p).unwrap();
    let tls = ferrocd_client::TlsOptions::new().with_ca(read(&pki.ca));
    let with_identity = tls.clone().with_identity(read(&client.cert), read(&client.key));
    let options = |tls| {
        ferrocd_client::ConnectOptions::new().with_tls(tls).with_connect_timeout(std::time::Duration::from_secs(2))
    };
    let sdk = ferrocd_client::Client::connect(std::slice::from_ref(&url), options(with_identity)).await.unwrap();
    sdk.put("tls/k", "v", None).await.unwrap();
    assert_eq!(sdk.get("tls/k", None).await.unwrap().kvs[0].value, b"v");
    let refused = match ferrocd_client::Client::connect(std::slice::from_ref(&url), options(tls)).await {
        Ok(anonymous) => anonymous.get("tls/k", None).await.is_err(),
        Err(_) => true,
    };
    assert!(refused, "a client without a certificate was served");
    // ferrocdctl with etcdctl's TLS flags prints what etcdctl prints, on an https:// endpoint
    // and on a bare host:port (TLS implied by the flags).
    let ferrocdctl = |args: &[String]| {
        std::process::Command::new(ferrocd_test_utils::ferrocdctl_bin()).args(args).output().expect("ferrocdctl")
    };
    for endpoint in [url.clone(), member.endpoint()] {
        for args in [&["get", "tls/k", "-w", "json"][..], &["put", "tls/k", "w"], &["get", "tls/", "--prefix"]] {
            let args = with(&flags, args);
            let args: Vec<String> = std::iter::once(format!("--endpoints={endpoint}")).chain(args).collect();
            let ours = ferrocdctl(&args);
            let reference = ctl(&url, &[], &args[1..].iter().map(String::as_str).collect::<Vec<_>>());
            assert!(ours.status.success(), "{args:?}: {}", String::from_utf8_lossy(&ours.stderr));
            assert_eq!(String::from_utf8_lossy(&ours.stdout), String::from_utf8_lossy(&reference.stdout), "{args:?}");
        }
    }
    // Without a client certificate ferrocdctl is refused too.
    let anonymous = ferrocdctl(&[
        format!("--endpoints={url}"),
        format!("--cacert={}", pki.ca.display()),
        "--dial-timeout=2s".into(),
        "get".into(),
        "tls/k".into(),
    ]);
    assert!(!anonymous.status.success());
}
