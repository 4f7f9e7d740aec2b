//! Repairs the HTTP/2 `:authority` some etcd clients send.
//!
//! etcd's Go clients have sent values that are not URI authorities: the 3.4 client sends its
//! endpoint URL (`http://127.0.0.1:2379`), 3.5.0 sends `#initially=[https://host:2379]`. Go's
//! HTTP/2 server takes them; the `h2` crate (under tonic) resets such streams as malformed, so
//! those clients could not talk to ferrocd at all. [`AuthorityFix`] sits between the socket and
//! the HTTP/2 server and, on a connection whose first request carries such a value, re-encodes
//! every request's header block with the authority repaired (the host and port taken out of the
//! URL) or, when nothing usable is in it, without one. Nothing else changes.
//!
//! Every other connection costs one look at its first header block: the bytes are handed on as
//! they came and, from then on, reads go straight to the socket. (HPACK is stateful: once a
//! block has been handed on unchanged, later blocks can only be handed on unchanged too, so the
//! decision is made once per connection; clients send one authority per connection.)

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, BytesMut};
use loona_hpack::{Decoder, Encoder};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Every HTTP/2 peer accepts frames of this size (the protocol's minimum maximum).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this closes the connection (etcd's requests carry a few hundred
/// bytes of headers).
const MAX_BLOCK: usize = 1 << 20;

/// What a header block's `:authority` becomes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Repair {
    /// A URI authority (or no `:authority` at all): nothing to do.
    Valid,
    /// The authority found inside the value.
    Replace(Vec<u8>),
    /// Nothing usable: the header is dropped.
    Drop,
}

/// Classifies an `:authority` value.
pub(crate) fn repair(value: &[u8]) -> Repair {
    let valid = |v: &[u8]| !v.is_empty() && http::uri::Authority::try_from(v).is_ok();
    if valid(value) {
        return Repair::Valid;
    }
    let text = String::from_utf8_lossy(value);
    let after_scheme = text.find("://").map_or(&*text, |i| &text[i + 3..]);
    // The authority ends at a path, a list separator or the list's closing bracket (one that
    // closes no IPv6 literal's).
    let mut open = false;
    let end = after_scheme
        .find(|c| match c {
            '[' => {
                open = true;
                false
            }
            ']' if open => {
                open = false;
                false
            }
            _ => matches!(c, '/' | ';' | ',' | ']' | '#' | '?'),
        })
        .unwrap_or(after_scheme.len());
    let candidate = &after_scheme.as_bytes()[..end];
    if valid(candidate) { Repair::Replace(candidate.to_vec()) } else { Repair::Drop }
}

#[derive(Debug)]
enum Mode {
    /// Matching the client preface; the count of bytes matched so far.
    Preface(usize),
    /// Handing frames on until the first header block is complete.
    Sniff,
    /// Every header block is decoded and re-encoded.
    Rewrite,
    /// Bytes go through untouched.
    Pass,
}

/// A header block being collected from a HEADERS frame and its CONTINUATIONs.
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    fragments: BytesMut,
    /// The frames as received, handed on as they are if the block needs no repair.
    raw: BytesMut,
}

/// The sans-IO core: consumes the client's bytes, produces what the HTTP/2 server reads.
pub(crate) struct Fixer {
    mode: Mode,
    block: Option<Block>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl std::fmt::Debug for Fixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixer").field("mode", &self.mode).field("block", &self.block).finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

impl Fixer {
    pub(crate) fn new() -> Self {
        Self { mode: Mode::Preface(0), block: None, decoder: Decoder::new(), encoder: Encoder::new() }
    }

    /// True once every later byte can go through untouched.
    pub(crate) fn passes(&self) -> bool {
        matches!(self.mode, Mode::Pass)
    }

