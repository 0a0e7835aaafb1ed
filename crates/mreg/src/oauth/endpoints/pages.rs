//! The HTML pages of the flow (errors, consent), written with `maud`: every value put into a
//! page is escaped by the template, so a client's name or redirect URI cannot become markup.

use maud::{DOCTYPE, Markup, html};

use super::*;

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;\
     padding:0 1rem;color:#222}.host{font-size:1.3rem;font-weight:bold}\
     button{font-size:1rem;padding:.5rem 1.5rem;margin-right:1rem}\
     code{background:#eee;padding:0 .2rem}";

/// A page titled `title` around `body`, never framed, cached or given a referrer, and allowed
/// no script (its content-security policy).
pub(super) fn page(status: StatusCode, title: &str, body: Markup) -> Response {
    let html = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width";
                title { (title) }
                style { (maud::PreEscaped(STYLE)) }
            }
            body {
                h1 { (title) }
                (body)
            }
        }
    };
    let mut response = (status, Html(html.into_string())).into_response();
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The page that says why a sign-in cannot go on (and notes it for the audit row).
pub(super) fn error_page(status: StatusCode, message: &str) -> Response {
    let response = page(status, "Sign-in cannot continue", html! { p { (message) } });
    Note::on(response, |n| n.error = Some(message.to_owned()))
}
