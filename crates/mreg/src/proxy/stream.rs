//! The body of a relayed response: the upstream's bytes as they come. For an SSE answer to a
//! request, the events are also watched for the response to that request; if the upstream
//! ends or breaks off the stream before sending it, one last event tells the client that its
//! request failed, instead of leaving it waiting. An event the upstream broke off in the middle
//! is first terminated as an event of another type, which clients discard, so that the client
//! parses the gateway's error rather than a fragment of JSON.
//!
//! The watch scans each byte once (the search for the blank line that ends an event resumes
//! where it stopped) and holds at most [`MAX_WATCHED_EVENT`] bytes of one event: an answer
//! larger than that is passed on unwatched.

use axum::body::Bytes;
use futures_util::{FutureExt, Stream, StreamExt, stream};
use serde_json::{Value, json};

/// Most bytes of one event the watch holds.
const MAX_WATCHED_EVENT: usize = 16 * 1024 * 1024;

/// The type given to an event the upstream broke off: not `message`, so clients ignore it.
const DISCARDED_EVENT: &str = "mreg-discarded";

/// What the watch has seen so far.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The response to the request passed.
    Answered,
    /// Not yet.
    Pending,
    /// One event grew past [`MAX_WATCHED_EVENT`]: no longer watched.
    TooLarge,
}

/// Watches SSE events for the response to one request id.
struct Watch {
    id: Value,
    events: super::rpc::sse::Splitter,
}

impl Watch {
    fn new(id: Value) -> Self {
        Self {
            id,
            events: super::rpc::sse::Splitter::default(),
        }
    }

    /// Feeds a chunk.
    fn feed(&mut self, chunk: &[u8]) -> Seen {
        self.events.push(chunk);
        let id = &self.id;
        while let Some(answered) = self.events.next_event(|event| {
            super::rpc::sse::message(event).is_some_and(|m| super::rpc::is_response_to(&m, id))
        }) {
            if answered {
                return Seen::Answered;
            }
        }
        if self.events.unfinished().len() > MAX_WATCHED_EVENT {
            self.events.clear();
            return Seen::TooLarge;
        }
        Seen::Pending
    }

    /// The last bytes for a request left unanswered (the upstream `why`: "ended the stream
    /// before answering"): the broken-off event, if any, terminated as one clients discard, then
    /// the error.
    fn failure(&self, server: &str, why: &str) -> Bytes {
        let event = json!({
            "jsonrpc": "2.0",
            "id": self.id,
            "error": {
                "code": super::rpc::UPSTREAM_ERROR,
                "message": format!("server '{server}' {why}"),
            },
        });
        let mut out = String::new();
        let unfinished = self.events.unfinished();
        if !unfinished.is_empty() {
            if !self.events.after_carriage_return() && unfinished.last() != Some(&b'\n') {
                out.push('\n');
            }
            out.push_str("event: ");
            out.push_str(DISCARDED_EVENT);
            out.push_str("\n\n");
        }
        out.push_str(&format!("event: message\ndata: {event}\n\n"));
        Bytes::from(out)
    }
}

struct State<S> {
    upstream: S,
    server: String,
    watch: Option<Watch>,
    outcome: super::rpc::StreamOutcome,
    /// When the answer must have come (the server's `timeout_secs` from the request).
    deadline: tokio::time::Instant,
    /// The server's timeout, for the message when it passes.
    timeout: std::time::Duration,
    /// Cancelled when shutdown's grace period ends (`Tasks::cut_off`).
    cut_off: tokio_util::sync::CancellationToken,
}

impl<S> State<S> {
    /// The last event for a request left unanswered because the upstream `why`.
    fn unanswered(&self, watch: &Watch, why: &str) -> Bytes {
        self.outcome.fail(format!("server '{}' {why}", self.server));
        watch.failure(&self.server, why)
    }
}

