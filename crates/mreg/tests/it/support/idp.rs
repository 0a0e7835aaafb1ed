//! The identity-provider harness: a real OpenID Connect provider (`interop/idp.mjs`) on
//! loopback in place of Entra ID, a gateway in front of it, and the browser steps of a sign-in
//! (mreg's pages step by step, the provider's through `interop/browser.mjs`). Used by the OAuth
//! and policy tests.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{TestApp, TestAppBuilder};
use crate::support::peers::{interop_dir, peers_available};

pub(crate) const CLIENT_ID: &str = "22222222-2222-2222-2222-222222222222";
pub(crate) const SECRET: &str = "mreg-test-secret";
pub(crate) const TENANT: &str = "11111111-1111-1111-1111-111111111111";
pub(crate) const OTHER_TENANT: &str = "44444444-4444-4444-4444-444444444444";
pub(crate) const ALICE_OID: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
pub(crate) const BOB_OID: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
/// The client's redirect URI (nothing listens there; the walk stops before it).
pub(crate) const REDIRECT: &str = "http://127.0.0.1:9/callback";

/// The stand-in for Entra ID.
pub(crate) struct Idp {
    pub(crate) authority: String,
    child: Child,
    http: reqwest::Client,
    /// Kept open so that a late write to stdout cannot kill the provider with EPIPE.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Idp {
    /// Starts the provider with `tenants`, accepting mreg's callback on `mcp_port`. A start that
    /// prints no ready line within 30 s is retried once (it happened once under full load, and
    /// the cause could not be reproduced); the second failure fails the test with its log.
    pub(crate) async fn start(mcp_port: u16, tenants: &[&str]) -> Self {
        match Self::try_start(mcp_port, tenants).await {
            Ok(idp) => idp,
            Err(first) => {
                eprintln!("identity provider start timed out, retrying: {first}");
                Self::try_start(mcp_port, tenants)
                    .await
                    .unwrap_or_else(|second| panic!("{first}\n{second}"))
            }
        }
    }

    async fn try_start(mcp_port: u16, tenants: &[&str]) -> Result<Self, String> {
        let mut command = Command::new("node");
        command
            .arg(interop_dir().join("idp.mjs"))
            .args(["--client-id", CLIENT_ID, "--client-secret", SECRET])
            .args([
                "--redirect-uri",
                &format!("http://127.0.0.1:{mcp_port}/auth/callback"),
            ]);
        for tenant in tenants {
            command.args(["--tenant", tenant]);
        }
        let users = json!({
            "alice": {"oid": ALICE_OID, "email": "alice@contoso.test", "name": "Alice", "roles": ["admin"], "tenant": TENANT},
            "bob": {"oid": BOB_OID, "email": "bob@contoso.test", "name": "Bob", "roles": ["user"], "tenant": TENANT},
            "carol": {"oid": "cccccccc-cccc-4ccc-8ccc-cccccccccccc", "email": "carol@fabrikam.test", "name": "Carol", "roles": ["admin"], "tenant": OTHER_TENANT},
        });
        command.args(["--users", &users.to_string()]);
        let log =
            std::env::temp_dir().join(format!("mreg-idp-{}.log", uuid::Uuid::new_v4().simple()));
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("idp log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("node starts the identity provider");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let started = std::time::Instant::now();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await;
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        let _ = std::fs::remove_file(&log);
        let Ok(Ok(Some(line))) = line else {
            let _ = child.start_kill();
            return Err(format!(
                "the identity provider did not start within {:?}: {log_text}",
                started.elapsed()
            ));
        };
        let ready: Value = serde_json::from_str(&line).expect("JSON ready line");
        Ok(Self {
            authority: ready["authority"].as_str().expect("authority").to_owned(),
            child,
            http: reqwest::Client::new(),
            _stdout: lines,
        })
    }

    /// Signs arbitrary claims with the provider's published key (or as the body says).
    pub(crate) async fn sign(&self, body: Value) -> String {
        let reply: Value = self
            .http
            .post(format!("{}/_test/sign", self.authority))
            .json(&body)
            .send()
            .await
            .expect("sign")
            .json()
            .await
            .expect("json");
        reply["token"].as_str().expect("token").to_owned()
    }

    /// Changes the provider's next successful token response of `change["grant_type"]` (see
    /// `/_test/next_token` in `interop/idp.mjs`).
    pub(crate) async fn next_token(&self, change: Value) {
        let reply = self
            .http
            .post(format!("{}/_test/next_token", self.authority))
            .json(&change)
            .send()
            .await
            .expect("next_token");
        assert_eq!(reply.status(), StatusCode::OK);
    }

    pub(crate) async fn jwks_hits(&self) -> u64 {
        let reply: Value = self
            .http
            .get(format!("{}/_test/jwks_hits", self.authority))
            .send()
            .await
            .expect("hits")
            .json()
            .await
            .expect("json");
        reply["hits"].as_u64().expect("hits")
    }

    /// An app-only token for mreg's app (client credentials) with `resource`.
    pub(crate) async fn app_token(&self, tenant: &str, resource: &str) -> String {
        let reply: Value = self
            .http
            .post(format!("{}/{tenant}/v2.0/token", self.authority))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
                ("resource", resource),
            ])
            .send()
            .await
            .expect("token")
            .json()
            .await
            .expect("json");
        reply["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("app token: {reply}"))
            .to_owned()
    }

