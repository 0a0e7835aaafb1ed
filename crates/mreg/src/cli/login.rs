//! `mreg login`, `mreg logout` and the stored credentials every client command uses.
//!
//! `login` is an ordinary public OAuth client of the gateway: it reads the authorization-server
//! metadata, registers, opens the browser on `/authorize` with PKCE and a loopback redirect
//! (RFC 8252), waits for the redirect, and redeems the code. Tokens are kept in the user's
//! config directory (`$XDG_CONFIG_HOME/mreg/credentials.json`, or `$MREG_CREDENTIALS`), readable by
//! the user only, and refreshed when they are about to expire.
//!
//! A saved token is only ever sent to the gateway it was issued by: client commands find their
//! gateway in `./.env` or a flag, and a cloned repository's `.env` can name anyone's server. So
//! `login` records the REST API's origin beside the issuer, and [`bearer`] hands the token out
//! only for requests to one of those two origins.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::RawQuery;
use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::future::IntoFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::client::errln;
use crate::oauth::{pkce_challenge, random_token};

/// Refresh when the access token expires within this many seconds.
const REFRESH_MARGIN: i64 = 60;

/// What `mreg login` keeps.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The gateway's issuer (its MCP listener's public URL).
    pub issuer: String,
    /// The origin of the gateway's REST API that `login` signed in through; absent in logins
    /// saved by older versions (and by the deprecated `--url`), whose token is then sent to the
    /// issuer's origin only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// The client id `login` registered.
    pub client_id: String,
    /// Current access token.
    pub access_token: String,
    /// Current refresh token.
    pub refresh_token: Option<String>,
    /// When the access token expires (Unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("issuer", &self.issuer)
            .field("gateway", &self.gateway)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `mreg login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The gateway's REST API, e.g. `https://mreg.example.com:8000` [default: MREG_GATEWAY_URL,
    /// else the listeners of this directory's configuration]; it names its MCP listener, the
    /// OAuth issuer.
    #[arg(long, value_name = "URL")]
    pub gateway: Option<String>,
    /// Old way to name the MCP listener (the issuer) directly; use --gateway.
    #[arg(long, value_name = "URL", hide = true)]
    pub url: Option<String>,
    /// The configuration file (`--config`), set by the dispatcher.
    #[arg(skip)]
    pub config: Option<PathBuf>,
    /// Print the sign-in URL instead of opening a browser.
    #[arg(long)]
    pub no_browser: bool,
    /// Scopes to ask for (space-separated); the gateway's default when absent.
    #[arg(long)]
    pub scope: Option<String>,
    /// Give up after this many seconds without a sign-in.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

fn now() -> i64 {
    domain::now().unix_timestamp()
}

/// Where credentials are kept.
pub fn credentials_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MREG_CREDENTIALS") {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("mreg").join("credentials.json"))
}

/// The stored credentials, if any.
pub fn load() -> Option<Credentials> {
    let text = std::fs::read_to_string(credentials_path()?).ok()?;
    serde_json::from_str(&text).ok()
}

fn save(credentials: &Credentials) -> Result<PathBuf, String> {
    let path = credentials_path().ok_or("no config directory: set HOME or MREG_CREDENTIALS")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let json = serde_json::to_vec_pretty(credentials).map_err(|e| e.to_string())?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("cannot protect {}: {e}", path.display()))?;
    }
    std::io::Write::write_all(&mut file, &json)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default()
}

async fn json_of(response: reqwest::Response) -> Result<Value, String> {
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let error = body["error"].as_str().unwrap_or("error");
    let description = body["error_description"]
        .as_str()
        .or_else(|| body["message"].as_str())
        .or_else(|| body.pointer("/error/message").and_then(Value::as_str))
        .unwrap_or("no description");
    Err(format!("{error}: {description} (HTTP {})", status.as_u16()))
}

