//! The connection layer: every accepted TCP connection is served through [`Connection`], a
//! write-side wrapper that turns actix-http's own bare refusals into FHIR OperationOutcomes.
//!
//! actix-http answers a request it cannot read before any handler sees it, with an empty
//! body: 400 for a malformed request line or header, 431 for a head over its limits (too
//! large, too many headers), 408 for a head that does not complete within the client request
//! timeout. It has no hook for these answers, so the gateway recognises them on the way out.
//!
//! What may be rewritten, and nothing else:
//! - only the very first bytes written on a connection (a response start, never a body);
//! - only on a connection where no request has reached the application (the app marks the
//!   connection on every request it is given: [`mark_reached_app`]), so the bytes can only be
//!   the dispatcher's own refusal, after which it closes the connection;
//! - only the exact head actix-http writes for these refusals (its status line, then nothing
//!   but `content-length: 0`, `connection: close` and `date`), with nothing after it.
//!
//! A refusal after a request that did reach the application (a keep-alive connection whose
//! second request is unreadable) is left as actix-http wrote it: telling where the previous
//! response ended would mean following every response's framing.
//!
//! Cost on normal traffic: one comparison of a state per write, and a flag set per request;
//! responses are never copied.

use std::cell::Cell;
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
    reached_app: Rc<Cell<bool>>,
    state: Writing,
}

enum Writing {
    /// Nothing has been written on this connection yet.
    Fresh,
    /// Everything is passed through as it is.
    Passing,
    /// An OperationOutcome is being written in place of the dispatcher's refusal; when all of
    /// `bytes` is out, the dispatcher is told its `replaces` bytes were written.
    Replacing {
        bytes: Vec<u8>,
        sent: usize,
        replaces: usize,
    },
}

impl Connection {
    pub fn new(io: TcpStream) -> Self {
        Connection {
            io,
            reached_app: Rc::new(Cell::new(false)),
            state: Writing::Fresh,
        }
    }

    pub fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        self.io.peer_addr().ok()
    }
}

/// The per-connection mark a request carries to the application (in its connection data).
#[derive(Clone)]
struct ReachedApp(Rc<Cell<bool>>);

/// The `on_connect_ext` callback: gives the connection's requests the mark.
pub fn on_connect(connection: &Connection, data: &mut Extensions) {
    data.insert(ReachedApp(connection.reached_app.clone()));
}

/// Called by the application for every request it is given: from then on nothing written
/// on this connection is rewritten.
pub fn mark_reached_app(req: &actix_web::dev::ServiceRequest) {
    if let Some(mark) = req.conn_data::<ReachedApp>() {
        mark.0.set(true);
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
        let this = &mut *self;
        if let Writing::Fresh = this.state {
            this.state = match recognise(buf) {
                Some((refusal, date)) if !this.reached_app.get() => Writing::Replacing {
                    bytes: refusal.response(date),
                    sent: 0,
                    replaces: buf.len(),
                },
                _ => Writing::Passing,
            };
        }
        match &mut this.state {
            Writing::Passing | Writing::Fresh => Pin::new(&mut this.io).poll_write(cx, buf),
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
                this.state = Writing::Passing;
                Poll::Ready(Ok(replaced))
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Writing::Passing = self.state {
            return Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
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
        connection.reached_app.set(true);
        let got = through(connection, client, &[refusal]).await;
        assert_eq!(got, refusal);

        // The refusal's bytes followed by more in the same write: unchanged.
        let (connection, client) = pair().await;
        let got = through(connection, client, &[&[refusal, &b"{}"[..]].concat()]).await;
        assert_eq!(got, [refusal, &b"{}"[..]].concat());
    }
}
