//! The connection layer: every accepted TCP connection is served through [`Connection`], a
//! write-side wrapper that turns actix-http's own bare refusals into FHIR OperationOutcomes.
//!
//! actix-http answers a request it cannot read before any handler sees it, with an empty
//! body: 400 for a malformed request line or header, 431 for a head over its limits (too
//! large, too many headers), 408 for a head that does not complete within the client request
//! timeout. It has no hook for these answers, so the gateway recognises them on the way out.
//!
//! What may be rewritten, and nothing else:
//! - only bytes written at the start of a response: the wrapper follows the responses written
//!   on the connection (each head's `content-length` or chunked framing, no body for HEAD,
//!   1xx, 204 and 304), so it knows where one ends and the next begins, on a fresh connection
//!   and on a keep-alive one alike; a body's bytes are never taken for a response start;
//! - only when every request the application was given on this connection has been answered
//!   (the app records each request it is given: [`mark_reached_app`]), so the bytes can only be
//!   the dispatcher's own refusal, after which it closes the connection;
//! - only the exact head actix-http writes for these refusals (its status line, then nothing
//!   but `content-length: 0`, `connection: close` and `date`), with nothing after it.
//!
//! A response whose body ends with the connection (no length, not chunked), or a head the
//! wrapper cannot read, ends the tracking: nothing after it is rewritten.
//!
//! Cost on normal traffic: each response head is read once, where it was written (copied only
//! when it spans writes), a body is skipped by its length (chunked bodies by their size
//! lines); responses are never copied whole or changed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::LazyLock;
use std::task::{Context, Poll, ready};

use actix_web::dev::Extensions;
use actix_web::rt::net::TcpStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::error::GatewayError;

/// One accepted connection, as the HTTP/1 dispatcher reads and writes it.
pub struct Connection {
    io: TcpStream,
    /// The requests the application was given and whose response has not started yet, in
    /// order: whether each is a HEAD (its response has no body).
    pending: Rc<RefCell<VecDeque<bool>>>,
    state: Writing,
}

enum Writing {
    /// Bytes pass as they are; `Framing` says where they leave the stream of responses.
    Tracking(Framing),
    /// An OperationOutcome is being written in place of the dispatcher's refusal; when all of
    /// `bytes` is out, the dispatcher is told its `replaces` bytes were written.
    Replacing {
        bytes: Vec<u8>,
        sent: usize,
        replaces: usize,
    },
}

/// The longest response head followed (the gateway's are far shorter).
const MAX_HEAD: usize = 64 * 1024;

/// The longest chunk-size or trailer line followed.
const MAX_LINE: usize = 4096;

/// Where the bytes written so far leave the connection's stream of responses.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// In a response's head: its bytes so far (empty: at the start of a response).
    Head(Vec<u8>),
    /// In a body with this many bytes left.
    Body(u64),
    /// In a chunked body.
    Chunked(Chunk),
    /// Not followed any more (a body that ends with the connection, a head that could not be
    /// read): nothing is rewritten from here on.
    Lost,
}

/// Where a chunked body is.
#[derive(Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading a chunk-size line (its bytes so far).
    Size(Vec<u8>),
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF, this many bytes of it left.
    DataEnd(u8),
    /// After the last chunk: trailer lines until an empty one (the current line so far).
    Trailer(Vec<u8>),
}

impl Framing {
    fn at_response_start(&self) -> bool {
        matches!(self, Framing::Head(head) if head.is_empty())
    }

