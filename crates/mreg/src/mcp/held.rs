//! How many `GET` streams one caller holds open on the MCP listener, over `/mcp` and every
//! `/servers/NAME/mcp` together. A stream costs the gateway a connection (a file descriptor) for
//! as long as the caller keeps it, spends no budget (it is not a JSON-RPC request) and needs no
//! role on `/mcp`: without a bound, one signed-in caller with no role at all held 20,000 open
//! and both listeners stopped accepting connections. A client holds one per session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use futures_util::StreamExt;

use crate::audit::Auditor;

/// Most `GET` streams one caller may hold open at once.
pub const MAX_STREAMS_PER_CALLER: usize = 32;

/// The open streams of each caller, and the audit log their refusals go to.
#[derive(Clone)]
pub struct Held {
    open: Arc<Mutex<HashMap<String, usize>>>,
    audit: Auditor,
}

/// One stream's place in its caller's count, given back when the stream ends.
struct Place {
    open: Arc<Mutex<HashMap<String, usize>>>,
    key: String,
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

impl Held {
    /// No stream open yet; refusals are audited through `audit`.
    pub fn new(audit: Auditor) -> Self {
        Self {
            open: Arc::default(),
            audit,
        }
    }

    /// A place for one more stream of `key`, unless it holds [`MAX_STREAMS_PER_CALLER`].
    fn take(&self, key: String) -> Option<Place> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= MAX_STREAMS_PER_CALLER {
            return None;
        }
        *count += 1;
        Some(Place {
            open: self.open.clone(),
            key,
        })
    }
}

/// Counts a signed-in caller's `GET` streams, refusing one over [`MAX_STREAMS_PER_CALLER`]
/// with 429 (audited as rate limited, so a caller hammering it is folded into a row a window).
/// Runs after authentication; the one local operator of a gateway without it is not counted.
pub async fn count(State(held): State<Held>, request: Request, next: Next) -> Response {
    if request.method() != Method::GET {
        return next.run(request).await;
    }
    let Some(caller) = request
        .extensions()
        .get::<Arc<domain::Principal>>()
        .filter(|p| p.subject != domain::Principal::anonymous().subject)
        .cloned()
    else {
        return next.run(request).await;
    };
    let key = format!(
        "{}\u{0}{}",
        caller.tenant.as_deref().unwrap_or_default(),
        caller.subject
    );
    let Some(place) = held.take(key) else {
        let message = format!(
            "too many open streams: a caller may hold {MAX_STREAMS_PER_CALLER} GET streams at once, over /mcp and every /servers/NAME/mcp; end a session (or its stream) first"
        );
        let request_id = crate::http::request_id::of(request.extensions()).to_owned();
        if let Ok(mut entry) = held.audit.open(&caller, &request_id, "stream").await {
            let path = request.uri().path();
            let server = path
                .strip_prefix("/servers/")
                .and_then(|rest| rest.split('/').next());
            entry.target(None, server);
            entry.decided(crate::audit::decision::RATE_LIMITED);
            entry.finish(Err(message.clone()));
        }
        return crate::jsonrpc::error(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            crate::jsonrpc::RATE_LIMITED,
            message,
        );
    };
    let response = next.run(request).await;
    let is_stream = response.status().is_success()
        && response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
    if !is_stream {
        return response;
    }
    // The place is the stream's: given back when the stream is dropped (ended, or cut off).
    let (parts, body) = response.into_parts();
    let data = body.into_data_stream().map(move |chunk| {
        let _ = &place;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(data))
}