    /// Claims that pass validation for tenant `tid`, to be spoiled one at a time.
    pub(crate) fn claims(&self, tid: &str) -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        json!({
            "iss": format!("{}/{tid}/v2.0", self.authority),
            "aud": format!("api://{CLIENT_ID}"),
            "tid": tid, "oid": ALICE_OID, "sub": "alice-sub",
            "roles": ["admin"], "azp": CLIENT_ID,
            "iat": now, "nbf": now, "exp": now + 600,
        })
    }
}

/// mreg in front of the provider, plus the provider.
pub(crate) struct Setup {
    pub(crate) idp: Idp,
    pub(crate) app: TestApp,
    /// `http://127.0.0.1:PORT` of the MCP listener (the issuer).
    pub(crate) mcp: String,
}

/// A gateway signing users in at the provider (both tenants known to it), as configured by
/// default.
pub(crate) async fn setup() -> Option<Setup> {
    setup_with(|app| app).await
}

/// A gateway signing users in at the provider, configured further by `configure`; `None` (the
/// test is skipped) when the Node peers are not installed and not required.
pub(crate) async fn setup_with(
    configure: impl FnOnce(TestAppBuilder) -> TestAppBuilder,
) -> Option<Setup> {
    if !peers_available() {
        return None;
    }
    let (idp, app) = provider_and_gateway(&[TENANT, OTHER_TENANT], |app, idp| {
        configure(app.with_oauth(idp))
    })
    .await;
    let mcp = format!("http://{}", app.mcp_addr);
    Some(Setup { idp, app, mcp })
}

/// Starts the provider with `tenants` and a gateway configured by `configure` (which connects
/// it to the provider: [`TestAppBuilder::with_oauth`], or the generic OpenID Connect settings).
/// The gateway's MCP listener is bound first, on port 0, so that the provider knows mreg's
/// callback URL when it starts.
pub(crate) async fn provider_and_gateway(
    tenants: &[&str],
    configure: impl FnOnce(TestAppBuilder, &Idp) -> TestAppBuilder,
) -> (Idp, TestApp) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port for the MCP listener");
    let port = listener.local_addr().expect("bound").port();
    let idp = Idp::start(port, tenants).await;
    let app = configure(TestApp::builder().with_mcp_listener(listener), &idp)
        .spawn()
        .await;
    (idp, app)
}

impl TestAppBuilder {
    /// Signs users in at `idp` (an Entra ID stand-in: its single tenant [`TENANT`], mreg's app
    /// [`CLIENT_ID`], Graph confirmation on, the `access_as_user` scope).
    pub(crate) fn with_oauth(self, idp: &Idp) -> Self {
        self.settings(&[
            ("MREG_AUTH", "oauth"),
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", SECRET),
            ("AZURE_AUTHORITY_HOST", idp.authority.as_str()),
            ("AZURE_GRAPH_URL", idp.authority.as_str()),
            ("AZURE_VALIDATE_WITH_GRAPH", "true"),
            ("AZURE_API_SCOPES", "access_as_user"),
        ])
    }

    /// A multi-tenant app (`organizations`) that admits the users of `tenants` only. Call it
    /// after [`Self::with_oauth`]: of two values of one setting, the later wins.
    pub(crate) fn with_allowed_tenants(self, tenants: &[&str]) -> Self {
        self.settings(&[
            ("AZURE_TENANT_ID", "organizations"),
            ("AZURE_ALLOWED_TENANTS", tenants.join(" ").as_str()),
        ])
    }
}

pub(crate) fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub(crate) fn location(headers: &HeaderMap) -> String {
    headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("a Location header")
        .to_owned()
}

pub(crate) fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    url::Url::parse(url)
        .expect("url")
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub(crate) fn claims_of(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64")).expect("json")
}