    /// Follows `bytes`, written after everything observed before; a response head pops the
    /// request it answers from `pending`.
    fn observe(&mut self, mut bytes: &[u8], pending: &RefCell<VecDeque<bool>>) {
        while !bytes.is_empty() {
            match self {
                Framing::Lost => return,
                Framing::Head(head) if head.is_empty() => {
                    // The usual case: the whole head in this write, read where it is.
                    match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(at) => {
                            *self = after_head(&bytes[..at + 4], pending);
                            bytes = &bytes[at + 4..];
                        }
                        None => {
                            let keep = bytes.len().min(MAX_HEAD + 4);
                            head.extend_from_slice(&bytes[..keep]);
                            if head.len() > MAX_HEAD {
                                *self = Framing::Lost;
                            }
                            return;
                        }
                    }
                }
                Framing::Head(head) => {
                    let from = head.len().saturating_sub(3);
                    let before = head.len();
                    let room = (MAX_HEAD + 4).saturating_sub(before);
                    head.extend_from_slice(&bytes[..bytes.len().min(room)]);
                    match head[from..].windows(4).position(|w| w == b"\r\n\r\n") {
                        Some(at) => {
                            let end = from + at + 4;
                            bytes = &bytes[end - before..];
                            let next = after_head(&head[..end], pending);
                            *self = next;
                        }
                        None => {
                            if head.len() > MAX_HEAD {
                                *self = Framing::Lost;
                            }
                            return;
                        }
                    }
                }
                Framing::Body(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    // n ≤ bytes.len(), which fits in usize.
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    if *left == 0 {
                        *self = Framing::Head(Vec::new());
                    }
                }
                Framing::Chunked(chunk) => {
                    let size_line = matches!(chunk, Chunk::Size(_));
                    match chunk {
                        Chunk::Size(line) | Chunk::Trailer(line) => {
                            let Some(eol) = bytes.iter().position(|&b| b == b'\n') else {
                                line.extend_from_slice(bytes);
                                if line.len() > MAX_LINE {
                                    *self = Framing::Lost;
                                }
                                return;
                            };
                            line.extend_from_slice(&bytes[..eol]);
                            bytes = &bytes[eol + 1..];
                            let text = line.strip_suffix(b"\r").unwrap_or(line);
                            let next = if size_line {
                                match chunk_size(text) {
                                    Some(0) => Framing::Chunked(Chunk::Trailer(Vec::new())),
                                    Some(size) => Framing::Chunked(Chunk::Data(size)),
                                    None => Framing::Lost,
                                }
                            } else if text.is_empty() {
                                // An empty line ends the trailer, and the response.
                                Framing::Head(Vec::new())
                            } else {
                                Framing::Chunked(Chunk::Trailer(Vec::new()))
                            };
                            *self = next;
                        }
                        Chunk::Data(left) => {
                            let n = (*left).min(bytes.len() as u64);
                            *left -= n;
                            bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                            if *left == 0 {
                                *chunk = Chunk::DataEnd(2);
                            }
                        }
                        Chunk::DataEnd(left) => {
                            let n = usize::from(*left).min(bytes.len());
                            bytes = &bytes[n..];
                            // n ≤ 2.
                            *left -= n as u8;
                            if *left == 0 {
                                *chunk = Chunk::Size(Vec::new());
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The hexadecimal size of a chunk-size line (extensions after `;` ignored).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim();
    u64::from_str_radix(digits, 16).ok()
}

/// What follows a response head: its body's framing.
fn after_head(head: &[u8], pending: &RefCell<VecDeque<bool>>) -> Framing {
    let Ok(text) = std::str::from_utf8(head) else {
        return Framing::Lost;
    };
    let mut lines = text.split("\r\n");
    let status: Option<u16> = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok());
    let Some(status) = status else {
        return Framing::Lost;
    };
    if (100..200).contains(&status) {
        // An interim response (100 Continue): the final one follows.
        return Framing::Head(Vec::new());
    }
    let head_request = pending.borrow_mut().pop_front().unwrap_or(false);
    if head_request || status == 204 || status == 304 {
        return Framing::Head(Vec::new());
    }
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.to_ascii_lowercase().contains("chunked") {
                return Framing::Chunked(Chunk::Size(Vec::new()));
            }
            return Framing::Lost;
        }
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<u64>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Framing::Lost,
            }
        }
    }
    match length {
        Some(0) => Framing::Head(Vec::new()),
        Some(n) => Framing::Body(n),
        // A body that ends with the connection.
        None => Framing::Lost,
    }
}

impl Connection {
    pub fn new(io: TcpStream) -> Self {
        Connection {
            io,
            pending: Rc::default(),
            state: Writing::Tracking(Framing::Head(Vec::new())),
        }
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }

    /// Whether a write starting now may be the dispatcher's own refusal: at a response's
    /// start, with every request the application was given answered.
    fn refusal_possible(&self) -> bool {
        matches!(&self.state, Writing::Tracking(framing) if framing.at_response_start())
            && self.pending.borrow().is_empty()
    }
}

/// The per-connection record a request carries to the application (in its connection data).
#[derive(Clone)]
struct Requests(Rc<RefCell<VecDeque<bool>>>);

/// The `on_connect_ext` callback: gives the connection's requests the record.
pub fn on_connect(connection: &Connection, data: &mut Extensions) {
    data.insert(Requests(connection.pending.clone()));
}

/// Called by the application for every request it is given (before anything rewrites its
/// method): its response is awaited, and nothing written before that response has started is
/// rewritten.
pub fn mark_reached_app(req: &actix_web::dev::ServiceRequest) {
    if let Some(requests) = req.conn_data::<Requests>() {
        requests
            .0
            .borrow_mut()
            .push_back(req.method() == actix_web::http::Method::HEAD);
    }
}

/// The refusals actix-http writes on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400: the request line or a header could not be parsed.
    Unreadable,
    /// 431: the request head is over the size or header-count limit.
    HeadTooLarge,
    /// 408: the request head did not complete within the client request timeout.
    HeadTimeout,
}

