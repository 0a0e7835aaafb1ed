//! Event streams on the MCP listener, whoever produces them (the gateway's own sessions or a
//! proxied server): a comment line every `MREG_SSE_KEEPALIVE` while a stream is quiet, so that
//! proxies and load balancers in front of mreg do not cut a stream that is merely waiting (a long
//! tool call, a server with nothing to say); and a `GET` stream, which has no end of its own,
//! ends when shutdown starts (clients reconnect), instead of holding the drain.
//!
//! A comment is only ever inserted between events: while the stream is in the middle of one
//! (the last bytes sent do not end it with a blank line), the keep-alive waits.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::{Stream, StreamExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// The comment sent while a stream is quiet.
const KEEPALIVE: &[u8] = b": keep-alive\n\n";

/// What the stream middleware needs.
#[derive(Clone)]
pub struct Streams {
    /// Cancelled when shutdown starts.
    pub shutdown: CancellationToken,
    /// How long a stream may stay quiet before a comment is sent.
    pub keepalive: Duration,
}

/// Keeps event-stream answers alive, and ends `GET` streams at shutdown (see the module).
pub async fn care(State(streams): State<Streams>, request: Request, next: Next) -> Response {
    let get = request.method() == axum::http::Method::GET;
    let response = next.run(request).await;
    let is_stream = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        return response;
    }
    let (parts, body) = response.into_parts();
    let data = body.into_data_stream();
    let body = if get {
        let ending = data.take_until(streams.shutdown.cancelled_owned());
        Body::from_stream(KeepAlive::new(Box::pin(ending), streams.keepalive))
    } else {
        Body::from_stream(KeepAlive::new(data, streams.keepalive))
    };
    Response::from_parts(parts, body)
}

/// `inner`, with [`KEEPALIVE`] whenever it has been quiet for `every` between two events.
struct KeepAlive<S> {
    inner: S,
    every: Duration,
    quiet: Pin<Box<Sleep>>,
    /// The last bytes passed on (up to four), to tell whether an event just ended.
    tail: Vec<u8>,
}

impl<S> KeepAlive<S> {
    fn new(inner: S, every: Duration) -> Self {
        Self {
            inner,
            every,
            quiet: Box::pin(tokio::time::sleep(every)),
            // Nothing sent yet: between events.
            tail: b"\n\n".to_vec(),
        }
    }

    /// Whether the bytes passed on so far end an event (or nothing was sent yet).
    fn between_events(&self) -> bool {
        self.tail.ends_with(b"\n\n")
            || self.tail.ends_with(b"\r\r")
            || self.tail.ends_with(b"\r\n\r\n")
    }

    fn remember(&mut self, chunk: &[u8]) {
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(4)..]);
        let excess = self.tail.len().saturating_sub(4);
        self.tail.drain(..excess);
    }
}

impl<S, E> Stream for KeepAlive<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    type Item = Result<Bytes, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                this.remember(&chunk);
                let next = Instant::now() + this.every;
                this.quiet.as_mut().reset(next);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => {
                while this.quiet.as_mut().poll(cx).is_ready() {
                    let next = Instant::now() + this.every;
                    this.quiet.as_mut().reset(next);
                    if this.between_events() {
                        return Poll::Ready(Some(Ok(Bytes::from_static(KEEPALIVE))));
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Chunk = Result<Bytes, std::io::Error>;

    /// A stream fed by the test, and its sender.
    fn fed() -> (
        tokio::sync::mpsc::UnboundedSender<Chunk>,
        Pin<Box<dyn Stream<Item = Chunk> + Send>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        });
        (tx, Box::pin(stream))
    }

    fn next_bytes(item: Option<Chunk>) -> Bytes {
        item.expect("an item").expect("not an error")
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_gets_comments_between_events_only() {
        let (tx, source) = fed();
        let mut stream = KeepAlive::new(source, Duration::from_secs(15));
        let send = |text: &'static str| {
            tx.send(Ok(Bytes::from_static(text.as_bytes())))
                .expect("send");
        };
        // An event, then quiet: a comment.
        send("data: 1\n\n");
        assert_eq!(next_bytes(stream.next().await), "data: 1\n\n");
        assert_eq!(next_bytes(stream.next().await), KEEPALIVE);
        // Half an event, then a minute of quiet: no comment inside the event.
        send("data: 2");
        assert_eq!(next_bytes(stream.next().await), "data: 2");
        let waited = tokio::time::timeout(Duration::from_secs(60), stream.next()).await;
        assert!(waited.is_err(), "no comment inside an event");
        // Its end (CRLF line ends), then quiet: a comment again.
        send("\r\n\r\n");
        assert_eq!(next_bytes(stream.next().await), "\r\n\r\n");
        assert_eq!(next_bytes(stream.next().await), KEEPALIVE);
        // The stream ends when its source does.
        drop(tx);
        assert!(stream.next().await.is_none());
    }
}
