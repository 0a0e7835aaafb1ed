//! Request ids and per-request telemetry: every request gets an id (the caller's `x-request-id`
//! when it is sane, otherwise a new one), echoed in the response header and in every error body,
//! and is counted and timed by route and status.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::response::Response;
use tower::{Layer, Service};
use tracing::Instrument;

use crate::metrics::Metrics;

/// The response (and request) header carrying the id.
pub const HEADER: &str = "x-request-id";

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The request's id, also kept in the request's extensions (for handlers that run outside the
/// request's task, such as MCP tool calls).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The id recorded in a request's `extensions`, or `-` when it has none.
pub fn of(extensions: &axum::http::Extensions) -> &str {
    extensions.get::<RequestId>().map_or("-", |r| r.0.as_str())
}

/// The id of the request being handled, or `-` outside one.
pub fn current() -> String {
    REQUEST_ID
        .try_with(Clone::clone)
        .unwrap_or_else(|_| "-".to_owned())
}

/// A new id: this process's random prefix and a counter, unique without a random draw (and a
/// system call) per request.
fn fresh() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..16].to_owned());
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // 16 hex digits without the formatting machinery, which is measurable on this path.
    let mut digits = [0_u8; 16];
    hex::encode_to_slice(count.to_be_bytes(), &mut digits).expect("8 bytes are 16 digits");
    let mut id = String::with_capacity(32);
    id.push_str(prefix);
    id.push_str(std::str::from_utf8(&digits).expect("hex digits are ASCII"));
    id
}

fn acceptable(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Layer: gives every request an id, runs it inside its span, records its metrics. A plain tower
/// layer rather than `from_fn`, because it wraps every request of the proxy's hot path.
#[derive(Clone)]
pub struct TrackLayer {
    /// One pointer to clone per request, rather than the metrics' several.
    metrics: Arc<Metrics>,
}

impl TrackLayer {
    /// Records into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Track {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`TrackLayer`] wraps around each route.
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let id = request
            .headers()
            .get(HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| acceptable(v))
            .map_or_else(fresh, str::to_owned);
        request.extensions_mut().insert(RequestId(id.clone()));
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str())
            .to_owned();
        let method = request.method().clone();
        let span = tracing::info_span!("request", %method, %route, request_id = %id);
        // Called here, not in the future below: the service need not be cloned to be owned.
        let handled = self.inner.call(request).instrument(span.clone());
        Box::pin(async move {
            let Ok(mut response) = REQUEST_ID.scope(id.clone(), handled).await;
            let elapsed = started.elapsed();
            let status = response.status();
            metrics.observe(method.as_str(), &route, status.as_u16(), elapsed);
            span.in_scope(|| {
                if status.is_server_error() {
                    tracing::warn!(
                        status = status.as_u16(),
                        elapsed_ms = elapsed.as_secs_f64() * 1e3,
                        "request failed"
                    );
                } else {
                    tracing::debug!(
                        status = status.as_u16(),
                        elapsed_ms = elapsed.as_secs_f64() * 1e3,
                        "request"
                    );
                }
            });
            if let Ok(value) = HeaderValue::from_str(&id) {
                response.headers_mut().insert(HEADER, value);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_are_acceptable_distinct_and_counted_in_hex() {
        let (a, b) = (fresh(), fresh());
        assert_eq!((a.len(), b.len()), (32, 32));
        assert!(acceptable(&a) && acceptable(&b));
        assert_eq!(a[..16], b[..16], "one prefix per process");
        let count = |id: &str| u64::from_str_radix(&id[16..], 16).expect("hex");
        assert!(count(&b) > count(&a), "{a} then {b}");
    }
}