impl Refusal {
    const ALL: [Refusal; 3] = [
        Refusal::Unreadable,
        Refusal::HeadTooLarge,
        Refusal::HeadTimeout,
    ];

    fn status_line(self) -> &'static [u8] {
        match self {
            Refusal::Unreadable => b"HTTP/1.1 400 Bad Request\r\n",
            Refusal::HeadTooLarge => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            Refusal::HeadTimeout => b"HTTP/1.1 408 Request Timeout\r\n",
        }
    }

    pub fn error(self) -> GatewayError {
        match self {
            Refusal::Unreadable => GatewayError::RequestUnreadable,
            Refusal::HeadTooLarge => GatewayError::RequestHeadTooLarge,
            Refusal::HeadTimeout => GatewayError::RequestHeadTimeout,
        }
    }

    /// The OperationOutcome body, built once.
    fn body(self) -> &'static [u8] {
        static BODIES: LazyLock<[Vec<u8>; 3]> = LazyLock::new(|| {
            Refusal::ALL.map(|r| r.error().to_operation_outcome().to_string().into_bytes())
        });
        &BODIES[self as usize]
    }

    /// The whole response written instead: the same status line and `date`, the
    /// OperationOutcome, and `connection: close` (the dispatcher closes the connection).
    fn response(self, date: &[u8]) -> Vec<u8> {
        let body = self.body();
        let mut out = Vec::with_capacity(160 + body.len());
        out.extend_from_slice(self.status_line());
        out.extend_from_slice(b"content-type: application/fhir+json\r\n");
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        out.extend_from_slice(b"connection: close\r\n");
        if !date.is_empty() {
            out.extend_from_slice(b"date: ");
            out.extend_from_slice(date);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }
}