/// The origin (scheme, host, port) of `url`, as `scheme://host[:port]`; `None` when it has none.
fn origin(url: &str) -> Option<String> {
    let origin = url::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

impl Credentials {
    /// The origins this login's token may be sent to: the issuer's, and the REST API's when
    /// `login` recorded it.
    fn origins(&self) -> Vec<String> {
        origin(&self.issuer)
            .into_iter()
            .chain(self.gateway.as_deref().and_then(origin))
            .collect()
    }

    /// Why the token is not sent to `target`, in one line that says what to do instead.
    fn refusal(&self, target: &str) -> String {
        let target = origin(target).unwrap_or_else(|| "that address".to_owned());
        let issuer = origin(&self.issuer).unwrap_or_else(|| "-".to_owned());
        let owner = match self.gateway.as_deref().and_then(origin) {
            Some(gateway) => format!("the gateway at {gateway} (issuer {issuer})"),
            None => format!("the issuer {issuer} (a login saved without its gateway)"),
        };
        format!(
            "note: not sending your saved login to {target}: it belongs to {owner}; to use {target}, run `mreg login --gateway URL` with that gateway's URL, or pass --token"
        )
    }
}

/// A bearer token for a client command's requests to `target`: the stored one, refreshed when it
/// is about to expire. `None` when nobody has logged in, or when `target` is not on the gateway
/// the login belongs to (then one line on stderr says so, and nothing is sent there).
pub async fn bearer(target: &str) -> Result<Option<String>, String> {
    let Some(mut credentials) = load() else {
        return Ok(None);
    };
    if !origin(target).is_some_and(|t| credentials.origins().contains(&t)) {
        errln!("mreg: {}", credentials.refusal(target));
        return Ok(None);
    }
    if credentials.expires_at - REFRESH_MARGIN > now() {
        return Ok(Some(credentials.access_token));
    }
    let Some(refresh) = credentials.refresh_token.clone() else {
        return Err("your login has expired; run `mreg login` again".to_owned());
    };
    let reply = http()
        .post(format!("{}/token", credentials.issuer))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("client_id", credentials.client_id.as_str()),
        ])
        .send()
        .await
        .map_err(|e| {
            format!(
                "cannot reach {} to refresh the login: {e}",
                credentials.issuer
            )
        })?;
    let tokens = json_of(reply)
        .await
        .map_err(|e| format!("your login could not be refreshed ({e}); run `mreg login` again"))?;
    apply(&mut credentials, &tokens)?;
    save(&credentials)?;
    Ok(Some(credentials.access_token))
}

fn apply(credentials: &mut Credentials, tokens: &Value) -> Result<(), String> {
    credentials.access_token = tokens["access_token"]
        .as_str()
        .ok_or("the token response has no access_token")?
        .to_owned();
    if let Some(refresh) = tokens["refresh_token"].as_str() {
        credentials.refresh_token = Some(refresh.to_owned());
    }
    credentials.expires_at = now() + tokens["expires_in"].as_i64().unwrap_or(300);
    Ok(())
}

/// Checks the authorization response (the redirect's query) before its code is used: it must
/// carry this login's `state`, and the issuer's `iss` (RFC 9207) — required when the server
/// advertises `authorization_response_iss_parameter_supported`, so that an answer from another
/// authorization server (mix-up) is refused.
fn check_answer(
    answer: &std::collections::HashMap<String, String>,
    state: &str,
    issuer: &str,
    iss_required: bool,
) -> Result<(), String> {
    if answer.get("state").map(String::as_str) != Some(state) {
        return Err("the sign-in answer does not belong to this login (state mismatch)".to_owned());
    }
    match answer.get("iss") {
        Some(iss) if iss != issuer => {
            Err(format!("the sign-in answer comes from {iss}, not {issuer}"))
        }
        None if iss_required => Err(format!(
            "the sign-in answer does not name its issuer (iss), though {issuer} promises to; it may come from another server"
        )),
        _ => Ok(()),
    }
}

/// The MCP listener to sign in to, and the REST API it was found through: named directly by the
/// deprecated `--url`/`MREG_MCP_URL` (no REST API then), else by the gateway `--gateway` or the
/// configuration names.
async fn issuer(args: &LoginArgs) -> Result<(String, Option<String>), String> {
    use crate::cli::client::gateway::{checked, deprecated};
    let fail = |f: crate::cli::client::Failure| f.message().to_owned();
    if let Some(url) = &args.url {
        deprecated("--url", "--gateway");
        return Ok((checked(url, "--url").map_err(fail)?, None));
    }
    if args.gateway.is_none()
        && std::env::var_os("MREG_GATEWAY_URL").is_none()
        && let Ok(url) = std::env::var("MREG_MCP_URL")
        && !url.trim().is_empty()
    {
        deprecated("MREG_MCP_URL", "MREG_GATEWAY_URL");
        return Ok((checked(&url, "MREG_MCP_URL").map_err(fail)?, None));
    }
    let gateway =
        crate::cli::client::Gateway::resolve(args.gateway.as_deref(), None, args.config.as_deref())
            .map_err(fail)?;
    let issuer = gateway.mcp_url().await.map_err(fail)?;
    Ok((issuer, origin(&gateway.api)))
}

