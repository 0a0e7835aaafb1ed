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

    /// Why a request is refused, if it is, and with which status: 400 for a request that names
    /// its host or origin more than once (RFC 9112 §3.2: which one would count is ambiguous),
    /// 403 for a foreign one.
    fn refuses(&self, uri: &axum::http::Uri, headers: &HeaderMap) -> Option<(StatusCode, String)> {
        for name in [header::HOST, header::ORIGIN] {
            if headers.get_all(&name).iter().nth(1).is_some() {
                return Some((
                    StatusCode::BAD_REQUEST,
                    format!("the request has more than one {name} header"),
                ));
            }
        }
        // A request target in absolute form names the host that counts (RFC 9112 §3.2.2).
        if let Some(authority) = uri.authority()
            && !host_of_authority(authority.as_str()).is_some_and(|h| self.allows(h))
        {
            return Some((
                StatusCode::FORBIDDEN,
                format!(
                    "'{}' is not a name of this gateway (set MREG_PUBLIC_URL or MREG_ALLOWED_HOSTS)",
                    printable(authority.as_str())
                ),
            ));
        }
        self.refuses_headers(headers)
            .map(|why| (StatusCode::FORBIDDEN, why))
    }

    /// Why `headers` (`Host`, `Origin`) are refused, if they are.
    fn refuses_headers(&self, headers: &HeaderMap) -> Option<String> {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        match host {
            None => return Some("the request names no Host".to_owned()),
            Some(host) if !host_of_authority(host).is_some_and(|h| self.allows(h)) => {
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

/// The host of a `Host` header value (`name`, `name:port`, `[v6]:port`); `None` when what
/// follows the host is not a port (`localhost:80@evil.example`), so that no value passes by
/// starting with one of the gateway's names.
fn host_of_authority(authority: &str) -> Option<&str> {
    let (host, rest) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, rest) = v6.split_once(']')?;
            (host, rest)
        }
        None => authority
            .find(':')
            .map_or((authority, ""), |i| authority.split_at(i)),
    };
    let port_ok = match rest.strip_prefix(':') {
        Some(port) => port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit()),
        None => rest.is_empty(),
    };
    port_ok.then_some(host)
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
        match self.hosts.refuses(request.uri(), request.headers()) {
            None => Either::Left(self.inner.call(request)),
            Some((status, why)) => {
                tracing::info!(reason = %why, path = %request.uri().path(), "request refused by the host guard");
                Either::Right(ready(Ok(refusal(request.uri().path(), status, why))))
            }
        }
    }
}

/// A refusal (`status`), as a JSON-RPC error on the MCP routes and as the REST error elsewhere.
fn refusal(path: &str, status: StatusCode, why: String) -> Response {
    let forbidden = status == StatusCode::FORBIDDEN;
    if path == "/mcp" || path.starts_with("/mcp/") || path.starts_with("/servers/") {
        let code = if forbidden {
            crate::jsonrpc::FORBIDDEN
        } else {
            crate::jsonrpc::INVALID_REQUEST
        };
        return crate::jsonrpc::error(status, None, code, why);
    }
    let error = if forbidden {
        "forbidden"
    } else {
        "bad_request"
    };
    crate::http::error::ApiError::new(status, error, why).into_response()
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
            assert_eq!(hosts().refuses_headers(&map), None, "{host}");
        }
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        for refused in [
            headers(&[("host", "evil.example.net")]),
            headers(&[("host", "localhost:8000@evil.example.net")]),
            headers(&[("host", "localhost@evil.example.net")]),
            headers(&[("host", "127.0.0.1:80:81")]),
            headers(&[("host", "127.0.0.1:8000x")]),
            headers(&[("host", "127.0.0.1:123456")]),
            headers(&[("host", "[::1]x")]),
            headers(&[("host", "[::1")]),
            headers(&[("host", "127.0.0.1.evil.net:8000")]),
            headers(&[]),
            headers(&[
                ("host", "127.0.0.1:8000"),
                ("origin", "https://evil.example.net"),
            ]),
            headers(&[("host", "127.0.0.1:8000"), ("origin", "null")]),
            headers(&[("host", "127.0.0.1:8000"), ("origin", "file://localhost")]),
        ] {
            assert!(hosts().refuses_headers(&refused).is_some(), "{refused:?}");
        }
        assert_eq!(
            hosts().refuses_headers(&headers(&[
                ("host", "127.0.0.1:8000"),
                ("origin", "http://localhost:6274")
            ])),
            None,
            "a page served from loopback (a local inspector) may call"
        );
        assert_eq!(
            hosts().refuses_headers(&headers(&[
                ("host", "gw.example.com"),
                ("origin", "https://inspector.example.com")
            ])),
            None,
            "an origin on the CORS list may call"
        );
        assert!(
            hosts()
                .refuses_headers(&headers(&[
                    ("host", "gw.example.com"),
                    ("origin", "https://inspector.example.com.evil.net")
                ]))
                .is_some()
        );
    }

    #[test]
    fn two_hosts_or_origins_are_a_bad_request_and_an_absolute_target_must_be_ours() {
        let root: axum::http::Uri = "/healthz".parse().expect("uri");
        let mut two = HeaderMap::new();
        two.append(header::HOST, HeaderValue::from_static("127.0.0.1"));
        two.append(header::HOST, HeaderValue::from_static("evil.example"));
        let (status, why) = hosts().refuses(&root, &two).expect("refused");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(why.contains("more than one host"), "{why}");
        let mut origins = headers(&[("host", "127.0.0.1")]);
        origins.append(header::ORIGIN, HeaderValue::from_static("http://127.0.0.1"));
        origins.append(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert_eq!(
            hosts().refuses(&root, &origins).map(|r| r.0),
            Some(StatusCode::BAD_REQUEST)
        );
        let ours = headers(&[("host", "127.0.0.1")]);
        let foreign: axum::http::Uri = "http://evil.example/healthz".parse().expect("uri");
        assert_eq!(
            hosts().refuses(&foreign, &ours).map(|r| r.0),
            Some(StatusCode::FORBIDDEN)
        );
        let own: axum::http::Uri = "http://gw.example.com/healthz".parse().expect("uri");
        assert_eq!(hosts().refuses(&own, &ours), None);
        assert_eq!(hosts().refuses(&root, &ours), None);
    }
}