/// One MCP client and its browser, step by step.
pub(crate) struct Flow<'a> {
    pub(crate) s: &'a Setup,
    pub(crate) http: reqwest::Client,
    pub(crate) client_id: String,
    pub(crate) cookie: Option<String>,
    pub(crate) verifier: String,
    pub(crate) state: String,
    /// The client name as the consent page must show it (escaped).
    pub(crate) shown_name: &'static str,
}

impl<'a> Flow<'a> {
    /// A client that does not register: its `client_id` is a metadata document URL.
    pub(crate) fn with_client_id(s: &'a Setup, client_id: &str) -> Self {
        Self {
            s,
            http: no_redirects(),
            client_id: client_id.to_owned(),
            cookie: None,
            verifier: mreg::oauth::random_token(40),
            state: mreg::oauth::random_token(12),
            shown_name: "Document Client",
        }
    }

    pub(crate) async fn new(s: &'a Setup) -> Self {
        let http = no_redirects();
        let reply = http
            .post(format!("{}/register", s.mcp))
            .json(&json!({"redirect_uris": [REDIRECT], "client_name": "Test <Client>", "token_endpoint_auth_method": "none"}))
            .send()
            .await
            .expect("register");
        assert_eq!(reply.status(), StatusCode::CREATED);
        let client: Value = reply.json().await.expect("json");
        Self {
            s,
            http,
            client_id: client["client_id"].as_str().expect("client_id").to_owned(),
            cookie: None,
            verifier: mreg::oauth::random_token(40),
            state: mreg::oauth::random_token(12),
            shown_name: "Test &lt;Client&gt;",
        }
    }

    /// The authorize query of a well-formed request, with `changes` applied (`None` removes).
    pub(crate) fn authorize_url(&self, changes: &[(&str, Option<&str>)]) -> String {
        let challenge = mreg::oauth::pkce_challenge(&self.verifier);
        let resource = format!("{}/mcp", self.s.mcp);
        let mut params: Vec<(String, String)> = [
            ("response_type", "code"),
            ("client_id", self.client_id.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
            ("state", self.state.as_str()),
            ("resource", resource.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for (key, value) in changes {
            params.retain(|(k, _)| k != key);
            if let Some(value) = value {
                params.push(((*key).to_owned(), (*value).to_owned()));
            }
        }
        let mut url = url::Url::parse(&format!("{}/authorize", self.s.mcp)).expect("url");
        url.query_pairs_mut().extend_pairs(params);
        url.to_string()
    }

    pub(crate) async fn get(&mut self, url: &str) -> (StatusCode, HeaderMap, String) {
        let mut request = self.http.get(url);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let reply = request.send().await.expect("request");
        let (status, headers) = (reply.status(), reply.headers().clone());
        if let Some(set) = headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()) {
            self.cookie = set.split(';').next().map(str::to_owned);
        }
        (status, headers, reply.text().await.expect("body"))
    }

    pub(crate) async fn post_consent(
        &self,
        form: &[(&str, &str)],
        with_cookie: bool,
    ) -> (StatusCode, HeaderMap, String) {
        let mut request = self.http.post(format!("{}/consent", self.s.mcp)).form(form);
        if with_cookie && let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        let reply = request.send().await.expect("consent");
        let (status, headers) = (reply.status(), reply.headers().clone());
        (status, headers, reply.text().await.expect("body"))
    }

    /// `/authorize` → consent page; returns the transaction id and CSRF token.
    pub(crate) async fn open_consent(
        &mut self,
        changes: &[(&str, Option<&str>)],
    ) -> (String, String) {
        let url = self.authorize_url(changes);
        let (status, headers, body) = self.get(&url).await;
        assert_eq!(status, StatusCode::FOUND, "{body}");
        let consent = location(&headers);
        assert!(
            consent.starts_with(&format!("{}/consent?txn=", self.s.mcp)),
            "{consent}"
        );
        if let Some(set_cookie) = headers.get(SET_COOKIE).and_then(|v| v.to_str().ok()) {
            assert!(
                set_cookie.starts_with("mreg_consent=")
                    && set_cookie.contains("HttpOnly")
                    && set_cookie.contains("SameSite=Lax")
                    && set_cookie.contains("Path=/")
                    && set_cookie.contains("Max-Age=")
                    && !set_cookie.contains("Secure"),
                "a cookie for this gateway only, not for scripts, lasting a sign-in (not Secure \
                 over http): {set_cookie}"
            );
        }
        assert!(
            self.cookie.is_some(),
            "the browser holds the binding cookie"
        );
        let (status, headers, page) = self.get(&consent).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(
            headers.get("x-frame-options").map(|v| v.to_str().ok()),
            Some(Some("DENY"))
        );
        assert!(
            page.contains("127.0.0.1"),
            "the page names the redirect host: {page}"
        );
        assert!(
            page.contains(self.shown_name),
            "the client name, escaped: {page}"
        );
        let txn = query_of(&consent)["txn"].clone();
        (txn, hidden(&page, "csrf"))
    }

    /// Consent → provider login (as `user`) → callback → the client's redirect.
    pub(crate) async fn sign_in(&mut self, user: &str, changes: &[(&str, Option<&str>)]) -> String {
        let (txn, csrf) = self.open_consent(changes).await;
        let (status, headers, body) = self
            .post_consent(
                &[("txn", &txn), ("csrf", &csrf), ("decision", "allow")],
                true,
            )
            .await;
        assert_eq!(status, StatusCode::FOUND, "{body}");
        let upstream = location(&headers);
        assert!(upstream.starts_with(&self.s.idp.authority), "{upstream}");
        let up = query_of(&upstream);
        assert!(
            !up.contains_key("resource"),
            "resource never goes to the provider"
        );
        assert_eq!(up["code_challenge_method"], "S256");
        assert!(up["scope"].contains("offline_access"));
        let callback = walk(&upstream, user, &format!("{}/auth/callback", self.s.mcp)).await;
        let (status, headers, body) = self.get(&callback).await;
        assert_eq!(status, StatusCode::FOUND, "{body}");
        location(&headers)
    }

    /// A full sign-in; returns mreg's code.
    pub(crate) async fn code(&mut self, user: &str) -> String {
        let back = self.sign_in(user, &[]).await;
        assert!(back.starts_with(REDIRECT), "{back}");
        let q = query_of(&back);
        assert_eq!(q["state"], self.state);
        assert_eq!(q["iss"], self.s.mcp);
        q.get("code")
            .unwrap_or_else(|| panic!("a code: {back}"))
            .clone()
    }

    pub(crate) async fn token(&self, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let reply = self
            .http
            .post(format!("{}/token", self.s.mcp))
            .form(form)
            .send()
            .await
            .expect("token");
        let status = reply.status();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn redeem(&self, code: &str) -> (StatusCode, Value) {
        let resource = format!("{}/mcp", self.s.mcp);
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("client_id", &self.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &self.verifier),
            ("resource", &resource),
        ])
        .await
    }

    pub(crate) async fn refresh(&self, refresh_token: &str) -> (StatusCode, Value) {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", &self.client_id),
        ])
        .await
    }

    /// Revokes `token` as this client (RFC 7009); returns the status.
    pub(crate) async fn revoke(&self, token: &str) -> StatusCode {
        self.http
            .post(format!("{}/revoke", self.s.mcp))
            .form(&[("token", token), ("client_id", self.client_id.as_str())])
            .send()
            .await
            .expect("revoke")
            .status()
    }

    /// Signs `user` in and returns the token response.
    pub(crate) async fn tokens(&mut self, user: &str) -> Value {
        let code = self.code(user).await;
        let (status, tokens) = self.redeem(&code).await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        tokens
    }
}