/// A refusal of the dispatcher's, if `bytes` are exactly one (the whole head, nothing after
/// it): which, and the value of its `date` header.
pub fn recognise(bytes: &[u8]) -> Option<(Refusal, &[u8])> {
    let refusal = Refusal::ALL
        .into_iter()
        .find(|r| bytes.starts_with(r.status_line()))?;
    let mut rest = &bytes[refusal.status_line().len()..];
    let (mut length, mut date) = (false, None);
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        if line.is_empty() {
            break;
        }
        if line.eq_ignore_ascii_case(b"content-length: 0") && !length {
            length = true;
        } else if line.eq_ignore_ascii_case(b"connection: close") {
        } else if line.len() > 6 && line[..6].eq_ignore_ascii_case(b"date: ") && date.is_none() {
            date = Some(&line[6..]);
        } else {
            return None;
        }
    }
    let date = date?;
    let date_is_text = date.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
    (length && date_is_text && rest.is_empty()).then_some((refusal, date))
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.refusal_possible()
            && let Some((refusal, date)) = recognise(buf)
        {
            self.state = Writing::Replacing {
                bytes: refusal.response(date),
                sent: 0,
                replaces: buf.len(),
            };
        }
        let this = &mut *self;
        match &mut this.state {
            Writing::Tracking(framing) => {
                let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
                framing.observe(&buf[..n.min(buf.len())], &this.pending);
                Poll::Ready(Ok(n))
            }
            Writing::Replacing {
                bytes,
                sent,
                replaces,
            } => {
                while *sent < bytes.len() {
                    let n = ready!(Pin::new(&mut this.io).poll_write(cx, &bytes[*sent..]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *sent += n;
                }
                let replaced = *replaces;
                // The dispatcher closes the connection after its refusal.
                this.state = Writing::Tracking(Framing::Lost);
                Poll::Ready(Ok(replaced))
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if !self.refusal_possible() {
            let this = &mut *self;
            if let Writing::Tracking(framing) = &mut this.state {
                let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
                let mut left = n;
                for buf in bufs {
                    if left == 0 {
                        break;
                    }
                    let take = left.min(buf.len());
                    framing.observe(&buf[..take], &this.pending);
                    left -= take;
                }
                return Poll::Ready(Ok(n));
            }
        }
        let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| b);
        self.poll_write(cx, first)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "Sun, 06 Dec 2026 03:52:38 GMT";

    #[test]
    fn only_the_dispatchers_exact_refusal_heads_are_recognised() {
        let head = |status: &str, lines: &[&str], after: &str| {
            let mut s = format!("HTTP/1.1 {status}\r\n");
            for line in lines {
                s.push_str(line);
                s.push_str("\r\n");
            }
            s.push_str("\r\n");
            s.push_str(after);
            s.into_bytes()
        };
        let date = format!("date: {DATE}");
        let usual = ["content-length: 0", "connection: close", date.as_str()];
        let cases: Vec<(Vec<u8>, Option<Refusal>)> = vec![
            (
                head("400 Bad Request", &usual, ""),
                Some(Refusal::Unreadable),
            ),
            (
                head("431 Request Header Fields Too Large", &usual, ""),
                Some(Refusal::HeadTooLarge),
            ),
            (
                head("408 Request Timeout", &usual, ""),
                Some(Refusal::HeadTimeout),
            ),
            (
                head("400 Bad Request", &["content-length: 0", &date], ""),
                Some(Refusal::Unreadable),
            ),
            // Anything else is never recognised: another header (every application response
            // carries x-request-id), a body, anything after the head, another status.
            (
                head(
                    "400 Bad Request",
                    &["content-length: 0", "x-request-id: 1", &date],
                    "",
                ),
                None,
            ),
            (
                head("400 Bad Request", &["content-length: 2", &date], "{}"),
                None,
            ),
            (head("400 Bad Request", &usual, "HTTP/1.1 200 OK\r\n"), None),
            (
                head("400 Bad Request", &["connection: close", &date], ""),
                None,
            ),
            (head("400 Bad Request", &["content-length: 0"], ""), None),
            (head("404 Not Found", &usual, ""), None),
            (head("200 OK", &usual, ""), None),
            (
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n".to_vec(),
                None,
            ),
            (b"{\"HTTP/1.1 400 Bad Request\"}".to_vec(), None),
        ];
        for (bytes, expected) in cases {
            let got = recognise(&bytes).map(|(r, _)| r);
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn the_replacement_is_an_operation_outcome_with_the_same_status_and_date() {
        for refusal in Refusal::ALL {
            let response = refusal.response(DATE.as_bytes());
            let text = String::from_utf8(response).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(head.as_bytes().starts_with(refusal.status_line()));
            assert!(head.contains("content-type: application/fhir+json"));
            assert!(head.contains(&format!("content-length: {}", body.len())));
            assert!(head.contains("connection: close"));
            assert!(head.contains(&format!("date: {DATE}")));
            let outcome: serde_json::Value = serde_json::from_str(body).unwrap();
            assert_eq!(outcome["resourceType"], "OperationOutcome");
            assert_eq!(
                outcome["issue"][0]["details"]["coding"][0]["code"],
                refusal.error().code()
            );
        }
    }

    /// A connection pair on loopback: the server side wrapped, the client side raw.
    async fn pair() -> (Connection, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Connection::new(server), client)
    }

    /// Writes each of `writes` through the wrapper (as the dispatcher does: until each is
    /// reported written), closes, and gives what the client received.
    async fn through(
        mut connection: Connection,
        mut client: tokio::net::TcpStream,
        writes: &[&[u8]],
    ) -> Vec<u8> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for write in writes {
            connection.write_all(write).await.unwrap();
        }
        connection.shutdown().await.unwrap();
        drop(connection);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        got
    }

    /// ADV: the refusal's exact bytes are rewritten only as the first bytes of a connection
    /// no request reached the application on; as a later write (a body, a second response) or
    /// after the application was given a request, they pass as they are.
    #[tokio::test]
    async fn only_a_refusal_at_the_start_of_a_connection_the_app_never_saw_is_rewritten() {
        let refusal = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: {DATE}\r\n\r\n"
        );
        let refusal = refusal.as_bytes();
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 87\r\nx-request-id: 1\r\n\r\n";

        // Rewritten: the first bytes, nothing reached the app.
        let (connection, client) = pair().await;
        let got = through(connection, client, &[refusal]).await;
        assert_eq!(got, Refusal::Unreadable.response(DATE.as_bytes()));

        // A body holding the refusal's bytes, after a response head: unchanged.
        let (connection, client) = pair().await;
        let got = through(connection, client, &[response, refusal]).await;
        assert_eq!(got, [&response[..], refusal].concat());

        // The application was given a request on this connection: unchanged, even first.
        let (connection, client) = pair().await;
        connection.pending.borrow_mut().push_back(false);
        let got = through(connection, client, &[refusal]).await;
        assert_eq!(got, refusal);

        // The refusal's bytes followed by more in the same write: unchanged.
        let (connection, client) = pair().await;
        let got = through(connection, client, &[&[refusal, &b"{}"[..]].concat()]).await;
        assert_eq!(got, [refusal, &b"{}"[..]].concat());
    }

    /// ADV: on a keep-alive connection the refusal's exact bytes are rewritten only where a
    /// response starts and every request the application was given has been answered; inside
    /// a body (sized, chunked, split across writes), after a body that ends with the
    /// connection, or while a response is still awaited, they pass as they are.
    #[tokio::test]
    async fn on_a_keep_alive_connection_only_a_refusal_where_a_response_starts_is_rewritten() {
        let refusal = format!(
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\ndate: {DATE}\r\n\r\n"
        );
        let refusal = refusal.as_bytes().to_vec();
        let sized =
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-request-id: 1\r\n\r\nhello".to_vec();
        let holding = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
            refusal.len() + 2
        )
        .into_bytes();
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
        let chunk_line = format!("{:x}\r\n", refusal.len()).into_bytes();
        let long = b"HTTP/1.1 200 OK\r\ncontent-length: 4096\r\n\r\n".to_vec();
        struct Case {
            name: &'static str,
            /// The requests the application was given (true: a HEAD).
            requests: Vec<bool>,
            /// Written before the refusal's bytes.
            before: Vec<Vec<u8>>,
            /// Written after them.
            after: Vec<Vec<u8>>,
            rewritten: bool,
        }
        let cases = [
            Case {
                name: "after a sized response",
                requests: vec![false],
                before: vec![sized.clone()],
                after: vec![],
                rewritten: true,
            },
            Case {
                name: "after a sized response written in pieces",
                requests: vec![false],
                before: vec![
                    sized[..7].to_vec(),
                    sized[7..40].to_vec(),
                    sized[40..].to_vec(),
                ],
                after: vec![],
                rewritten: true,
            },
            Case {
                name: "after a chunked response",
                requests: vec![false],
                before: vec![
                    chunked.clone(),
                    b"5;x=1\r\nhello\r\n".to_vec(),
                    b"0\r\n\r\n".to_vec(),
                ],
                after: vec![],
                rewritten: true,
            },
            Case {
                name: "after a chunked response with a trailer",
                requests: vec![false],
                before: vec![
                    chunked.clone(),
                    b"5\r\nhel".to_vec(),
                    b"lo\r".to_vec(),
                    b"\n0\r\nx-t: 1\r\n\r\n".to_vec(),
                ],
                after: vec![],
                rewritten: true,
            },
            Case {
                name: "after the head of a HEAD response (no body)",
                requests: vec![true],
                before: vec![long.clone()],
                after: vec![],
                rewritten: true,
            },
            Case {
                name: "after a 204",
                requests: vec![false],
                before: vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()],
                after: vec![],
                rewritten: true,
            },
            Case {
                name: "inside a sized body",
                requests: vec![false],
                before: vec![holding.clone()],
                after: vec![b"{}".to_vec()],
                rewritten: false,
            },
            Case {
                name: "inside the body a GET's length announces",
                requests: vec![false],
                before: vec![long.clone()],
                after: vec![],
                rewritten: false,
            },
            Case {
                name: "inside a chunk",
                requests: vec![false],
                before: vec![chunked.clone(), chunk_line.clone()],
                after: vec![b"\r\n0\r\n\r\n".to_vec()],
                rewritten: false,
            },
            Case {
                name: "as a chunk-size line",
                requests: vec![false],
                before: vec![chunked.clone(), b"5\r\nhello\r\n".to_vec()],
                after: vec![],
                rewritten: false,
            },
            Case {
                name: "after a body that ends with the connection",
                requests: vec![false],
                before: vec![b"HTTP/1.1 200 OK\r\n\r\nsome".to_vec()],
                after: vec![],
                rewritten: false,
            },
            Case {
                name: "while a second request is awaited",
                requests: vec![false, false],
                before: vec![sized.clone()],
                after: vec![],
                rewritten: false,
            },
            Case {
                name: "after an interim 100 Continue (the final response awaited)",
                requests: vec![false],
                before: vec![b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()],
                after: vec![],
                rewritten: false,
            },
        ];
        for case in cases {
            let (connection, client) = pair().await;
            connection
                .pending
                .borrow_mut()
                .extend(case.requests.iter().copied());
            let mut writes: Vec<&[u8]> = case.before.iter().map(Vec::as_slice).collect();
            writes.push(&refusal);
            writes.extend(case.after.iter().map(Vec::as_slice));
            let got = through(connection, client, &writes).await;
            let before = case.before.concat();
            let expected = if case.rewritten {
                [before, Refusal::Unreadable.response(DATE.as_bytes())].concat()
            } else {
                writes.concat()
            };
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&expected),
                "{}",
                case.name
            );
        }
    }
}