    /// Moves everything complete in `input` to `output`, repaired as needed.
    pub(crate) fn feed(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> io::Result<()> {
        loop {
            match self.mode {
                Mode::Pass => {
                    output.extend_from_slice(&input.split());
                    return Ok(());
                }
                Mode::Preface(matched) => {
                    let n = input.len().min(PREFACE.len() - matched);
                    if input[..n] != PREFACE[matched..matched + n] {
                        // Not HTTP/2 with prior knowledge: none of our business.
                        self.mode = Mode::Pass;
                        continue;
                    }
                    output.extend_from_slice(&input.split_to(n));
                    if matched + n < PREFACE.len() {
                        self.mode = Mode::Preface(matched + n);
                        return Ok(());
                    }
                    self.mode = Mode::Sniff;
                }
                Mode::Sniff | Mode::Rewrite => {
                    if input.len() < FRAME_HEADER {
                        return Ok(());
                    }
                    let len = (usize::from(input[0]) << 16) | (usize::from(input[1]) << 8) | usize::from(input[2]);
                    if input.len() < FRAME_HEADER + len {
                        return Ok(());
                    }
                    let frame = input.split_to(FRAME_HEADER + len);
                    self.frame(frame, output)?;
                }
            }
        }
    }

    fn frame(&mut self, frame: BytesMut, output: &mut BytesMut) -> io::Result<()> {
        let kind = frame[3];
        let flags = frame[4];
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        match (kind, self.block.as_mut()) {
            (HEADERS, None) => {
                let mut payload = &frame[FRAME_HEADER..];
                let mut padding = 0;
                if flags & PADDED != 0 {
                    let (&pad, rest) =
                        payload.split_first().ok_or_else(|| invalid("HEADERS frame without its padding length"))?;
                    padding = usize::from(pad);
                    payload = rest;
                }
                if flags & PRIORITY != 0 {
                    payload = payload.get(5..).ok_or_else(|| invalid("HEADERS frame too short for its priority"))?;
                }
                let keep = payload
                    .len()
                    .checked_sub(padding)
                    .ok_or_else(|| invalid("HEADERS frame padding exceeds its payload"))?;
                let fragments = BytesMut::from(&payload[..keep]);
                let raw = if matches!(self.mode, Mode::Sniff) { frame } else { BytesMut::new() };
                self.block = Some(Block { stream, end_stream: flags & END_STREAM != 0, fragments, raw });
            }
            (CONTINUATION, Some(block)) if block.stream == stream => {
                block.fragments.extend_from_slice(&frame[FRAME_HEADER..]);
                if matches!(self.mode, Mode::Sniff) {
                    block.raw.extend_from_slice(&frame);
                }
            }
            (_, Some(_)) => return Err(invalid("a header block was interrupted by another frame")),
            (_, None) => {
                output.extend_from_slice(&frame);
                return Ok(());
            }
        }
        let block = self.block.as_ref().expect("a block is being collected");
        if block.fragments.len() > MAX_BLOCK {
            return Err(invalid("header block too large"));
        }
        if flags & END_HEADERS != 0 {
            let block = self.block.take().expect("a block is being collected");
            self.complete(block, output)?;
        }
        Ok(())
    }

    fn complete(&mut self, block: Block, output: &mut BytesMut) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut authority = Repair::Valid;
        self.decoder
            .decode_with_cb(&block.fragments, |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
                if &*name == b":authority" {
                    authority = repair(&value);
                }
                headers.push((name.into_owned(), value.into_owned()));
            })
            .map_err(|e| invalid(format!("undecodable header block: {e}")))?;
        if matches!(self.mode, Mode::Sniff) {
            if authority == Repair::Valid {
                output.extend_from_slice(&block.raw);
                self.mode = Mode::Pass;
                return Ok(());
            }
            tracing::debug!(authority = ?headers.iter().find(|h| h.0 == b":authority").map(|h| String::from_utf8_lossy(&h.1)), "repairing the HTTP/2 authority of this connection");
            self.mode = Mode::Rewrite;
        }
        let mut encoded = Vec::with_capacity(block.fragments.len() + 16);
        for (name, value) in &headers {
            let value = match (&name[..], &authority) {
                (b":authority", Repair::Drop) => continue,
                (b":authority", Repair::Replace(fixed)) => fixed,
                _ => value,
            };
            self.encoder.encode_header_into((name, value), &mut encoded)?;
        }
        let chunks: Vec<&[u8]> = if encoded.is_empty() { vec![&[]] } else { encoded.chunks(MAX_FRAME).collect() };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let (kind, mut flags) =
                if i == 0 { (HEADERS, if block.end_stream { END_STREAM } else { 0 }) } else { (CONTINUATION, 0) };
            if i == last {
                flags |= END_HEADERS;
            }
            let len = u32::try_from(chunk.len()).expect("chunks are at most 16 KiB");
            output.put_slice(&len.to_be_bytes()[1..]);
            output.put_u8(kind);
            output.put_u8(flags);
            output.put_u32(block.stream);
            output.put_slice(chunk);
        }
        Ok(())
    }
}

