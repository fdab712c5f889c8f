//! HTTP/1.1 on one connection, one exchange at a time: the request written
//! from a head the lane keeps as bytes, the answer parsed in place with
//! `httparse` (the parser hyper itself uses).
//!
//! Why not hyper's client connection: per request it hands the request and
//! its answer between the sender and the connection's dispatcher through
//! channels, builds a header map each way and a body channel, none of which
//! a lane sending one small request after another needs. That was a tenth
//! of crosscast's CPU per SMS message (BENCHMARKS.md). TLS (rustls), HTTP/2
//! (h2) and the rare token exchanges (reqwest) stay with their crates.
//!
//! What is read, as RFC 9112 gives it: interim (1xx) answers skipped; a
//! body framed by `Transfer-Encoding: chunked` (trailers read and dropped),
//! `Content-Length`, or the connection's end; none for `HEAD`, 204 and 304.
//! A connection is kept for the next request only if the answer was read
//! whole and neither side asked to close it.

use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

/// The stream under a connection: TCP, or TLS over TCP.
pub type Io = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Largest answer head (status line and headers) read.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in an answer head (hyper's default).
const MAX_HEADERS: usize = 100;
/// A connection idle longer than this is checked for a close by the
/// provider before a request goes on it (a request written into a closed
/// connection would fail, though it could have gone on another). Servers
/// close idle connections after seconds (5 s is the shortest common
/// default), so one used within this time is taken as open: checking it
/// every time would cost a system call per message.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;

/// An HTTP/1.1 connection: one exchange at a time.
pub struct H1 {
    /// Boxed: a TLS session is a kilobyte, and connections move.
    io: Box<TokioIo<Io>>,
    /// Bytes read and not consumed yet, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// The request being written: kept for its allocation.
    out: Vec<u8>,
    /// The connection can carry no more requests. Set while an exchange is
    /// under way, so one abandoned midway (its deadline passed) leaves the
    /// connection given up.
    ended: bool,
    /// When the last exchange ended.
    idle_since: Instant,
}

/// An answer as read: status, the headers asked for (names in lower case,
/// in the order sent) and at most the body limit's worth of body.
#[derive(Debug, PartialEq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers `keep` chose.
    pub headers: Vec<(String, String)>,
    /// The body, cut at the limit.
    pub body: Vec<u8>,
}

/// Why an exchange gave no answer.
#[derive(Debug)]
pub enum Failure {
    /// The connection was closed before any of the request left: it may go
    /// on another connection.
    Unsent,
    /// The request left (or may have) and no whole answer came.
    Failed(String),
}

/// What a request looks like on the wire, apart from its head.
pub struct Request<'a> {
    /// The head without its `Content-Length` and final empty line: request
    /// line and header lines, each ending in CRLF.
    pub head: &'a [u8],
    /// The body.
    pub body: &'a [u8],
    /// A `HEAD` request: its answer has no body, whatever it says.
    pub head_only: bool,
    /// Sends `Content-Length: 0` for an empty body (methods whose requests
    /// carry a body: POST, PUT, PATCH).
    pub sized: bool,
    /// The request asks for the connection to be closed after its answer.
    pub close: bool,
}

/// How an answer's body is framed.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

impl H1 {
    /// A connection over `io`, ready for its first request.
    pub fn new(io: Io) -> H1 {
        H1 {
            io: Box::new(TokioIo::new(io)),
            buf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            ended: false,
            idle_since: Instant::now(),
        }
    }

    /// True once the connection can carry no more requests.
    pub fn is_closed(&self) -> bool {
        self.ended
    }

    /// Sends `request` and reads its answer, keeping of its headers those
    /// `keep` accepts and of its body at most `max_body` bytes.
    pub async fn exchange(
        &mut self,
        request: &Request<'_>,
        keep: impl Fn(&str) -> bool,
        max_body: usize,
    ) -> Result<Response, Failure> {
        if !self.usable().await {
            return Err(Failure::Unsent);
        }
        self.ended = true;
        self.write(request).await?;
        let (response, reusable) = self
            .read(request.head_only, keep, max_body)
            .await
            .map_err(Failure::Failed)?;
        if reusable && !request.close {
            // What the answer left unread: nothing, from a well-behaved
            // provider; anything else would be read as the next answer.
            self.ended = self.pos != self.buf.len();
            self.buf.clear();
            self.pos = 0;
            if self.buf.capacity() > 4 * READ_CHUNK {
                // A long answer's buffer is not kept for the next.
                self.buf = Vec::new();
            }
            self.idle_since = Instant::now();
        }
        Ok(response)
    }

