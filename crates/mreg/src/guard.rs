//! DNS-rebinding and cross-site protection on both listeners, for every route: a request must
//! name one of the gateway's own hosts in `Host`, and a request from a browser page (`Origin`)
//! must come from one of them too. A page on another site that rebinds its name to 127.0.0.1
//! sends its own name as `Host`; a page that posts across sites sends its own `Origin`. Either
//! is refused with 403 before anything else runs, so no role, budget or audit row is spent on
//! it (the MCP transport specification requires servers to validate `Origin`).
//!
//! The gateway's hosts: loopback (`localhost`, `127.0.0.1`, `::1`), the listener's own host when
//! it is not a wildcard, the host of `MREG_PUBLIC_URL`, and `MREG_ALLOWED_HOSTS`.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

use crate::config::Config;

/// The host names a listener answers to, lowercased, without brackets or port, and the other
/// web origins whose pages may call it (CORS).
#[derive(Debug, Clone)]
pub struct Hosts(Arc<[String]>, Arc<[String]>);

impl Hosts {
    /// Loopback, `listener_host` (unless a wildcard), the public URL's host and the configured
    /// extra hosts.
    pub fn for_listener(config: &Config, listener_host: &str) -> Self {
        let mut hosts = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if !matches!(listener_host, "0.0.0.0" | "::" | "[::]") {
            hosts.push(bare(listener_host));
        }
        if let Some(host) = config.public_url.as_ref().and_then(|u| u.host_str()) {
            hosts.push(bare(host));
        }
        hosts.extend(config.allowed_hosts.iter().map(|h| bare(h)));
        hosts.sort();
        hosts.dedup();
        Self(hosts.into(), config.cors_origins.clone().into())
    }

    /// The names, for rmcp's own check on `/mcp`.
    pub fn names(&self) -> Vec<String> {
        self.0.to_vec()
    }

    fn allows(&self, host: &str) -> bool {
        let host = bare(host);
        self.0.contains(&host)
    }

    /// Why `headers` are refused, if they are.
    fn refuses(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match host {
            None => return Some("the request names no Host".to_owned()),
            Some(host) if !self.allows(host_of_authority(host)) => {
                return Some(format!(
                    "Host '{}' is not a name of this gateway (set MREG_PUBLIC_URL or MREG_ALLOWED_HOSTS)",
                    printable(host)
                ));
            }
            Some(_) => {}
        }
        let origin = headers.get(header::ORIGIN)?;
        if origin
            .to_str()
            .is_ok_and(|o| self.1.iter().any(|allowed| allowed == o))
        {
            return None;
        }
        let allowed = origin
            .to_str()
            .ok()
            .and_then(|o| url::Url::parse(o).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| u.host_str().map(|h| self.allows(h)))
            .unwrap_or(false);
        (!allowed).then(|| {
            format!(
                "Origin '{}' is not a page of this gateway; cross-site requests are refused",
                printable(origin.to_str().unwrap_or("(not text)"))
            )
        })
    }
}

/// A host name lowercased, without IPv6 brackets.
fn bare(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase()
}

/// The host of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_of_authority(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.split(':').next().unwrap_or(authority)
}

/// At most 100 characters of untrusted text, for a message.
fn printable(text: &str) -> String {
    text.chars().take(100).collect()
}

/// Layer: refuses requests naming a foreign `Host` or `Origin`.
#[derive(Clone)]
pub struct GuardLayer {
    hosts: Hosts,
}

impl GuardLayer {
    /// Guards a listener answering to `hosts`.
    pub fn new(hosts: Hosts) -> Self {
        Self { hosts }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            hosts: self.hosts.clone(),
        }
    }
}

/// The service [`GuardLayer`] wraps around a listener's routes.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    hosts: Hosts,
}

impl<S> Service<Request> for Guard<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match self.hosts.refuses(request.headers()) {
            None => Either::Left(self.inner.call(request)),
            Some(why) => {
                tracing::info!(reason = %why, path = %request.uri().path(), "request refused by the host guard");
                Either::Right(ready(Ok(refusal(request.uri().path(), why))))
            }
        }
    }
}

/// 403, as a JSON-RPC error on the MCP routes and as the REST error elsewhere.
fn refusal(path: &str, why: String) -> Response {
    if path == "/mcp" || path.starts_with("/mcp/") || path.starts_with("/servers/") {
        return crate::proxy::rpc::error(
            StatusCode::FORBIDDEN,
            None,
            crate::proxy::rpc::FORBIDDEN,
            why,
        );
    }
    crate::rest::error::ApiError::new(StatusCode::FORBIDDEN, "forbidden", why).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn hosts() -> Hosts {
        Hosts(
            ["127.0.0.1", "::1", "gw.example.com", "localhost"]
                .map(str::to_owned)
                .into(),
            ["https://inspector.example.com".to_owned()].into(),
        )
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn own_hosts_pass_with_or_without_a_port() {
        for host in [
            "127.0.0.1:8000",
            "localhost",
            "LOCALHOST:1",
            "[::1]:8001",
            "gw.example.com",
        ] {
            let mut map = HeaderMap::new();
            map.insert(header::HOST, HeaderValue::from_str(host).expect("value"));
            assert_eq!(hosts().refuses(&map), None, "{host}");
        }
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        for refused in [
            headers(&[("host", "evil.example.net")]),
            headers(&[("host", "127.0.0.1.evil.net:8000")]),
            headers(&[]),
            headers(&[
                ("host", "127.0.0.1:8000"),
                ("origin", "https://evil.example.net"),
            ]),
            headers(&[("host", "127.0.0.1:8000"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:8000"), ("origin", "file://localhost")]),
        ] {
            assert!(hosts().refuses(&refused).is_some(), "{refused:?}");
        }
        assert_eq!(
            hosts().refuses(&headers(&[
                ("host", "127.0.0.1:8000"),
                ("origin", "http://localhost:6274")
            ])),
            None,
            "a page served from loopback (a local inspector) may call"
        );
        assert_eq!(
            hosts().refuses(&headers(&[
                ("host", "gw.example.com"),
                ("origin", "https://inspector.example.com")
            ])),
            None,
            "an origin on the CORS list may call"
        );
        assert!(
            hosts()
                .refuses(&headers(&[
                    ("host", "gw.example.com"),
                    ("origin", "https://inspector.example.com.evil.net")
                ]))
                .is_some()
        );
    }
}
