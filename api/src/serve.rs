//! The HTTP/1 server loop: accepts TCP connections and serves the router on each with hyper,
//! enforcing the header-read and idle timeouts, and drains connections gracefully on stop.
//! It owns connection lifetimes only; request-level limits (URI, headers, body) live in
//! `crate::protocol`, and it never looks inside requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

/// Connection timeouts (docs/OPERATIONS.md, "Settings").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// From a connection's opening, or the first byte of a later request, until its complete
    /// request head has arrived; past it the connection is closed.
    pub header_read: Duration,
    /// From the start of reading a request body until all of it has arrived; past it the
    /// request is answered 408 (`crate::protocol`).
    pub body_read: Duration,
    /// How long a keep-alive connection may sit between requests before it is closed.
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

/// hyper's own caps sit above `crate::protocol`'s, so that our JSON answer comes first; only
/// requests beyond these get hyper's empty-bodied 414/431 (docs/API.md, "Protocol-level errors").
const HYPER_MAX_HEADERS: usize = 256;
const HYPER_MAX_BUF: usize = 512 * 1024;

/// Serves `app` on `listener` until `stop` turns true, then lets open connections finish their
/// current request (new requests on them are not read) and returns once all are closed.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: HttpTimeouts,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, remote)) => {
                    // No Nagle delay: small responses and live-stream messages leave at once.
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!(error = %e, "could not set TCP_NODELAY");
                    }
                    connections.spawn(connection(tcp, remote, app.clone(), timeouts, closing_rx.clone()));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = async { drop(stop.wait_for(|s| *s).await) } => break,
        }
    }
    drop(listener);
    let _ = closing.send(true);
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Where a connection is in its request cycle, and since when.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for (the rest of) a request head: the header-read timeout runs.
    Head(Instant),
    /// A request is being served: no connection timeout (the body timeout is per request).
    Busy,
    /// The last response is done and no byte of the next request has come: the idle timeout runs.
    Idle(Instant),
}

/// Shared between the socket wrapper, the service and the connection loop. A phase change wakes
/// nobody: the connection's one timer looks at the phase when it fires (`connection`), so a
/// request costs no extra wake-ups or timer registrations.
struct Tracker {
    phase: Mutex<Phase>,
}

impl Tracker {
    fn set(&self, f: impl FnOnce(Phase) -> Option<Phase>) {
        if let Ok(mut p) = self.phase.lock() {
            if let Some(next) = f(*p) {
                *p = next;
            }
        }
    }

    fn deadline(&self, t: &HttpTimeouts) -> Option<Instant> {
        match *self.phase.lock().ok()? {
            Phase::Head(since) => Some(since + t.header_read),
            Phase::Idle(since) => Some(since + t.idle),
            Phase::Busy => None,
        }
    }
}

async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    app: Router,
    timeouts: HttpTimeouts,
    mut closing: watch::Receiver<bool>,
) {
    // A fresh connection owes its first request head at once: sending nothing is slow headers.
    let tracker = Arc::new(Tracker {
        phase: Mutex::new(Phase::Head(Instant::now())),
    });
    let io = TokioIo::new(TrackedIo {
        inner: tcp,
        tracker: tracker.clone(),
        pending: Vec::new(),
        written: 0,
    });
    let service = {
        let tracker = tracker.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            tracker.set(|_| Some(Phase::Busy));
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(ConnectInfo(remote));
            let mut app = app.clone();
            let tracker = tracker.clone();
            async move {
                let response = match app.call(req).await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|inner| Body::new(TrackedBody { inner, tracker })))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // Ours (the `Phase::Head` deadline) tells slow headers from an idle keep-alive.
        .header_read_timeout(None)
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut shutting_down = false;
    // While a request is being served no timeout runs; the timer then looks again this often.
    let recheck = timeouts.header_read.min(timeouts.idle);
    let timer = tokio::time::sleep_until(tracker.deadline(&timeouts).unwrap_or_else(|| Instant::now() + recheck));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, %remote, "connection ended with an error");
                }
                return;
            }
            _ = async { drop(closing.wait_for(|c| *c).await) }, if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = timer.as_mut() => {
                // The phase may have moved on since the timer was set: act on the current one.
                let now = Instant::now();
                match tracker.deadline(&timeouts) {
                    Some(deadline) if deadline <= now => {
                        tracing::debug!(%remote, "closing a connection after its header-read or idle timeout");
                        return;
                    }
                    Some(deadline) => timer.as_mut().reset(deadline),
                    None => timer.as_mut().reset(now + recheck),
                }
            }
        }
    }
}