    /// False if the connection can carry no more requests: given up, or
    /// closed by the provider while it sat idle (which costs one read to
    /// learn, paid only after [`IDLE_CHECK`]).
    pub async fn usable(&mut self) -> bool {
        if !self.ended && self.idle_since.elapsed() >= IDLE_CHECK && !self.still_open().await {
            self.ended = true;
        }
        !self.ended
    }

    /// False if the provider closed the connection (or sent something
    /// unasked).
    async fn still_open(&mut self) -> bool {
        let mut byte = [0u8; 1];
        std::future::poll_fn(|cx| {
            let mut probe = ReadBuf::new(&mut byte);
            match Pin::new(&mut *self.io).poll_read(cx, &mut probe) {
                Poll::Pending => Poll::Ready(true),
                Poll::Ready(_) => Poll::Ready(false),
            }
        })
        .await
    }

    /// Writes the request in one go (one system call on plain TCP).
    async fn write(&mut self, request: &Request<'_>) -> Result<(), Failure> {
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(request.head);
        if !request.body.is_empty() || request.sized {
            use std::io::Write as _;
            // Into a Vec: cannot fail.
            let _ = write!(out, "content-length: {}\r\n", request.body.len());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(request.body);
        let mut written = 0;
        while written < self.out.len() {
            match self.io.write(&self.out[written..]).await {
                Ok(0) => return Err(lost(written, "the connection closed while writing")),
                Ok(n) => written += n,
                Err(e) => return Err(lost(written, &e.to_string())),
            }
        }
        self.io
            .flush()
            .await
            .map_err(|e| Failure::Failed(format!("writing the request: {e}")))?;
        // The buffer is kept, not a large body's worth of it.
        if self.out.capacity() > 4 * READ_CHUNK {
            self.out = Vec::new();
        }
        Ok(())
    }

    /// Reads more of the answer; false at the connection's end.
    async fn fill(&mut self) -> Result<bool, String> {
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 2 {
            self.buf.reserve(READ_CHUNK);
        }
        let n = tokio::io::AsyncReadExt::read_buf(&mut *self.io, &mut self.buf)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        Ok(n > 0)
    }

    /// Reads an answer: the response and whether the connection may carry
    /// another request.
    async fn read(
        &mut self,
        head_only: bool,
        keep: impl Fn(&str) -> bool,
        max_body: usize,
    ) -> Result<(Response, bool), String> {
        let (status, headers, framing, mut reusable) = loop {
            match self.parse_head(head_only, &keep)? {
                Some((status, ..)) if (100..200).contains(&status) => {
                    if status == 101 {
                        return Err("the provider switched protocols unasked".into());
                    }
                }
                Some(head) => break head,
                None => {
                    if self.buf.len() - self.pos >= MAX_HEAD {
                        return Err(format!("answer head longer than {MAX_HEAD} bytes"));
                    }
                    if !self.fill().await? {
                        return Err(if self.pos == self.buf.len() {
                            "the connection closed before an answer".into()
                        } else {
                            "the connection closed in the middle of the answer's head".into()
                        });
                    }
                }
            }
        };
        let mut body = Vec::new();
        let whole = match framing {
            Framing::None => true,
            Framing::Length(n) => self.body_bytes(n, &mut body, max_body, false).await?,
            Framing::Chunked => self.chunked(&mut body, max_body).await?,
            Framing::UntilClose => {
                reusable = false;
                self.body_bytes(u64::MAX, &mut body, max_body, true).await?
            }
        };
        let response = Response {
            status,
            headers,
            body,
        };
        Ok((response, reusable && whole))
    }

    /// The answer head in the buffer, if whole, consumed: status, kept
    /// headers, body framing, and whether the connection may be reused.
    #[allow(clippy::type_complexity)]
    fn parse_head(
        &mut self,
        head_only: bool,
        keep: &impl Fn(&str) -> bool,
    ) -> Result<Option<(u16, Vec<(String, String)>, Framing, bool)>, String> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut slots);
        let used = match parsed.parse(&self.buf[self.pos..]) {
            Ok(httparse::Status::Complete(used)) => used,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("malformed answer: {e}")),
        };
        let status = parsed.code.unwrap_or_default();
        let http10 = parsed.version == Some(0);
        let (mut length, mut chunked, mut encoded) = (None, false, false);
        let (mut close, mut keep_alive) = (false, false);
        let mut kept = Vec::new();
        for h in parsed.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or("malformed answer: bad Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("malformed answer: two different Content-Lengths".into());
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                encoded = true;
                // Chunked only if it is the last coding applied.
                chunked = tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case("connection") {
                for t in tokens(h.value) {
                    close |= t.eq_ignore_ascii_case("close");
                    keep_alive |= t.eq_ignore_ascii_case("keep-alive");
                }
            }
            if keep(name) {
                kept.push((
                    name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                ));
            }
        }
        self.pos += used;
        let framing = if head_only || status == 204 || status == 304 || status < 200 {
            Framing::None
        } else if encoded {
            // Transfer-Encoding wins over Content-Length (RFC 9112, 6.3).
            if chunked {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            match length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        // Both framings at once may be an attempt at request smuggling: the
        // connection is not trusted further (RFC 9112, 6.3).
        let ambiguous = encoded && length.is_some();
        let reusable = !(close || http10 && !keep_alive || ambiguous);
        Ok(Some((status, kept, framing, reusable)))
    }

    /// Reads `n` body bytes (or up to the connection's end when
    /// `to_close`), keeping up to `max_body` of the body in `body`: true if
    /// all were read, false if reading stopped at the limit.
    async fn body_bytes(
        &mut self,
        mut n: u64,
        body: &mut Vec<u8>,
        max_body: usize,
        to_close: bool,
    ) -> Result<bool, String> {
        while n > 0 {
            if self.pos == self.buf.len() && !self.fill().await? {
                if to_close {
                    return Ok(true);
                }
                return Err("the connection closed in the middle of the answer".into());
            }
            let take = (self.buf.len() - self.pos).min(usize::try_from(n).unwrap_or(usize::MAX));
            let room = max_body - body.len();
            let chunk = &self.buf[self.pos..self.pos + take.min(room)];
            if body.is_empty() {
                // Answers mostly come in one read: one exact allocation.
                *body = chunk.to_vec();
            } else {
                body.extend_from_slice(chunk);
            }
            self.pos += take;
            n -= take as u64;
            if body.len() == max_body && n > 0 {
                // The rest is not read: the connection is given up.
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads a chunked body and its trailers (dropped).
    async fn chunked(&mut self, body: &mut Vec<u8>, max_body: usize) -> Result<bool, String> {
        loop {
            let size = loop {
                match httparse::parse_chunk_size(&self.buf[self.pos..]) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.pos += used;
                        break size;
                    }
                    Ok(httparse::Status::Partial) => self.more("a chunk's size").await?,
                    Err(_) => return Err("malformed answer: bad chunk size".into()),
                }
            };
            if size == 0 {
                break;
            }
            if !self.body_bytes(size, body, max_body, false).await? {
                return Ok(false);
            }
            while self.buf.len() - self.pos < 2 {
                self.more("a chunk's end").await?;
            }
            if &self.buf[self.pos..self.pos + 2] != b"\r\n" {
                return Err("malformed answer: a chunk does not end with CRLF".into());
            }
            self.pos += 2;
        }
        while !self.trailers()? {
            if self.buf.len() - self.pos >= MAX_HEAD {
                return Err("answer trailers too long".into());
            }
            self.more("the answer's trailers").await?
        }
        Ok(true)
    }

    /// Consumes the trailers in the buffer, if whole. Not inlined into
    /// [`H1::chunked`]: its header slots would then be part of every
    /// exchange's future, copied as it moves.
    fn trailers(&mut self) -> Result<bool, String> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::parse_headers(&self.buf[self.pos..], &mut slots) {
            Ok(httparse::Status::Complete((used, _))) => {
                self.pos += used;
                Ok(true)
            }
            Ok(httparse::Status::Partial) => Ok(false),
            Err(e) => Err(format!("malformed answer trailers: {e}")),
        }
    }

    /// Reads more, or fails naming what was cut off.
    async fn more(&mut self, what: &str) -> Result<(), String> {
        if self.fill().await? {
            Ok(())
        } else {
            Err(format!("the connection closed in the middle of {what}"))
        }
    }
}