/// The audit entry of a streamed answer while the stream is open.
struct Open {
    entry: Option<crate::audit::Entry>,
    outcome: super::rpc::StreamOutcome,
    /// The bytes holding the response have been taken by the connection (the stream was asked
    /// for more after them).
    delivered: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        // A client may close the stream once its response has come, before the upstream ends
        // it (the Python SDK does): the call was answered, not cancelled.
        if self.delivered
            && let Some(entry) = self.entry.take()
        {
            entry.finish(Ok(()));
        }
    }
}

/// The body of a streamed answer, completing its audit `entry` when it ends: an error when
/// `outcome` says the upstream left the request unanswered, ok otherwise. Dropped before its
/// end (the caller went away), the entry records a cancellation, unless the response had
/// already been passed on.
pub fn audited(
    body: axum::body::Body,
    entry: crate::audit::Entry,
    outcome: super::rpc::StreamOutcome,
) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static {
    let open = Open {
        entry: Some(entry),
        outcome,
        delivered: false,
    };
    stream::unfold(Some((body.into_data_stream(), open)), |state| async move {
        let (mut body, mut open) = state?;
        // Asked for more: what was passed on before has been taken.
        open.delivered = open.outcome.answered();
        match body.next().await {
            Some(Ok(bytes)) => Some((Ok(bytes), Some((body, open)))),
            Some(Err(e)) => {
                if let Some(entry) = open.entry.take() {
                    entry.finish(Err(format!("the stream broke off: {e}")));
                }
                Some((Err(e), None))
            }
            None => {
                if let Some(entry) = open.entry.take() {
                    entry.finish(open.outcome.failure().map_or(Ok(()), |f| Err(f.to_owned())));
                }
                None
            }
        }
    })
}

/// Longest the first message of an SSE answer is waited for before the answer is relayed as a
/// stream: a longer call gets its headers and keep-alive comments (`MREG_SSE_KEEPALIVE`) as any
/// stream does, so that nothing between the client and the gateway takes it for idle.
const SINGLE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Longest the rest of an upstream stream is read, after its answer went to the client as JSON,
/// so that the connection goes back to the pool, and most bytes read so.
const DRAIN_FOR: std::time::Duration = std::time::Duration::from_secs(5);
const DRAIN_BYTES: usize = 1024 * 1024;

/// The UTF-8 byte order mark, which may open an event stream (and which SSE parsers drop).
const BYTE_ORDER_MARK: &[u8] = b"\xEF\xBB\xBF";

