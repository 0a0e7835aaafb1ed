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
    use headers::HeaderMapExt;
    headers
        .typed_get::<headers::Cookie>()?
        .get(cookie_name(oauth))
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

/// The `Set-Cookie` value binding a sign-in to this browser: sent back only to this gateway
/// (`__Host-` over https), never to scripts, not on cross-site requests but top-level
/// navigation back from the provider, for as long as a sign-in may take.
pub(super) fn set_cookie(oauth: &OAuth, value: &str) -> HeaderValue {
    let cookie = ::cookie::Cookie::build((cookie_name(oauth), value))
        .path("/")
        .http_only(true)
        .same_site(::cookie::SameSite::Lax)
        .max_age(time::Duration::seconds(
            i64::try_from(TRANSACTION_TTL.as_secs()).unwrap_or(i64::MAX),
        ))
        .secure(oauth.secure_cookies)
        .build();
    HeaderValue::from_str(&cookie.to_string()).unwrap_or_else(|_| HeaderValue::from_static(""))
}
