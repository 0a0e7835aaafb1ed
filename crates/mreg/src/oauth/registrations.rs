//! OAuth clients: Dynamic Client Registration (RFC 7591) and redirect-URI rules. Every client
//! is public (PKCE, no secret). Redirect URIs are matched exactly, except that a loopback URI may
//! change its port (RFC 8252 §7.3); they may not carry fragments, credentials, dot-segments or
//! schemes that run code in the browser.

use serde::{Deserialize, Serialize};
use url::{Host, Url};

/// Schemes never accepted as redirect targets.
const UNSAFE_SCHEMES: [&str; 8] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
];

/// Longest accepted client name.
const MAX_NAME: usize = 200;
/// Most redirect URIs per client.
const MAX_REDIRECTS: usize = 10;
/// Longest accepted redirect URI.
pub const MAX_REDIRECT_LEN: usize = 2000;
/// Longest accepted `scope` of a registration.
pub const MAX_SCOPE_LEN: usize = 1000;
/// Most entries in `grant_types` (two are supported; repeats are not stored without bound).
const MAX_GRANT_TYPES: usize = 4;
/// Most entries in `response_types`.
const MAX_RESPONSE_TYPES: usize = 4;

/// A registration request, as far as mreg reads it.
#[derive(Debug, Deserialize)]
pub struct RegistrationRequest {
    /// Redirect URIs (at least one).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Display name.
    #[serde(default)]
    pub client_name: Option<String>,
    /// Grant types; default authorization_code and refresh_token.
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    /// Response types; default code.
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
    /// Requested authentication method; mreg registers every client as `none`.
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
    /// `web` or `native` (SEP-837); inferred from the redirect URIs when absent.
    #[serde(default)]
    pub application_type: Option<String>,
    /// Scopes the client will ask for.
    #[serde(default)]
    pub scope: Option<String>,
    /// Client home page.
    #[serde(default)]
    pub client_uri: Option<String>,
}

/// A registered client as stored and returned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Client {
    /// Issued client id.
    pub client_id: String,
    /// Unix time of registration.
    pub client_id_issued_at: i64,
    /// Exact redirect URIs.
    pub redirect_uris: Vec<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// Grant types.
    pub grant_types: Vec<String>,
    /// Response types.
    pub response_types: Vec<String>,
    /// Always `none`.
    pub token_endpoint_auth_method: String,
    /// `web` or `native`.
    pub application_type: String,
    /// Scopes the client registered for, space-separated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Why a registration or redirect URI was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationError {
    /// RFC 7591 error code.
    pub error: &'static str,
    /// What is wrong.
    pub description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> RegistrationError {
    RegistrationError {
        error,
        description: description.into(),
    }
}