pub(crate) fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {page}"))
        + marker.len();
    page[start..].split('"').next().expect("value").to_owned()
}

/// Walks the provider's pages as `user` until the browser is sent to `stop_at`.
pub(crate) async fn walk(url: &str, user: &str, stop_at: &str) -> String {
    let output = Command::new("node")
        .arg(interop_dir().join("browser.mjs"))
        .args([url, "--user", user, "--stop-at", stop_at])
        .output()
        .await
        .expect("node runs the browser");
    let reply: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|_| {
        panic!(
            "browser output: {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(reply["ok"], true, "{reply}");
    reply["final"].as_str().expect("final").to_owned()
}

/// GET `/api/v1/whoami` on the REST listener with `token`.
pub(crate) async fn whoami(app: &TestApp, token: &str) -> (StatusCode, HeaderMap, Value) {
    let reply = app
        .http
        .get(app.url("/api/v1/whoami"))
        .bearer_auth(token)
        .send()
        .await
        .expect("whoami");
    let (status, headers) = (reply.status(), reply.headers().clone());
    (status, headers, reply.json().await.unwrap_or(Value::Null))
}

/// An MCP `initialize` POST to `url` with `token`.
pub(crate) async fn mcp_initialize(url: &str, token: Option<&str>) -> (StatusCode, HeaderMap) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        );
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let reply = request.send().await.expect("initialize");
    (reply.status(), reply.headers().clone())
}

pub(crate) fn challenge_of(headers: &HeaderMap) -> String {
    headers
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .expect("a WWW-Authenticate challenge")
        .to_owned()
}
