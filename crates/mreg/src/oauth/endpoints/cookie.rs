//! The cookie that binds a sign-in to the browser that started it.

use super::*;

pub(super) fn cookie_name(oauth: &OAuth) -> &'static str {
    if oauth.secure_cookies {
        "__Host-mreg_consent"
    } else {
        "mreg_consent"
    }
}

/// The browser-binding value from the request's cookie, if present and well-formed.
pub(super) fn browser_cookie(oauth: &OAuth, headers: &HeaderMap) -> Option<String> {
    let name = cookie_name(oauth);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

pub(super) fn set_cookie(oauth: &OAuth, value: &str) -> HeaderValue {
    let secure = if oauth.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{secure}",
        cookie_name(oauth),
        TRANSACTION_TTL.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}