/// An SSE answer to request `id` whose first message is the response, as one JSON answer: the
/// same status and headers, `application/json`, the message as the body. MCP clients take either
/// form (the transport lets a server answer a request with JSON or a stream), and with JSON a
/// client keeps its connection: the Python SDK closes an event stream once the response has come,
/// before the stream ends, and so opens a new connection for every call. Anything else — a
/// notification or request before the response (progress, logging, sampling), a stream that ends,
/// breaks off first, no message within [`SINGLE_ANSWER_WAIT`] or by `deadline`, an event too
/// large to hold — is relayed as the stream it is, from its first byte, and watched as before.
/// Events without data (a priming event for resumption, a comment) are passed over: a finished
/// answer is not resumed. At most
/// [`MAX_WATCHED_EVENT`] bytes are held, whatever they are. What the upstream sends after the
/// response (the transport says a server should end the stream there; the Python SDK stops
/// reading there) is read, up to a bound, and dropped in the background, so that an upstream
/// that ends its stream gets its connection back into the pool.
pub async fn single_answer(
    response: axum::response::Response,
    id: &Value,
    deadline: tokio::time::Instant,
    tasks: &crate::tasks::Tasks,
) -> axum::response::Response {
    let (mut parts, body) = response.into_parts();
    let mut upstream = body.into_data_stream();
    let mut events = super::rpc::sse::Splitter::default();
    let mut read = Vec::new();
    let mut held = 0;
    let mut ended = None;
    let wait_until = deadline.min(tokio::time::Instant::now() + SINGLE_ANSWER_WAIT);
    let answer = 'read: loop {
        let next = match tokio::time::timeout_at(wait_until, upstream.next()).await {
            Ok(next) => next,
            Err(_) => break None,
        };
        let bytes = match next {
            Some(Ok(bytes)) => bytes,
            other => {
                ended = Some(other);
                break None;
            }
        };
        // A stream opening with a byte order mark is relayed as it is (clients drop the mark).
        if held == 0 && bytes.first() == BYTE_ORDER_MARK.first() {
            read.push(bytes);
            break None;
        }
        held += bytes.len();
        events.push(&bytes);
        read.push(bytes);
        // Some(Some(json)): the response; Some(None): another message; None: no data.
        while let Some(found) = events.next_event(|event| {
            let data = super::rpc::sse::data(event);
            if data.trim().is_empty() {
                return None;
            }
            let message: Option<Value> = serde_json::from_str(&data).ok();
            let answers = super::rpc::sse::event_type(event) == "message"
                && message
                    .as_ref()
                    .is_some_and(|m| super::rpc::is_response_to(m, id));
            Some(answers.then_some(data))
        }) {
            match found {
                None => continue,
                Some(json) => break 'read json,
            }
        }
        if held > MAX_WATCHED_EVENT {
            break None;
        }
    };
    match answer {
        Some(json) => {
            if !matches!(upstream.next().now_or_never(), Some(None)) {
                let stop = tasks.stopping();
                tasks.spawn("drain_upstream_answer", async move {
                    let drained = async {
                        let mut left = DRAIN_BYTES;
                        while let Some(Ok(bytes)) = upstream.next().await {
                            left = left.saturating_sub(bytes.len());
                            if left == 0 {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        () = stop.cancelled() => {}
                        _ = tokio::time::timeout(DRAIN_FOR, drained) => {}
                    }
                });
            }
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
            parts.headers.remove(axum::http::header::TRANSFER_ENCODING);
            parts.headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            axum::response::Response::from_parts(parts, axum::body::Body::from(json))
        }
        None => {
            let head = stream::iter(read.into_iter().map(Ok::<_, axum::Error>));
            let body = match ended {
                // Out of time, or an event too large to hold: the rest follows as it comes.
                None => axum::body::Body::from_stream(head.chain(upstream)),
                Some(Some(Err(e))) => {
                    axum::body::Body::from_stream(head.chain(stream::once(async { Err(e) })))
                }
                Some(_) => axum::body::Body::from_stream(head),
            };
            axum::response::Response::from_parts(parts, body)
        }
    }
}

/// The upstream's SSE stream, watched for the answer to `pending`; when the stream ends or
/// breaks off first, or the answer has not come by `deadline`, the client gets a last error
/// event and `outcome` says why.
pub fn cut_off_reported<E: std::error::Error + Send + Sync + 'static>(
    upstream: impl Stream<Item = Result<Bytes, E>> + Send + 'static,
    server: String,
    pending: Option<Value>,
    outcome: super::rpc::StreamOutcome,
    deadline: tokio::time::Instant,
    timeout: std::time::Duration,
    cut_off: tokio_util::sync::CancellationToken,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = State {
        upstream: Box::pin(upstream),
        server,
        watch: pending.map(Watch::new),
        outcome,
        deadline,
        timeout,
        cut_off,
    };
    stream::unfold(Some(state), |state| async move {
        let mut state = state?;
        let next = if state.watch.is_some() {
            tokio::select! {
                next = tokio::time::timeout_at(state.deadline, state.upstream.next()) => match next {
                    Ok(next) => next,
                    Err(_) => {
                        let watch = state.watch.take()?;
                        tracing::warn!(server = %state.server, "upstream did not answer within its timeout");
                        let why = format!("did not answer within {} s", state.timeout.as_secs());
                        return Some((Ok(state.unanswered(&watch, &why)), None));
                    }
                },
                () = state.cut_off.cancelled() => {
                    let watch = state.watch.take()?;
                    let why = "had not answered when mreg stopped: its shutdown grace period (MREG_SHUTDOWN_GRACE_SECS) ended first; try again";
                    return Some((Ok(state.unanswered(&watch, why)), None));
                }
            }
        } else {
            state.upstream.next().await
        };
        match next {
            Some(Ok(bytes)) => {
                match state.watch.as_mut().map(|w| w.feed(&bytes)) {
                    Some(Seen::Answered) => {
                        state.outcome.answer();
                        state.watch = None;
                    }
                    Some(Seen::TooLarge) => {
                        tracing::debug!(server = %state.server, "an SSE event is too large to watch; passed on unwatched");
                        state.watch = None;
                    }
                    Some(Seen::Pending) | None => {}
                }
                Some((Ok(bytes), Some(state)))
            }
            None => {
                let watch = state.watch.take()?;
                tracing::warn!(server = %state.server, "upstream ended the stream without answering");
                Some((
                    Ok(state.unanswered(&watch, "ended the stream before answering")),
                    None,
                ))
            }
            Some(Err(e)) => {
                let cause = super::root_cause(&e);
                tracing::warn!(server = %state.server, %cause, "upstream stream broke off");
                match state.watch.take() {
                    Some(watch) => Some((
                        Ok(state.unanswered(
                            &watch,
                            &format!("broke off the stream ({cause}) before answering"),
                        )),
                        None,
                    )),
                    None => Some((Err(std::io::Error::other(cause)), None)),
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watch_sees_the_response_across_chunk_boundaries() {
        let mut watch = Watch::new(json!(7));
        assert_eq!(
            watch.feed(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n"),
            Seen::Pending
        );
        assert_eq!(
            watch.feed(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{}}\n\n"),
            Seen::Pending
        );
        assert_eq!(
            watch.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":7,"),
            Seen::Pending
        );
        assert_eq!(watch.feed(b"\"result\":{}}\r"), Seen::Pending);
        assert_eq!(
            watch.feed(b"\n\r\n"),
            Seen::Answered,
            "CRLF split across chunks"
        );
        let mut cr_only = Watch::new(json!(1));
        assert_eq!(
            cr_only.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\r"),
            Seen::Answered,
            "bare CR line ends"
        );
    }

    #[test]
    fn each_byte_is_examined_a_bounded_number_of_times() {
        // One 8 MiB event in 64 KiB chunks: the old search went over the whole buffer on every
        // chunk (quadratic).
        let mut watch = Watch::new(json!(1));
        let mut event = br#"data: {"jsonrpc":"2.0","id":1,"result":{"text":""#.to_vec();
        event.extend(std::iter::repeat_n(b'x', 8 * 1024 * 1024));
        event.extend_from_slice(b"\"}}\n\n");
        let mut seen = Seen::Pending;
        for chunk in event.chunks(64 * 1024) {
            seen = watch.feed(chunk);
        }
        assert_eq!(seen, Seen::Answered);
        assert!(
            watch.events.examined <= 2 * event.len(),
            "examined {} bytes of {}",
            watch.events.examined,
            event.len()
        );
    }

    #[test]
    fn an_event_that_never_ends_is_not_buffered_without_bound() {
        let mut watch = Watch::new(json!(1));
        let line = b"data: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n".repeat(1024);
        let mut seen = Seen::Pending;
        let mut fed = 0;
        while seen == Seen::Pending {
            seen = watch.feed(&line);
            fed += line.len();
            assert!(fed <= MAX_WATCHED_EVENT + 2 * line.len(), "still watching");
        }
        assert_eq!(seen, Seen::TooLarge);
        assert!(watch.events.unfinished().is_empty());
    }

    #[test]
    fn a_broken_off_event_is_terminated_as_one_clients_discard() {
        let mut watch = Watch::new(json!(7));
        assert_eq!(
            watch.feed(b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"res"),
            Seen::Pending
        );
        let failure =
            String::from_utf8(watch.failure("s", "broke off the stream").to_vec()).expect("text");
        assert!(
            failure.starts_with("\nevent: mreg-discarded\n\nevent: message\ndata: "),
            "{failure:?}"
        );
        // What a client's SSE parser then sees: the fragment as an event of another type, and
        // the error as a message.
        let mut whole = b"data: {\"jsonrpc\":\"2.0\",\"id\":7,\"res".to_vec();
        whole.extend_from_slice(failure.as_bytes());
        let text = String::from_utf8(whole).expect("text");
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert!(events[0].contains("event: mreg-discarded"));
        let error = super::super::rpc::sse::message(events[1]).expect("JSON");
        assert_eq!(error["id"], 7);
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("server 's'"))
        );
        // A stream that ended between events needs no terminator.
        let clean = Watch::new(json!(7));
        assert!(
            clean
                .failure("s", "ended the stream")
                .starts_with(b"event: message")
        );
    }

    /// How the upstream's stream goes on after its chunks.
    #[derive(Clone, Copy, PartialEq, Debug)]
    enum Then {
        Ends,
        StaysOpen,
        BreaksOff,
    }

    /// What `single_answer` makes of an SSE answer to request 7 that arrives in `chunks` (and
    /// then ends, stays open or breaks off): the content type and the body the client gets
    /// ("(still open)" or "(broke off)" when reading it does not end).
    async fn answered(chunks: &[&str], then: Then) -> (String, String) {
        let chunks: Vec<Result<Bytes, std::io::Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        let body = match then {
            Then::Ends => axum::body::Body::from_stream(stream::iter(chunks)),
            Then::StaysOpen => {
                axum::body::Body::from_stream(stream::iter(chunks).chain(stream::pending()))
            }
            Then::BreaksOff => {
                axum::body::Body::from_stream(stream::iter(chunks).chain(stream::once(async {
                    Err(std::io::Error::other("connection reset"))
                })))
            }
        };
        let mut response = axum::response::Response::new(body);
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("text/event-stream"),
        );
        let tasks = crate::tasks::Tasks::new(tokio_util::sync::CancellationToken::new());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(300);
        let out = single_answer(response, &json!(7), deadline, &tasks).await;
        let kind = out.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap_or_default()
            .to_owned();
        // A stream left open is read until the deadline has passed, then cut short.
        let read = axum::body::to_bytes(out.into_body(), usize::MAX);
        let body = tokio::time::timeout(std::time::Duration::from_millis(500), read)
            .await
            .map_or_else(
                |_| "(still open)".to_owned(),
                |b| {
                    b.map_or_else(
                        |_| "(broke off)".to_owned(),
                        |b| String::from_utf8_lossy(&b).into_owned(),
                    )
                },
            );
        (kind, body)
    }

    #[tokio::test]
    async fn a_stream_whose_first_message_is_the_response_becomes_that_message_as_json() {
        let answer = r#"{"jsonrpc":"2.0","id":7,"result":{"ok":true}}"#;
        let primed = format!("id: 1\ndata:\n\nevent: message\nid: 2\ndata: {answer}\n\n");
        // The response in one chunk, cut inside a line, after a priming event or a comment,
        // followed by more the client would not read, or with the stream still open.
        for (chunks, then) in [
            (
                vec![format!("event: message\ndata: {answer}\n\n")],
                Then::Ends,
            ),
            (
                vec![format!("event:message\ndata:{answer}\n\n")],
                Then::BreaksOff,
            ),
            (
                vec![
                    "data: {\"jsonrpc\":\"2.0\",\"id\":7,".to_owned(),
                    "\"result\":{\"ok\":true}}\r\n\r\n".to_owned(),
                ],
                Then::Ends,
            ),
            (vec![primed.clone()], Then::Ends),
            (
                vec![format!(
                    ": keep-alive\n\ndata: {answer}\n\ndata: {{\"late\":1}}\n\n"
                )],
                Then::Ends,
            ),
            (vec![primed], Then::StaysOpen),
        ] {
            let chunks: Vec<&str> = chunks.iter().map(String::as_str).collect();
            assert_eq!(
                answered(&chunks, then).await,
                ("application/json".to_owned(), answer.to_owned()),
                "{chunks:?}"
            );
        }
    }

    #[tokio::test]
    async fn any_other_stream_is_relayed_whole_from_its_first_byte() {
        let progress = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        let answer = "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n";
        let other_id = "data: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":{}}\n\n";
        let other_type = "event: note\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n";
        // Not "message": the value keeps all but the one space after the colon.
        let spaced_type = "event:  message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n\n";
        // A byte order mark, which clients drop, before a notification.
        let marked =
            "\u{FEFF}data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
        for chunks in [
            vec![progress, answer],
            vec![other_id, answer],
            vec![other_type, answer],
            vec![spaced_type, answer],
            vec![marked, answer],
            vec!["data: not json\n\n", answer],
            // Ends before any message, or in the middle of one: the watch reports it.
            vec!["id: 1\ndata:\n\n"],
            vec!["data: {\"jsonrpc\":\"2.0\",\"id\":7,"],
        ] {
            let (kind, body) = answered(&chunks, Then::Ends).await;
            assert_eq!(kind, "text/event-stream", "{chunks:?}");
            assert_eq!(body, chunks.concat(), "{chunks:?}");
        }
        // Comments past what is held: relayed as a stream, nothing lost.
        let comment = format!(": {}\n\n", "x".repeat(1024 * 1024));
        let mut flood = vec![comment.as_str(); MAX_WATCHED_EVENT / comment.len() + 2];
        flood.push(answer);
        let (kind, body) = answered(&flood, Then::Ends).await;
        assert_eq!(kind, "text/event-stream");
        assert_eq!(body.len(), flood.concat().len());
        // Broken off before the response: the stream is relayed, and breaks off for the client.
        let (kind, body) = answered(&[progress], Then::BreaksOff).await;
        assert_eq!(
            (kind.as_str(), body.as_str()),
            ("text/event-stream", "(broke off)")
        );
        // No message by the deadline: what came is relayed and the rest follows as it comes.
        let (kind, body) = answered(&[": waiting\n\n"], Then::StaysOpen).await;
        assert_eq!(
            (kind.as_str(), body.as_str()),
            ("text/event-stream", "(still open)")
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_answer_is_seen_however_the_stream_is_cut_and_whatever_its_line_ends(
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            crlf in any::<bool>(),
            noise in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let end = if crlf { "\r\n" } else { "\n" };
            // Events before the answer: a notification, then bytes of a comment line.
            let mut stream = format!(
                "event: message{end}data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}}{end}{end}"
            )
            .into_bytes();
            stream.extend(b": ");
            stream.extend(noise.iter().map(|b| if matches!(b, b'\r' | b'\n') { b' ' } else { *b }));
            stream.extend(format!("{end}{end}data: {{\"jsonrpc\":\"2.0\",\"id\":5,\"result\":{{}}}}{end}{end}").as_bytes());
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
            points.sort_unstable();
            let mut watch = Watch::new(json!(5));
            let mut seen = Seen::Pending;
            let mut from = 0;
            for to in points.into_iter().chain([stream.len()]) {
                if seen == Seen::Pending {
                    seen = watch.feed(&stream[from..to]);
                }
                from = to;
            }
            prop_assert_eq!(seen, Seen::Answered);
        }

        #[test]
        fn any_bytes_are_fed_without_panicking(chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..128), 0..16)) {
            let mut watch = Watch::new(json!(1));
            for chunk in chunks {
                let _ = watch.feed(&chunk);
            }
            let _ = watch.failure("s", "ended the stream");
        }
    }
}
