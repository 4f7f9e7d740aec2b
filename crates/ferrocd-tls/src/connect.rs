//! TLS on the wire: a listener's handshakes ([`accept`]) and a tonic channel's connections
//! ([`Connector`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream as FuturesStream;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector, server};
use tokio_stream::wrappers::ReceiverStream;

/// How long a connection may take over its handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS connections of `incoming`: each handshake runs on its own task (a slow or silent
/// client holds up nobody), a failed one is logged and dropped as etcd drops it, and the
/// stream ends when `incoming` does. Dropping the stream stops the accepting.
pub fn accept<S, I>(
    incoming: I,
    config: Arc<ServerConfig>,
) -> impl FuturesStream<Item = io::Result<server::TlsStream<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    I: FuturesStream<Item = io::Result<(S, String)>> + Send + 'static,
{
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        use futures::StreamExt as _;
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = tx.closed() => return,
            };
            let Some(conn) = next else { return };
            let (stream, remote) = match conn {
                Ok(conn) => conn,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(remote_addr = %remote, error = %e, "rejected connection"),
                    Err(_) => tracing::warn!(remote_addr = %remote, "rejected connection: TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A connection a [`Connector`] opened: plain TCP or TLS over it.
#[derive(Debug)]
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Opens a tonic channel's connections (`Endpoint::connect_with_connector*`): TCP with
/// `TCP_NODELAY` to the URI's host and port, then TLS when this connector has a configuration.
/// TLS is the connector's decision, not the URI scheme's, so the channel may be given an
/// `http://` URI for an `https://` member (tonic refuses an `https` URI it does not secure itself).
#[derive(Debug, Clone, Default)]
pub struct Connector {
    tls: Option<Arc<ClientConfig>>,
}

impl Connector {
    /// Plain TCP.
    pub fn plain() -> Self {
        Self { tls: None }
    }

    /// TLS with `config`, the server's name taken from the URI's host.
    pub fn tls(config: Arc<ClientConfig>) -> Self {
        Self { tls: Some(config) }
    }

    /// Connects to `host:port` (an IPv6 host in brackets or not).
    ///
    /// # Errors
    /// The connection or the handshake failed, or the host is no valid server name.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<Stream> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let Some(config) = &self.tls else { return Ok(Stream::Plain(tcp)) };
        let name = ServerName::try_from(host.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tls = TlsConnector::from(Arc::clone(config)).connect(name, tcp).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a URI without a host"))?;
            let default = if uri.scheme_str() == Some("https") { 443 } else { 80 };
            let stream = this.connect(host, uri.port_u16().unwrap_or(default)).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::TlsInfo;
    use crate::testing::{Pki, Spec};

    /// A listener with `server`'s TLS on a free loopback port: echoes one line per connection,
    /// then says who the client was (its certificate's common name).
    async fn listen(server: &TlsInfo) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let incoming = TcpListenerStream::new(listener).map(|c| c.map(|s| (s, "test".to_owned())));
        let mut tls = Box::pin(accept(incoming, server.server_config().unwrap()));
        tokio::spawn(async move {
            while let Some(Ok(mut stream)) = tls.next().await {
                let cn = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first().and_then(crate::common_name))
                    .unwrap_or_default();
                let _ = stream.write_all(format!("hello {cn}").as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        port
    }

    async fn greeting(client: &TlsInfo, port: u16) -> io::Result<String> {
        let mut stream = Connector::tls(client.client_config().unwrap()).connect("127.0.0.1", port).await?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await?;
        Ok(text)
    }

    #[tokio::test]
    async fn mutual_tls_checks_the_ca_the_validity_the_crl_and_the_allowed_cn() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::new(dir.path(), "ca");
        let other = Pki::new(&dir.path().join("other"), "other");
        let server = pki.issue("server", &Spec { hosts: &["127.0.0.1", "localhost"], ..Spec::default() });
        let alice = pki.issue("alice", &Spec { cn: Some("alice"), ..Spec::default() });
        let bob = pki.issue("bob", &Spec { cn: Some("bob"), ..Spec::default() });
        let expired = pki.issue("expired", &Spec { cn: Some("alice"), expired: true, ..Spec::default() });
        let stranger = other.issue("stranger", &Spec { cn: Some("alice"), ..Spec::default() });
        let crl = pki.revoke("crl", &bob);
        let serving = TlsInfo {
            cert_file: Some(server.cert.clone()),
            key_file: Some(server.key.clone()),
            trusted_ca_file: Some(pki.ca.clone()),
            client_cert_auth: true,
            crl_file: Some(crl),
            ..TlsInfo::default()
        };
        let port = listen(&serving).await;
        let client = |pair: Option<&crate::testing::Pair>| TlsInfo {
            cert_file: pair.map(|p| p.cert.clone()),
            key_file: pair.map(|p| p.key.clone()),
            trusted_ca_file: Some(pki.ca.clone()),
            ..TlsInfo::default()
        };
        assert_eq!(greeting(&client(Some(&alice)), port).await.unwrap(), "hello alice");
        for refused in [None, Some(&bob), Some(&expired), Some(&stranger)] {
            let answer = greeting(&client(refused), port).await;
            assert!(answer.as_ref().is_ok_and(String::is_empty) || answer.is_err(), "{refused:?}: {answer:?}");
        }
        // A client that does not trust the server's CA refuses it.
        let doubting = TlsInfo { trusted_ca_file: Some(other.ca.clone()), ..client(Some(&alice)) };
        assert!(greeting(&doubting, port).await.is_err());
        // Only one common name, when the listener allows one.
        let port = listen(&TlsInfo { allowed_cn: Some("bob".into()), crl_file: None, ..serving.clone() }).await;
        assert_eq!(greeting(&client(Some(&bob)), port).await.unwrap(), "hello bob");
        let answer = greeting(&client(Some(&alice)), port).await;
        assert!(answer.as_ref().is_ok_and(String::is_empty) || answer.is_err(), "{answer:?}");
        // A server certificate is checked against the name dialled.
        let misnamed = pki.issue("misnamed", &Spec { hosts: &["example.com"], ..Spec::default() });
        let port =
            listen(&TlsInfo { cert_file: Some(misnamed.cert), key_file: Some(misnamed.key), ..serving.clone() }).await;
        assert!(greeting(&client(Some(&alice)), port).await.is_err());
        let skipping = TlsInfo { insecure_skip_verify: true, ..client(Some(&alice)) };
        assert_eq!(greeting(&skipping, port).await.unwrap(), "hello alice");
    }
}