/// Runs `mreg login`.
pub async fn login(args: LoginArgs) -> Result<(), String> {
    let (issuer, gateway) = issuer(&args).await?;
    let shown = crate::cli::client::gateway::shown(&issuer);
    let http = http();
    let unreachable = |e: reqwest::Error| {
        format!(
            "cannot reach the gateway at {shown}: {}",
            domain::text::root_cause(&e)
        )
    };
    let response = http
        .get(format!("{issuer}/.well-known/oauth-authorization-server"))
        .send()
        .await
        .map_err(unreachable)?;
    if response.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(format!(
            "{shown} publishes no OAuth metadata (HTTP 404): authentication is off on that gateway (MREG_AUTH=none, or no identity provider), so there is nothing to sign in to and its commands need no token; or it is not an mreg MCP listener"
        ));
    }
    let meta = json_of(response)
        .await
        .map_err(|e| format!("{shown} has no usable OAuth metadata ({e})"))?;
    if meta["issuer"].as_str() != Some(issuer.as_str()) {
        return Err(format!(
            "the gateway names its issuer {}, not {shown}; set MREG_PUBLIC_URL on the gateway to the URL clients reach it at",
            meta["issuer"]
        ));
    }
    let endpoint = |key: &str| {
        meta[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("the gateway's metadata has no {key}"))
    };
    let (authorize, token, register) = (
        endpoint("authorization_endpoint")?,
        endpoint("token_endpoint")?,
        endpoint("registration_endpoint")?,
    );

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("cannot listen on loopback for the sign-in redirect: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let client = json_of(
        http.post(&register)
            .json(&serde_json::json!({
                "client_name": "mreg command line",
                "redirect_uris": [redirect_uri],
                "application_type": "native",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
            }))
            .send()
            .await
            .map_err(unreachable)?,
    )
    .await
    .map_err(|e| format!("registration was refused: {e}"))?;
    let client_id = client["client_id"]
        .as_str()
        .ok_or("registration returned no client_id")?
        .to_owned();

    let verifier = random_token(48);
    let state = random_token(16);
    let resource = format!("{issuer}/mcp");
    let mut url = url::Url::parse(&authorize).map_err(|e| e.to_string())?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &redirect_uri)
            .append_pair("code_challenge", &pkce_challenge(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", &state)
            .append_pair("resource", &resource);
        if let Some(scope) = &args.scope {
            q.append_pair("scope", scope);
        }
    }
    errln!("Open this URL in a browser to sign in:\n\n  {url}\n");
    if !args.no_browser && !open_browser(url.as_str()) {
        errln!("(no browser could be started; open the URL yourself)");
    }
    let answer = tokio::time::timeout(
        Duration::from_secs(args.timeout),
        wait_for_redirect(listener),
    )
    .await
    .map_err(|_| format!("no sign-in within {} seconds", args.timeout))??;
    let iss_required = meta["authorization_response_iss_parameter_supported"] == true;
    check_answer(&answer, &state, &issuer, iss_required)?;
    if let Some(error) = answer.get("error") {
        let description = answer
            .get("error_description")
            .map(String::as_str)
            .unwrap_or("");
        return Err(format!("sign-in failed: {error}: {description}"));
    }
    let code = answer.get("code").ok_or("the sign-in answer has no code")?;
    let tokens = json_of(
        http.post(&token)
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("client_id", client_id.as_str()),
                ("code_verifier", verifier.as_str()),
                ("resource", resource.as_str()),
            ])
            .send()
            .await
            .map_err(unreachable)?,
    )
    .await
    .map_err(|e| format!("the code could not be redeemed: {e}"))?;
    let mut credentials = Credentials {
        issuer: issuer.clone(),
        gateway,
        client_id,
        access_token: String::new(),
        refresh_token: None,
        expires_at: 0,
    };
    apply(&mut credentials, &tokens)?;
    let path = save(&credentials)?;
    errln!(
        "Signed in to {shown}; credentials saved in {}",
        path.display()
    );
    Ok(())
}

fn open_browser(url: &str) -> bool {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .is_ok()
}

/// How long the loopback server may take to send its page once the answer has arrived.
const ANSWER_GRACE: Duration = Duration::from_secs(2);