/// A write that failed after `written` bytes: unsent if none left.
fn lost(written: usize, why: &str) -> Failure {
    if written == 0 {
        Failure::Unsent
    } else {
        Failure::Failed(format!("writing the request: {why}"))
    }
}

/// The comma-separated tokens of a header value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    std::str::from_utf8(value)
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A request head as HTTP/1.1 writes it, from a head built for HTTP/1.1
/// (its URI a path, its host in `Host`), without `Content-Length`: the
/// exchange adds the body's own. Names and values were checked when the
/// head was built (`http` refuses CR and LF in either), so nothing in them
/// can end a line early.
pub fn head_bytes(head: &http::Request<()>) -> bytes::Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(head.method().as_str().as_bytes());
    out.push(b' ');
    let path = head.uri().path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers() {
        if name == http::header::CONTENT_LENGTH || name == http::header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// What the provider does with one request: answer with these pieces
    /// (written one by one, so the client reads them in as many parts),
    /// then close or not.
    struct Turn {
        pieces: Vec<&'static [u8]>,
        close: bool,
    }

    fn answer(bytes: &'static [u8]) -> Turn {
        Turn {
            pieces: vec![bytes],
            close: false,
        }
    }

    /// A provider on a loopback port playing `turns` on one connection; its
    /// handle gives back the requests it read.
    async fn provider(turns: Vec<Turn>) -> (H1, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            for turn in turns {
                seen.push(read_request(&mut s).await);
                for piece in turn.pieces {
                    s.write_all(piece).await.unwrap();
                    s.flush().await.unwrap();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                if turn.close {
                    break;
                }
            }
            seen
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let io = hyper_rustls::MaybeHttpsStream::Http(TokioIo::new(tcp));
        (H1::new(io), server)
    }

    /// One request as it came: head and `Content-Length` body.
    async fn read_request(s: &mut TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap() == 0 {
                return got;
            }
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map_or(0, |n| n.trim().parse::<usize>().unwrap());
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).await.unwrap();
        got.extend(body);
        got
    }

    fn post(body: &'static [u8]) -> Request<'static> {
        Request {
            head: b"POST /send HTTP/1.1\r\nhost: sms.test\r\n",
            body,
            head_only: false,
            sized: true,
            close: false,
        }
    }

    async fn send(h1: &mut H1, request: &Request<'_>) -> Result<Response, Failure> {
        let keep = |name: &str| name.eq_ignore_ascii_case("retry-after");
        h1.exchange(request, keep, 64).await
    }

    #[tokio::test]
    async fn answers_framed_every_way_are_read_whole_on_one_connection() {
        let (mut h1, server) = provider(vec![
            answer(b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\nRetry-After: 3\r\n\r\n{\"a\":1}"),
            Turn {
                // Chunked, with a trailer, in pieces cutting sizes, data
                // and line ends.
                pieces: vec![
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"4\r\nab",
                    b"cd\r",
                    b"\n1;ext=1\r\ne\r\n0\r\nx-trailer: 1\r",
                    b"\n\r\n",
                ],
                close: false,
            },
            // An interim answer first.
            answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\nok"),
            // No body, whatever the length says.
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n"),
            answer(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let r = send(&mut h1, &post(b"To=%2B1555")).await.unwrap();
        assert_eq!(
            r,
            Response {
                status: 201,
                headers: vec![("retry-after".into(), "3".into())],
                body: b"{\"a\":1}".to_vec(),
            }
        );
        let r = send(&mut h1, &post(b"")).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        assert!(r.headers.is_empty(), "only the headers asked for");
        let r = send(&mut h1, &post(b"x")).await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (202, &b"ok"[..]));
        let head = Request {
            head: b"HEAD /send HTTP/1.1\r\nhost: sms.test\r\n",
            body: b"",
            head_only: true,
            sized: false,
            close: false,
        };
        let r = send(&mut h1, &head).await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = send(&mut h1, &post(b"")).await.unwrap();
        assert_eq!(r.status, 204);
        assert!(!h1.is_closed(), "every answer was read whole");
        let seen = server.await.unwrap();
        assert_eq!(seen.len(), 5, "one connection carried them all");
        assert_eq!(
            seen[0],
            b"POST /send HTTP/1.1\r\nhost: sms.test\r\ncontent-length: 10\r\n\r\nTo=%2B1555"
        );
        assert_eq!(
            seen[1], b"POST /send HTTP/1.1\r\nhost: sms.test\r\ncontent-length: 0\r\n\r\n",
            "an empty POST body is sized"
        );
        assert_eq!(seen[3], b"HEAD /send HTTP/1.1\r\nhost: sms.test\r\n\r\n");
    }

    #[tokio::test]
    async fn a_connection_is_given_up_when_the_answer_ends_it() {
        for (bytes, body) in [
            (
                &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"[..],
                "hi",
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", "hi"),
            // Framed by the connection's end.
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", "until the end"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
                "zz",
            ),
        ] {
            let (mut h1, server) = provider(vec![Turn {
                pieces: vec![bytes],
                close: true,
            }])
            .await;
            let r = send(&mut h1, &post(b"x")).await.unwrap();
            assert_eq!(String::from_utf8(r.body).unwrap(), body);
            assert!(h1.is_closed(), "{}", String::from_utf8_lossy(bytes));
            server.await.unwrap();
        }
        // HTTP/1.0 asking to keep it.
        let (mut h1, _server) = provider(vec![answer(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        )])
        .await;
        send(&mut h1, &post(b"x")).await.unwrap();
        assert!(!h1.is_closed());
    }

    #[tokio::test]
    async fn a_body_past_the_limit_is_cut_and_the_connection_given_up() {
        let long: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{}",
                "x".repeat(100_000)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (mut h1, _server) = provider(vec![answer(long)]).await;
        let r = send(&mut h1, &post(b"x")).await.unwrap();
        assert_eq!(r.body, vec![b'x'; 64]);
        // A read takes at most a few kilobytes: the rest was never read.
        assert!(h1.is_closed());
    }

    #[tokio::test]
    async fn broken_answers_fail_with_their_reason() {
        for (pieces, reason) in [
            (vec![&b"SMTP/1.1 200 OK\r\n\r\n"[..]], "malformed answer"),
            (
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n"],
                "bad Content-Length",
            ),
            (
                vec![b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"],
                "closed in the middle of the answer",
            ),
            (
                vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
                "bad chunk size",
            ),
            (
                vec![b"HTTP/1.1 200 O"],
                "in the middle of the answer's head",
            ),
            (vec![], "closed before an answer"),
        ] {
            let (mut h1, _server) = provider(vec![Turn {
                pieces,
                close: true,
            }])
            .await;
            match send(&mut h1, &post(b"x")).await {
                Err(Failure::Failed(e)) => assert!(e.contains(reason), "{e}"),
                other => panic!("{reason}: {other:?}"),
            }
            assert!(h1.is_closed());
        }
    }

    #[tokio::test]
    async fn an_idle_connection_the_provider_closed_is_found_before_a_request_goes() {
        let (mut h1, server) = provider(vec![Turn {
            pieces: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            close: true,
        }])
        .await;
        send(&mut h1, &post(b"x")).await.unwrap();
        assert_eq!(server.await.unwrap().len(), 1);
        // Closed by the provider; the reactor sees it once it runs.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!h1.is_closed(), "nothing said so while it was busy");
        h1.idle_since -= IDLE_CHECK;
        assert!(matches!(
            send(&mut h1, &post(b"x")).await,
            Err(Failure::Unsent)
        ));
        assert!(h1.is_closed());
    }

    #[test]
    fn heads_are_written_from_the_built_head_without_their_length() {
        let head = http::Request::post("/2010-04-01/Accounts/AC1/Messages.json")
            .header("host", "api.test:8443")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("content-length", "999")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(())
            .unwrap();
        assert_eq!(
            head_bytes(&head),
            &b"POST /2010-04-01/Accounts/AC1/Messages.json HTTP/1.1\r\nhost: api.test:8443\r\n\
               content-type: application/x-www-form-urlencoded\r\nx-multi: a\r\nx-multi: b\r\n"[..]
        );
    }
}
