//! The cookie that binds a sign-in to the browser that started it.

use super::*;

pub(super) fn cookie_name(oauth: &OAuth) -> &'static str {
    if oauth.secure_cookies {
        "__Host-mreg_consent"
    } else {
        "mreg_consent"
    }
}

/// The browser-binding value from the request's cookie, if present and well-formed. Each
/// `Cookie` header is split on `;` by the `cookie` crate; a malformed cookie beside ours (another
/// application on this host may set anything) is skipped, not fatal to the rest.
pub(super) fn browser_cookie(oauth: &OAuth, headers: &HeaderMap) -> Option<String> {
    binding_value(headers, cookie_name(oauth))
}

/// The value of cookie `name` in `headers` if it has the shape of a binding value (43 URL-safe
/// base64 characters).
fn binding_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(::cookie::Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
        .filter(|v| {
            v.len() == 43
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_cookie_is_found_beside_cookies_of_other_applications() {
        let value = "a".repeat(43);
        let mut headers = HeaderMap::new();
        // Another application on this host set a cookie with an unbalanced quote, and one
        // header line holds a cookie without a value.
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=\"dark; junk; other=1"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_str(&format!("x=y; mreg_consent={value}; z=\"")).expect("value"),
        );
        assert_eq!(binding_value(&headers, "mreg_consent"), Some(value));
        assert_eq!(binding_value(&headers, "__Host-mreg_consent"), None);
        let mut short = HeaderMap::new();
        short.insert(header::COOKIE, HeaderValue::from_static("mreg_consent=abc"));
        assert_eq!(
            binding_value(&short, "mreg_consent"),
            None,
            "not a binding value"
        );
    }
}