/// Serves the loopback redirect (a small axum router: a request arriving in pieces, another path
/// or a second connection cannot stall the sign-in) until `GET /callback` is requested; returns
/// its query. The server then stops, giving the browser's connection a moment to receive its
/// page; a connection that never finishes its request does not hold the answer back.
async fn wait_for_redirect(listener: TcpListener) -> Result<HashMap<String, String>, String> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let sender = Arc::new(Mutex::new(Some(sender)));
    let callback = move |method: axum::http::Method, RawQuery(query): RawQuery| async move {
        use axum::response::IntoResponse;
        if method != axum::http::Method::GET {
            return axum::http::StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        let params: HashMap<String, String> =
            url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        let signed_in = params.contains_key("code");
        let taken = sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(sender) = taken {
            let _ = sender.send(params);
        }
        if signed_in {
            "Signed in. You can close this window and return to the terminal."
        } else {
            "Sign-in did not complete. Return to the terminal for details."
        }
        .into_response()
    };
    let app = axum::Router::new().route("/callback", axum::routing::get(callback));
    let stop = CancellationToken::new();
    let server = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
    let server = server.into_future();
    tokio::pin!(server);
    let answer = tokio::select! {
        answer = receiver => answer
            .map_err(|_| "the loopback redirect server stopped without an answer".to_owned())?,
        served = &mut server => {
            served.map_err(|e| format!("the loopback redirect server failed: {e}"))?;
            return Err("the loopback redirect server stopped without an answer".to_owned());
        }
    };
    stop.cancel();
    // Graceful shutdown waits for every connection; one that never finishes its request would
    // hold it forever, so the wait is bounded (the answer is in hand already).
    let _ = tokio::time::timeout(ANSWER_GRACE, server).await;
    Ok(answer)
}

/// Runs `mreg logout`: revokes the refresh token and forgets the credentials.
pub async fn logout() -> Result<(), String> {
    let Some(path) = credentials_path() else {
        return Ok(());
    };
    let Some(credentials) = load() else {
        errln!("Not logged in.");
        return Ok(());
    };
    if let Some(refresh) = &credentials.refresh_token {
        let revoked = http()
            .post(format!("{}/revoke", credentials.issuer))
            .form(&[
                ("token", refresh.as_str()),
                ("token_type_hint", "refresh_token"),
                ("client_id", credentials.client_id.as_str()),
            ])
            .send()
            .await;
        if let Err(e) = revoked {
            errln!(
                "warning: could not revoke the refresh token at {}: {e}",
                credentials.issuer
            );
        }
    }
    std::fs::remove_file(&path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    errln!("Logged out of {}.", credentials.issuer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn saved(gateway: Option<&str>) -> Credentials {
        Credentials {
            issuer: "https://mcp.example.com:8443".to_owned(),
            gateway: gateway.map(str::to_owned),
            client_id: "c".to_owned(),
            access_token: "t".to_owned(),
            refresh_token: None,
            expires_at: 0,
        }
    }

    #[test]
    fn a_login_belongs_to_its_issuer_and_its_rest_api_origins_only() {
        let login = saved(Some("https://mreg.example.com"));
        assert_eq!(
            login.origins(),
            ["https://mcp.example.com:8443", "https://mreg.example.com"]
        );
        for other in [
            "http://mreg.example.com",
            "https://mreg.example.com:8000",
            "https://mreg.example.com.evil.example",
        ] {
            assert!(!login.origins().contains(&origin(other).expect("url")));
        }
        assert_eq!(
            origin("https://alice:pw@mreg.example.com:443/api/v1/servers").as_deref(),
            Some("https://mreg.example.com"),
            "no path, no user, the default port implied"
        );
        let refusal = login.refusal("http://evil.example:9/api/v1/servers");
        assert!(
            refusal.contains("http://evil.example:9")
                && refusal.contains("https://mreg.example.com")
                && refusal.contains("mreg login --gateway"),
            "{refusal}"
        );
        assert_eq!(saved(None).origins(), ["https://mcp.example.com:8443"]);
    }

    #[test]
    fn an_answer_without_iss_is_refused_when_the_server_promises_one() {
        let issuer = "https://mreg.example";
        let good = answer(&[("code", "c"), ("state", "s"), ("iss", issuer)]);
        assert!(check_answer(&good, "s", issuer, true).is_ok());
        let missing = answer(&[("code", "c"), ("state", "s")]);
        let refused = check_answer(&missing, "s", issuer, true).expect_err("no iss");
        assert!(refused.contains("iss"), "{refused}");
        assert!(
            check_answer(&missing, "s", issuer, false).is_ok(),
            "a server that does not send iss"
        );
        let other = answer(&[
            ("code", "c"),
            ("state", "s"),
            ("iss", "https://evil.example"),
        ]);
        assert!(check_answer(&other, "s", issuer, false).is_err());
        assert!(check_answer(&good, "other", issuer, true).is_err(), "state");
    }
}