/// A connection whose HTTP/2 `:authority` is repaired on the way in (see the module docs).
#[derive(Debug)]
pub(crate) struct AuthorityFix<S> {
    inner: S,
    fixer: Fixer,
    input: BytesMut,
    output: BytesMut,
}

impl<S> AuthorityFix<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, fixer: Fixer::new(), input: BytesMut::new(), output: BytesMut::new() }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.fixer.passes() {
                // The buffers are not needed any more: a long-lived connection keeps none.
                if this.input.capacity() != 0 || this.output.capacity() != 0 {
                    this.input = BytesMut::new();
                    this.output = BytesMut::new();
                }
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.input.reserve(MAX_FRAME);
            let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.input))?;
            if n == 0 {
                // End of stream: whatever is left (an incomplete frame) is the server's to judge.
                let rest = this.input.split();
                if rest.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                this.output = rest;
                continue;
            }
            this.fixer.feed(&mut this.input, &mut this.output)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: Connected> Connected for AuthorityFix<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    type Headers = Vec<(Vec<u8>, Vec<u8>)>;

    #[derive(Debug, Clone)]
    struct Request {
        headers: Headers,
        end_stream: bool,
        /// Where the header block is cut into CONTINUATION frames (fractions of its length).
        cuts: Vec<f64>,
        padding: Option<u8>,
        priority: bool,
        body: Vec<u8>,
    }

    fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        out.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
    }

    /// What a client sends: the preface, SETTINGS, then each request on its own stream.
    fn client_bytes(requests: &[Request]) -> Vec<u8> {
        let mut encoder = Encoder::new();
        let mut out = PREFACE.to_vec();
        frame(&mut out, 0x4, 0, 0, &[]);
        for (i, request) in requests.iter().enumerate() {
            let stream = 1 + 2 * u32::try_from(i).unwrap();
            let block = encoder.encode(request.headers.iter().map(|(n, v)| (&n[..], &v[..])));
            let mut cuts: Vec<usize> = request.cuts.iter().map(|c| (c * block.len() as f64) as usize).collect();
            cuts.sort_unstable();
            cuts.dedup();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts.into_iter().chain([block.len()]) {
                if cut > start || pieces.is_empty() && cut == block.len() {
                    pieces.push(&block[start..cut.max(start)]);
                    start = cut.max(start);
                }
            }
            let last = pieces.len() - 1;
            for (j, piece) in pieces.into_iter().enumerate() {
                let end_headers = if j == last { END_HEADERS } else { 0 };
                if j == 0 {
                    let mut flags = end_headers | if request.end_stream { END_STREAM } else { 0 };
                    let mut payload = Vec::new();
                    if let Some(pad) = request.padding {
                        flags |= PADDED;
                        payload.push(pad);
                    }
                    if request.priority {
                        flags |= PRIORITY;
                        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
                    }
                    payload.extend_from_slice(piece);
                    payload.extend(std::iter::repeat_n(0, usize::from(request.padding.unwrap_or(0))));
                    frame(&mut out, HEADERS, flags, stream, &payload);
                } else {
                    frame(&mut out, CONTINUATION, end_headers, stream, piece);
                }
            }
            if !request.body.is_empty() {
                frame(&mut out, 0x0, END_STREAM, stream, &request.body);
            }
        }
        out
    }

    /// What the server sees: each stream's decoded headers and END_STREAM flag, and every
    /// other frame as it is.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Headers { stream: u32, end_stream: bool, headers: Headers },
        Other(Vec<u8>),
    }

    fn server_view(bytes: &[u8]) -> Vec<Seen> {
        assert_eq!(&bytes[..PREFACE.len()], PREFACE);
        let mut rest = &bytes[PREFACE.len()..];
        let mut decoder = Decoder::new();
        let mut seen = Vec::new();
        let mut block: Option<(u32, bool, Vec<u8>)> = None;
        while !rest.is_empty() {
            let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            let mut payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            let whole = &rest[..FRAME_HEADER + len];
            rest = &rest[FRAME_HEADER + len..];
            match kind {
                HEADERS => {
                    let mut padding = 0;
                    if flags & PADDED != 0 {
                        padding = usize::from(payload[0]);
                        payload = &payload[1..];
                    }
                    if flags & PRIORITY != 0 {
                        payload = &payload[5..];
                    }
                    block = Some((stream, flags & END_STREAM != 0, payload[..payload.len() - padding].to_vec()));
                }
                CONTINUATION => block.as_mut().unwrap().2.extend_from_slice(payload),
                _ => {
                    seen.push(Seen::Other(whole.to_vec()));
                    continue;
                }
            }
            if flags & END_HEADERS != 0 {
                let (stream, end_stream, fragments) = block.take().unwrap();
                let mut headers = Vec::new();
                decoder.decode_with_cb(&fragments, |n, v| headers.push((n.into_owned(), v.into_owned()))).unwrap();
                seen.push(Seen::Headers { stream, end_stream, headers });
            }
        }
        assert!(block.is_none());
        seen
    }

    /// Runs `bytes` through a fixer, `reads` bytes at a time (cycling).
    fn run(bytes: &[u8], reads: &[usize]) -> (Vec<u8>, bool) {
        let mut fixer = Fixer::new();
        let (mut input, mut output) = (BytesMut::new(), BytesMut::new());
        let mut at = 0;
        for &n in reads.iter().cycle() {
            if at == bytes.len() {
                break;
            }
            let end = (at + n.max(1)).min(bytes.len());
            input.extend_from_slice(&bytes[at..end]);
            at = end;
            fixer.feed(&mut input, &mut output).unwrap();
        }
        assert!(input.is_empty(), "nothing left behind");
        (output.to_vec(), fixer.passes())
    }

    fn request(authority: &str, path: &str) -> Request {
        Request {
            headers: vec![
                (b":method".to_vec(), b"POST".to_vec()),
                (b":scheme".to_vec(), b"http".to_vec()),
                (b":path".to_vec(), path.as_bytes().to_vec()),
                (b":authority".to_vec(), authority.as_bytes().to_vec()),
                (b"content-type".to_vec(), b"application/grpc".to_vec()),
                (b"te".to_vec(), b"trailers".to_vec()),
            ],
            end_stream: false,
            cuts: vec![],
            padding: None,
            priority: false,
            body: b"\0\0\0\0\x02\x0a\x00".to_vec(),
        }
    }

    fn expected(requests: &[Request], fixed: Option<&str>) -> Vec<Seen> {
        let mut want = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            let stream = 1 + 2 * u32::try_from(i).unwrap();
            let headers = r
                .headers
                .iter()
                .filter_map(|(n, v)| match (&n[..], fixed) {
                    (b":authority", Some("")) => None,
                    (b":authority", Some(f)) => Some((n.clone(), f.as_bytes().to_vec())),
                    _ => Some((n.clone(), v.clone())),
                })
                .collect();
            want.push(Seen::Headers { stream, end_stream: r.end_stream, headers });
            if !r.body.is_empty() {
                let mut data = Vec::new();
                frame(&mut data, 0x0, END_STREAM, stream, &r.body);
                want.push(Seen::Other(data));
            }
        }
        let mut settings = Vec::new();
        frame(&mut settings, 0x4, 0, 0, &[]);
        want.insert(0, Seen::Other(settings));
        want
    }

    #[test]
    fn repair_takes_the_authority_out_of_urls() {
        assert_eq!(repair(b"127.0.0.1:2379"), Repair::Valid);
        assert_eq!(repair(b"[::1]:2379"), Repair::Valid);
        assert_eq!(repair(b"localhost"), Repair::Valid);
        assert_eq!(repair(b"http://127.0.0.1:2379"), Repair::Replace(b"127.0.0.1:2379".to_vec()));
        assert_eq!(repair(b"https://[::1]:2379/"), Repair::Replace(b"[::1]:2379".to_vec()));
        assert_eq!(
            repair(b"#initially=[https://example.com:2379;https://b:2379]"),
            Repair::Replace(b"example.com:2379".to_vec())
        );
        assert_eq!(repair(b""), Repair::Drop);
        assert_eq!(repair(b"http://"), Repair::Drop);
        assert_eq!(repair(b"a b c"), Repair::Drop);
    }

    #[test]
    fn a_valid_authority_passes_untouched_and_stops_the_inspection() {
        let requests = vec![request("127.0.0.1:2379", "/etcdserverpb.KV/Range"); 3];
        let bytes = client_bytes(&requests);
        let (out, passes) = run(&bytes, &[7]);
        assert_eq!(out, bytes);
        assert!(passes);
    }

    #[test]
    fn a_url_authority_is_repaired_on_every_request_of_the_connection() {
        let mut requests = vec![request("http://127.0.0.1:2379", "/etcdserverpb.KV/Range"); 4];
        requests[1].cuts = vec![0.3, 0.6];
        requests[2].padding = Some(9);
        requests[2].priority = true;
        requests[3].end_stream = true;
        requests[3].body.clear();
        let (out, passes) = run(&client_bytes(&requests), &[1, 100, 13]);
        assert!(!passes);
        assert_eq!(server_view(&out), expected(&requests, Some("127.0.0.1:2379")));
    }

    #[test]
    fn an_unusable_authority_is_dropped() {
        let requests = vec![request("#initially=[]", "/etcdserverpb.Maintenance/Status"); 2];
        let (out, _) = run(&client_bytes(&requests), &[4096]);
        assert_eq!(server_view(&out), expected(&requests, Some("")));
    }

    #[test]
    fn other_protocols_and_broken_frames() {
        let http1 = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
        let (out, passes) = run(http1, &[3]);
        assert_eq!(out, http1);
        assert!(passes);
        // A header block interrupted by a frame of another kind is refused.
        let mut bytes = PREFACE.to_vec();
        frame(&mut bytes, HEADERS, 0, 1, b"\x82");
        frame(&mut bytes, 0x0, 0, 1, b"x");
        let mut fixer = Fixer::new();
        let err = fixer.feed(&mut BytesMut::from(&bytes[..]), &mut BytesMut::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_large_block_is_split_into_continuations() {
        let mut r = request("http://h:1", "/p");
        r.headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let requests = vec![r];
        let (out, _) = run(&client_bytes(&requests), &[65_536]);
        assert_eq!(server_view(&out), expected(&requests, Some("h:1")));
    }

    /// Reads everything through the wrapper, `chunk` bytes at a time.
    async fn read_through(bytes: Vec<u8>, chunk: usize) -> Vec<u8> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (mut client, server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            client.write_all(&bytes).await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut fixed = AuthorityFix::new(server);
        let mut out = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = fixed.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        out
    }

    #[tokio::test]
    async fn the_wrapper_repairs_or_passes_a_connection_read_in_small_pieces() {
        let valid = vec![request("127.0.0.1:2379", "/etcdserverpb.KV/Put"); 3];
        let bytes = client_bytes(&valid);
        assert_eq!(read_through(bytes.clone(), 5).await, bytes);
        let broken = vec![request("http://127.0.0.1:2379", "/etcdserverpb.KV/Put"); 3];
        let out = read_through(client_bytes(&broken), 7).await;
        assert_eq!(server_view(&out), expected(&broken, Some("127.0.0.1:2379")));
    }

    fn arb_request(authority: &'static str) -> impl Strategy<Value = Request> {
        (
            prop::collection::vec(("x-[a-c]{1,3}", "[a-z0-9]{0,40}"), 0..4),
            "/[A-Za-z.]{1,20}/[A-Za-z]{1,10}",
            any::<bool>(),
            prop::collection::vec(0.0..1.0f64, 0..3),
            prop::option::of(0u8..20),
            any::<bool>(),
            prop::collection::vec(any::<u8>(), 0..40),
        )
            .prop_map(move |(extra, path, end_stream, cuts, padding, priority, body)| {
                let mut r = request(authority, &path);
                r.headers.extend(extra.into_iter().map(|(n, v)| (n.into_bytes(), v.into_bytes())));
                Request { end_stream, cuts, padding, priority, body, ..r }
            })
    }

    fn arb_connection() -> impl Strategy<Value = (&'static str, Option<&'static str>, Vec<Request>)> {
        prop_oneof![
            Just(("127.0.0.1:2379", None)),
            Just(("http://127.0.0.1:2379", Some("127.0.0.1:2379"))),
            Just(("#initially=[https://example.com:2379]", Some("example.com:2379"))),
            Just(("%%%", Some(""))),
        ]
        .prop_flat_map(|(authority, fixed)| {
            (Just(authority), Just(fixed), prop::collection::vec(arb_request(authority), 1..6))
        })
    }

    proptest! {
        /// Whatever the frames and however the bytes arrive, the server sees the client's
        /// requests, with the authority repaired exactly when the first one needs it.
        #[test]
        fn the_server_sees_the_requests_with_the_authority_repaired(
            (_, fixed, requests) in arb_connection(),
            reads in prop::collection::vec(1usize..300, 1..8),
        ) {
            let bytes = client_bytes(&requests);
            let (out, passes) = run(&bytes, &reads);
            prop_assert_eq!(passes, fixed.is_none());
            if fixed.is_none() {
                prop_assert_eq!(out, bytes);
            } else {
                prop_assert_eq!(server_view(&out), expected(&requests, fixed));
            }
        }
    }
}
