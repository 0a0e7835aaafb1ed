//! Client ID Metadata Documents: a client whose `client_id` is an https URL is not registered;
//! its metadata is fetched from that URL. The fetch is guarded against server-side request
//! forgery: https only, the host resolved once and every address checked to be public by the
//! gateway's address classifier (then that address is used, so DNS cannot change the answer in
//! between, and no environment proxy is used), no redirects, a 5-second limit and at most 5 KiB.
//! A failed fetch is remembered for a minute. `MREG_CIMD_ALLOW_PRIVATE` lifts the address check (and allows plain
//! http to loopback hosts) for tests and closed networks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;
use url::Url;

use super::registrations::{self, Client, RegistrationError, RegistrationRequest};

/// Largest document accepted.
const MAX_DOCUMENT: usize = 5 * 1024;
/// Longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a fetched document is trusted when it says nothing (`Cache-Control: max-age`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

fn refuse(description: impl Into<String>) -> RegistrationError {
    RegistrationError {
        error: "invalid_client",
        description: description.into(),
    }
}

/// Whether `client_id` names a metadata document rather than a registered client.
pub fn is_document_url(client_id: &str) -> bool {
    client_id.starts_with("https://") || client_id.starts_with("http://")
}

/// Whether `ip` is an address on the public internet, by the gateway's one address classifier
/// ([`crate::egress::kind`]): addresses embedded in NAT64 and 6to4 are judged as the IPv4 address
/// they reach; Teredo, local-use NAT64, `192.0.0.0/24` and the other reserved ranges, private,
/// site-local (`fec0::/10`), loopback, link-local and metadata addresses are not public.
pub fn is_public(ip: IpAddr) -> bool {
    crate::egress::kind(ip) == crate::egress::Kind::Public
}

/// How long a failed fetch is remembered, so that a client id that cannot be used does not make
/// mreg fetch it again on every request.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(60);

/// Fetches and validates the document at `client_id`. Returns the client and how long it may be
/// cached.
pub async fn fetch(
    client_id: &str,
    allow_private: bool,
    supported_scopes: &[String],
) -> Result<(Client, Duration), RegistrationError> {
    let url = Url::parse(client_id).map_err(|_| refuse("the client_id is not a URL"))?;
    let host = url
        .host_str()
        .ok_or_else(|| refuse("the client_id URL has no host"))?
        .to_owned();
    let loopback_http = url.scheme() == "http" && allow_private && registrations::is_loopback(&url);
    if url.scheme() != "https" && !loopback_http {
        return Err(refuse(
            "a client_id metadata document must be served over https",
        ));
    }
    if url.path() == "/" || url.fragment().is_some() || !url.username().is_empty() {
        return Err(refuse(
            "a client_id URL needs a path and no fragment or credentials",
        ));
    }
    if client_id.len() > 2000 {
        return Err(refuse("the client_id URL is too long"));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|_| refuse(format!("the client's host {host} cannot be resolved")))?
        .collect();
    let Some(address) = addresses.first().copied() else {
        return Err(refuse(format!("the client's host {host} has no address")));
    };
    if !allow_private && addresses.iter().any(|a| !is_public(a.ip())) {
        return Err(refuse(format!(
            "the client's host {host} resolves to a private address; its metadata is not fetched"
        )));
    }
    // No proxy: an HTTP(S)_PROXY from the environment would connect to the host by name, past
    // the address checked and pinned here.
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, address)
        .build()
        .map_err(|e| refuse(format!("cannot fetch the client's metadata: {e}")))?;
    let response = http
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| {
            refuse(format!(
                "cannot fetch the client's metadata: {}",
                domain::text::root_cause(&e)
            ))
        })?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(refuse(format!(
            "the client's metadata document answered {} (redirects are not followed)",
            response.status()
        )));
    }
    let ttl = max_age(response.headers()).unwrap_or(DEFAULT_TTL);
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| refuse(format!("cannot read the client's metadata: {e}")))?;
        if body.len() + chunk.len() > MAX_DOCUMENT {
            return Err(refuse(format!(
                "the client's metadata document is larger than {MAX_DOCUMENT} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let document: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|_| refuse("the client's metadata document is not JSON"))?;
    if document["client_id"].as_str() != Some(client_id) {
        return Err(refuse(
            "the metadata document's client_id is not the URL it was fetched from",
        ));
    }
    if let Some(method) = document["token_endpoint_auth_method"].as_str()
        && method != "none"
    {
        return Err(refuse(format!(
            "token_endpoint_auth_method '{method}' is not supported; public clients use none"
        )));
    }
    let request: RegistrationRequest = serde_json::from_value(document)
        .map_err(|e| refuse(format!("the client's metadata document is malformed: {e}")))?;
    let client = registrations::register(request, supported_scopes, client_id.to_owned(), 0)?;
    Ok((client, ttl))
}

/// `Cache-Control: max-age`, bounded to one minute … one day.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    if value.contains("no-store") || value.contains("no-cache") {
        return Some(Duration::from_secs(60));
    }
    let seconds: u64 = value
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))?
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds.clamp(60, 86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_count_as_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            // NAT64 and 6to4 forms of private, loopback and metadata addresses.
            "64:ff9b::a00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:a00:1::1",
            "2002:a9fe:a9fe::1",
            // Local-use NAT64, Teredo, IETF protocol assignments, site-local.
            "64:ff9b:1::8.8.8.8",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "192.0.0.1",
            "192.0.0.170",
            "fec0::1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["20.190.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }
}