/// Whether `url` points at this machine (RFC 8252 loopback redirect).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks one redirect URI as registered. Returns the parsed URI.
pub fn check_redirect_uri(raw: &str, native: bool) -> Result<Url, RegistrationError> {
    let bad = |why: &str| {
        refuse(
            "invalid_redirect_uri",
            format!("redirect URI '{raw}' {why}"),
        )
    };
    if raw.len() > MAX_REDIRECT_LEN {
        return Err(bad("is too long"));
    }
    // A URI is printable ASCII (RFC 3986). Anything else would be shown as registered on the
    // consent page and sent to the browser as the parser rewrote it (spaces and controls
    // dropped or encoded, hosts lowercased to punycode): the user would approve one address
    // and be sent to another.
    if let Some(c) = raw.chars().find(|c| !c.is_ascii_graphic()) {
        let which = match c {
            ' ' => "a space".to_owned(),
            c => format!("the character U+{:04X}", u32::from(c)),
        };
        return Err(bad(&format!(
            "contains {which}: a redirect URI is printable ASCII without spaces (percent-encode other characters, write an internationalised host name in punycode)"
        )));
    }
    let url = Url::parse(raw).map_err(|_| bad("is not an absolute URI"))?;
    let scheme = url.scheme();
    if UNSAFE_SCHEMES.contains(&scheme) || scheme == "wss" {
        return Err(bad("uses a scheme that is never a redirect target"));
    }
    if raw.contains('#') {
        return Err(bad("has a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() || raw_has_userinfo(raw) {
        return Err(bad("has user information"));
    }
    if has_dot_segment(raw) {
        return Err(bad("has dot-segments (. or ..)"));
    }
    match scheme {
        "https" => {
            if url.host().is_none() {
                return Err(bad("has no host"));
            }
        }
        "http" => {
            if !is_loopback(&url) {
                return Err(bad("uses http; only loopback addresses may (use https)"));
            }
            if !native {
                return Err(bad(
                    "is a loopback address, which only native clients may use",
                ));
            }
        }
        _ => {
            // A private-use scheme (RFC 8252 §7.1) of a native app: a reverse domain name the
            // app's owner controls, such as com.example.app:/cb. Schemes without a dot are
            // refused: they are the operating system's own handlers (search-ms:, ms-msdt:,
            // ms-settings:, …), which a redirect after sign-in would launch.
            if !native {
                return Err(bad(
                    "uses a custom scheme, which only native clients may use",
                ));
            }
            if !scheme.contains('.') {
                return Err(bad(
                    "uses a custom scheme that is not a reverse domain name (RFC 8252 §7.1: e.g. com.example.app:/callback)",
                ));
            }
        }
    }
    Ok(url)
}

/// Characters that change how the text around them is shown without showing themselves: the
/// Unicode default-ignorable code points (bidirectional controls: U+202E turns `exe.txt` into
/// `txt.exe`; zero-width characters; fillers that render blank; variation selectors; tags),
/// plus the line and paragraph separators.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            // (U+FE0E and U+FE0F only choose text or emoji style: "❤️" is an ordinary name.)
            | '\u{FE00}'..='\u{FE0D}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

fn raw_has_userinfo(raw: &str) -> bool {
    let after = raw.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    let authority = after.split(['/', '?']).next().unwrap_or("");
    authority.contains('@')
}

fn has_dot_segment(raw: &str) -> bool {
    let lower = raw.to_ascii_lowercase().replace("%2e", ".");
    let path = lower
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(&lower)
        .split(['?'])
        .next()
        .unwrap_or("");
    path.split(['/', '\\'])
        .skip(1)
        .any(|segment| segment == "." || segment == "..")
}

/// Whether `requested` may be used for a client that registered `registered`: equal, or both
/// loopback and equal except for the port.
pub fn redirect_matches(registered: &[String], requested: &str) -> bool {
    if registered.iter().any(|r| r == requested) {
        return true;
    }
    let Ok(req) = Url::parse(requested) else {
        return false;
    };
    if !is_loopback(&req) || req.scheme() != "http" || has_dot_segment(requested) {
        return false;
    }
    registered.iter().any(|r| {
        Url::parse(r).is_ok_and(|reg| {
            is_loopback(&reg)
                && reg.scheme() == req.scheme()
                && reg.host() == req.host()
                && reg.path() == req.path()
                && reg.query() == req.query()
                && req.fragment().is_none()
                && req.username().is_empty()
        })
    })
}

/// Validates a registration and builds the client to store.
pub fn register(
    request: RegistrationRequest,
    supported_scopes: &[String],
    client_id: String,
    now: i64,
) -> Result<Client, RegistrationError> {
    let meta = |d: String| refuse("invalid_client_metadata", d);
    if request.redirect_uris.is_empty() {
        return Err(refuse(
            "invalid_redirect_uri",
            "redirect_uris must list at least one URI",
        ));
    }
    if request.redirect_uris.len() > MAX_REDIRECTS {
        return Err(refuse(
            "invalid_redirect_uri",
            format!("at most {MAX_REDIRECTS} redirect URIs may be registered"),
        ));
    }
    let application_type = match request.application_type.as_deref() {
        Some(t @ ("web" | "native")) => t.to_owned(),
        Some(other) => {
            return Err(meta(format!(
                "application_type '{other}' is not web or native"
            )));
        }
        None => {
            // Without a declared type, a client whose URIs are all loopback or custom-scheme is
            // a native app; anything else is a web app.
            let native = request.redirect_uris.iter().all(|u| {
                Url::parse(u).is_ok_and(|url| url.scheme() != "https" || is_loopback(&url))
            });
            if native { "native" } else { "web" }.to_owned()
        }
    };
    let native = application_type == "native";
    for uri in &request.redirect_uris {
        check_redirect_uri(uri, native)?;
    }
    if let Some(scope) = &request.scope
        && scope.len() > MAX_SCOPE_LEN
    {
        return Err(meta(format!(
            "scope is longer than {MAX_SCOPE_LEN} characters"
        )));
    }
    if request
        .grant_types
        .as_ref()
        .is_some_and(|g| g.len() > MAX_GRANT_TYPES)
    {
        return Err(meta(format!(
            "grant_types lists more than {MAX_GRANT_TYPES} entries"
        )));
    }
    if request
        .response_types
        .as_ref()
        .is_some_and(|r| r.len() > MAX_RESPONSE_TYPES)
    {
        return Err(meta(format!(
            "response_types lists more than {MAX_RESPONSE_TYPES} entries"
        )));
    }
    let grant_types = request
        .grant_types
        .unwrap_or_else(|| vec!["authorization_code".to_owned(), "refresh_token".to_owned()]);
    if !grant_types.iter().any(|g| g == "authorization_code") {
        return Err(meta(
            "grant_types must include authorization_code".to_owned(),
        ));
    }
    if let Some(g) = grant_types
        .iter()
        .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
    {
        return Err(meta(format!("grant type '{g}' is not supported")));
    }
    let response_types = request
        .response_types
        .unwrap_or_else(|| vec!["code".to_owned()]);
    if response_types != ["code"] {
        return Err(meta("response_types must be [\"code\"]".to_owned()));
    }
    let client_name = match request.client_name {
        Some(name) if name.chars().count() > MAX_NAME => {
            return Err(meta(format!(
                "client_name is longer than {MAX_NAME} characters"
            )));
        }
        Some(name) if name.chars().any(char::is_control) => {
            return Err(meta("client_name contains control characters".to_owned()));
        }
        Some(name) if name.chars().any(is_invisible) => {
            return Err(meta(
                "client_name contains invisible or text-direction characters (such as U+202E), which would let it read differently on the consent page".to_owned(),
            ));
        }
        other => other,
    };
    if let Some(scope) = &request.scope
        && let Some(bad) = scope
            .split_whitespace()
            .find(|s| !supported_scopes.iter().any(|x| x == s))
    {
        return Err(refuse(
            "invalid_client_metadata",
            format!("scope '{bad}' is not offered by this server"),
        ));
    }
    let _ = request.client_uri;
    let _ = request.token_endpoint_auth_method;
    Ok(Client {
        client_id,
        client_id_issued_at: now,
        redirect_uris: request.redirect_uris,
        client_name,
        grant_types,
        response_types,
        token_endpoint_auth_method: "none".to_owned(),
        application_type,
        scope: request.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(3000))]

            #[test]
            fn redirect_uris_are_judged_without_panicking(raw in any::<String>(), native in any::<bool>()) {
                if let Ok(url) = check_redirect_uri(&raw, native) {
                    prop_assert!(url.fragment().is_none());
                    prop_assert!(!matches!(url.scheme(), "javascript" | "data" | "file" | "vbscript"));
                    prop_assert!(redirect_matches(std::slice::from_ref(&raw), &raw), "a URI matches itself");
                }
            }

            #[test]
            fn mutated_redirect_uris_are_judged_without_panicking(
                seed in prop::sample::select(&["https://app.example.com/cb", "http://127.0.0.1:8765/cb", "com.example.app:/oauth"][..]),
                tail in any::<String>(),
            ) {
                let _ = check_redirect_uri(&format!("{seed}{tail}"), true);
                let _ = check_redirect_uri(&format!("{seed}{tail}"), false);
            }
        }
    }

    #[test]
    fn redirect_uris_are_checked_component_by_component() {
        let ok = |u: &str, native: bool| check_redirect_uri(u, native).is_ok();
        assert!(ok("https://app.example.com/cb", false));
        assert!(ok("http://127.0.0.1:8765/callback", true));
        assert!(ok("http://localhost/callback", true));
        assert!(ok("http://[::1]:9/cb", true));
        assert!(ok("com.example.app:/oauth", true));
        assert!(
            !ok("http://127.0.0.1:8765/callback", false),
            "web apps use https"
        );
        assert!(
            !ok("http://app.example.com/cb", true),
            "http only on loopback"
        );
        assert!(!ok("https://app.example.com/cb#frag", false));
        assert!(!ok("https://user@app.example.com/cb", false));
        assert!(!ok("https://localhost@evil.example/cb", false));
        assert!(!ok("https://app.example.com/a/../cb", false));
        assert!(!ok("https://app.example.com/a/%2E%2E/cb", false));
        assert!(!ok("https://app.example.com/./cb", false));
        assert!(!ok("javascript:alert(1)", true));
        assert!(!ok("data:text/html,hi", true));
        assert!(!ok("file:///etc/passwd", true));
        assert!(!ok("not a uri", true));
    }

    #[test]
    fn redirect_uris_are_printable_ascii_so_the_consent_page_shows_where_the_browser_goes() {
        for raw in [
            "https://evil.example/cb\r\nSet-Cookie: x=y",
            "https://evil.example/c b",
            "https://evil.example/cb\t",
            "https://evil.example/cb\u{0}",
            "https://ex\u{202E}elpmaxe.com/cb",
            "https://exämple.com/cb",
            "http://127.0.0.1:5000/c\u{7f}b",
        ] {
            let refusal = check_redirect_uri(raw, true).expect_err(raw);
            assert_eq!(refusal.error, "invalid_redirect_uri", "{raw:?}");
            assert!(
                refusal.description.contains("printable ASCII"),
                "{raw:?}: {refusal:?}"
            );
        }
        let refusal = check_redirect_uri("https://evil.example/c b", false).expect_err("space");
        assert!(refusal.description.contains("a space"), "{refusal:?}");
        let refusal = check_redirect_uri("https://a.example/\u{202E}", false).expect_err("bidi");
        assert!(refusal.description.contains("U+202E"), "{refusal:?}");
        assert!(check_redirect_uri("https://xn--exmple-cua.com/cb?a=%20b", false).is_ok());
    }

    #[test]
    fn client_names_cannot_hide_or_reverse_text() {
        let scopes = vec!["openid".to_owned()];
        let named = |name: &str| {
            register(
                RegistrationRequest {
                    redirect_uris: vec!["https://a.example/cb".to_owned()],
                    client_name: Some(name.to_owned()),
                    grant_types: None,
                    response_types: None,
                    token_endpoint_auth_method: None,
                    application_type: None,
                    scope: None,
                    client_uri: None,
                },
                &scopes,
                "id".to_owned(),
                1,
            )
        };
        for name in [
            "n\u{202E}x<b>",
            "Claude\u{200B}",
            "\u{FEFF}VS Code",
            "a\u{2066}b",
            "soft\u{AD}hyphen",
            "Visual Studio Code\u{3164}(verified)",
            "tagged\u{E0069}\u{E0067}",
            "a\u{180E}b",
            "hidden\u{FE01}",
        ] {
            let refusal = named(name).expect_err(name);
            assert_eq!(refusal.error, "invalid_client_metadata");
            assert!(
                refusal.description.contains("text-direction"),
                "{refusal:?}"
            );
        }
        for name in [
            "Claude Code",
            "Visual Studio Code – Insiders",
            "日本語クライアント",
            "عميل",
            "Love \u{2764}\u{FE0F}",
        ] {
            assert_eq!(named(name).expect(name).client_name.as_deref(), Some(name));
        }
    }

    #[test]
    fn native_custom_schemes_must_be_reverse_domain_names() {
        let ok = |u: &str| check_redirect_uri(u, true).is_ok();
        assert!(ok("com.example.app:/oauth"));
        assert!(ok("io.github.someone.tool:/callback"));
        for os_handler in [
            "search-ms:query=x&crumb=location:evil.example",
            "ms-msdt:/id%20PCWDiagnostic",
            "ms-settings:privacy",
            "myapp://callback",
            "vscode://callback",
        ] {
            let refusal = check_redirect_uri(os_handler, true).expect_err(os_handler);
            assert_eq!(refusal.error, "invalid_redirect_uri");
            assert!(
                refusal.description.contains("reverse domain"),
                "{refusal:?}"
            );
        }
    }

    #[test]
    fn registration_fields_are_bounded() {
        let scopes = vec!["openid".to_owned()];
        let refused = |json: String| {
            register(
                serde_json::from_str::<RegistrationRequest>(&json).expect("json"),
                &scopes,
                "id".to_owned(),
                1,
            )
            .expect_err("refused")
        };
        let long_scope = vec!["openid"; 300].join(" ");
        let r = refused(format!(
            r#"{{"redirect_uris":["https://a.example/cb"],"scope":"{long_scope}"}}"#
        ));
        assert_eq!(r.error, "invalid_client_metadata");
        assert!(r.description.contains("scope"), "{r:?}");
        let many = serde_json::to_string(&vec!["authorization_code"; 1000]).expect("json");
        let r = refused(format!(
            r#"{{"redirect_uris":["https://a.example/cb"],"grant_types":{many}}}"#
        ));
        assert!(r.description.contains("grant_types"), "{r:?}");
        let many = serde_json::to_string(&vec!["code"; 1000]).expect("json");
        let r = refused(format!(
            r#"{{"redirect_uris":["https://a.example/cb"],"response_types":{many}}}"#
        ));
        assert!(r.description.contains("response_types"), "{r:?}");
        let uris: Vec<String> = (0..11).map(|i| format!("https://a.example/{i}")).collect();
        let r = refused(format!(
            r#"{{"redirect_uris":{}}}"#,
            serde_json::to_string(&uris).expect("json")
        ));
        assert_eq!(r.error, "invalid_redirect_uri");
        let long = format!("https://a.example/{}", "x".repeat(MAX_REDIRECT_LEN));
        let r = refused(format!(r#"{{"redirect_uris":["{long}"]}}"#));
        assert_eq!(r.error, "invalid_redirect_uri");
    }

    #[test]
    fn only_loopback_redirects_may_change_their_port() {
        let registered = vec![
            "http://127.0.0.1:5000/callback".to_owned(),
            "https://app.example.com/cb".to_owned(),
        ];
        assert!(redirect_matches(
            &registered,
            "http://127.0.0.1:5000/callback"
        ));
        assert!(redirect_matches(
            &registered,
            "http://127.0.0.1:6123/callback"
        ));
        assert!(!redirect_matches(
            &registered,
            "http://127.0.0.1:6123/other"
        ));
        assert!(!redirect_matches(
            &registered,
            "http://localhost:5000/callback"
        ));
        assert!(!redirect_matches(
            &registered,
            "https://app.example.com/cb/"
        ));
        assert!(!redirect_matches(
            &registered,
            "https://app.example.com:444/cb"
        ));
        assert!(!redirect_matches(&registered, "https://evil.example/cb"));
    }

    #[test]
    fn registrations_get_defaults_and_refusals_name_the_problem() {
        let scopes = vec!["openid".to_owned(), "User.Read".to_owned()];
        let request = |json: &str| serde_json::from_str::<RegistrationRequest>(json).expect("json");
        let client = register(
            request(r#"{"redirect_uris":["http://127.0.0.1:1/cb"],"client_name":"x","token_endpoint_auth_method":"client_secret_post"}"#),
            &scopes,
            "id".to_owned(),
            1,
        )
        .expect("registers");
        assert_eq!(client.application_type, "native");
        assert_eq!(client.token_endpoint_auth_method, "none");
        assert_eq!(client.grant_types, ["authorization_code", "refresh_token"]);
        let refused = |json: &str| {
            register(request(json), &scopes, "id".to_owned(), 1)
                .expect_err("refused")
                .error
        };
        assert_eq!(refused(r#"{"redirect_uris":[]}"#), "invalid_redirect_uri");
        assert_eq!(
            refused(r#"{"redirect_uris":["http://127.0.0.1/cb"],"application_type":"web"}"#),
            "invalid_redirect_uri"
        );
        assert_eq!(
            refused(
                r#"{"redirect_uris":["https://a.example/cb"],"grant_types":["client_credentials"]}"#
            ),
            "invalid_client_metadata"
        );
        assert_eq!(
            refused(r#"{"redirect_uris":["https://a.example/cb"],"scope":"admin.all"}"#),
            "invalid_client_metadata"
        );
    }
}