/// The socket, noting the first byte of each new request, and giving hyper's own rejections of
/// unparseable requests a JSON body (see [`hyper_rejection`]).
struct TrackedIo {
    inner: TcpStream,
    tracker: Arc<Tracker>,
    /// Rewritten bytes still to be written, from this offset.
    pending: Vec<u8>,
    written: usize,
}

impl TrackedIo {
    /// Writes what is pending; Ready(Ok) once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        while self.written < self.pending.len() {
            let n = std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Before any request was dispatched, a `4xx` head with `content-length: 0` can only be
    /// hyper answering a request it could not parse: our own 4xx always carry a JSON body.
    fn rewrite(&mut self, head: &[u8]) -> bool {
        let before_request = matches!(self.tracker.phase.lock().map(|p| *p), Ok(Phase::Head(_)));
        match before_request.then(|| hyper_rejection(head)).flatten() {
            Some(bytes) => {
                self.pending = bytes;
                self.written = 0;
                true
            }
            None => false,
        }
    }
}

/// hyper's empty-bodied 400/414/431 with our JSON error body in it.
fn hyper_rejection(head: &[u8]) -> Option<Vec<u8>> {
    const EMPTY: &[u8] = b"\r\ncontent-length: 0\r\n";
    let text = std::str::from_utf8(head).ok()?;
    if !text.ends_with("\r\n\r\n") {
        return None;
    }
    let (code, message) = match text.strip_prefix("HTTP/1.1 ")?.get(..3)? {
        "400" => (
            "bad_request",
            "the request is not valid HTTP/1.1 (request line, a header or Content-Length)",
        ),
        "414" => ("uri_too_long", "the request target is too long"),
        "431" => ("headers_too_large", "the request headers are too large"),
        _ => return None,
    };
    let at = head.windows(EMPTY.len()).position(|w| w.eq_ignore_ascii_case(EMPTY))?;
    let body = serde_json::json!({ "code": code, "message": message }).to_string();
    let mut out = Vec::with_capacity(head.len() + body.len() + 48);
    out.extend_from_slice(&head[..at]);
    out.extend_from_slice(
        format!(
            "\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&head[at + EMPTY.len()..]);
    out.extend_from_slice(body.as_bytes());
    Some(out)
}

impl AsyncRead for TrackedIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            me.tracker.set(|p| match p {
                Phase::Idle(_) => Some(Phase::Head(Instant::now())),
                _ => None,
            });
        }
        polled
    }
}

impl AsyncWrite for TrackedIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_pending(cx))?;
        if me.rewrite(buf) {
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_pending(cx))?;
        if let [only] = bufs {
            if me.rewrite(only) {
                return Poll::Ready(Ok(only.len()));
            }
        }
        Pin::new(&mut me.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_pending(cx))?;
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        std::task::ready!(me.poll_pending(cx))?;
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

/// A response body that marks the connection idle once hyper has written (or dropped) it.
struct TrackedBody {
    inner: Body,
    tracker: Arc<Tracker>,
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.tracker.set(|p| match p {
            Phase::Busy => Some(Phase::Idle(Instant::now())),
            _ => None,
        });
    }
}

impl http_body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_rejections_get_a_json_body_and_nothing_else_is_touched() {
        let head = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let out = String::from_utf8(hyper_rejection(head).expect("rewritten")).expect("utf8");
        let (head_out, body) = out.split_once("\r\n\r\n").expect("head");
        assert!(head_out.contains("content-type: application/json"), "{out}");
        assert!(head_out.contains(&format!("content-length: {}", body.len())), "{out}");
        assert!(head_out.contains("connection: close"), "{out}");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["code"], "bad_request");
        for untouched in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
        ] {
            assert!(
                hyper_rejection(untouched).is_none(),
                "{:?}",
                String::from_utf8_lossy(untouched)
            );
        }
    }
}
