//! The OAuth proxy end to end, with a real OpenID Connect provider (`interop/idp.mjs`, built on
//! the certified `oidc-provider`) standing in for Entra ID on loopback. The browser steps are
//! plain HTTP: mreg's own pages are driven here step by step, the provider's login pages by
//! `interop/browser.mjs`. Every rule of the authorization server and of token validation has a
//! negative test here.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use reqwest::header::LOCATION;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::support::peers::{interop_dir, peers_available};
use crate::support::{TestApp, TestDb};

use crate::support::idp::*;

#[tokio::test]
async fn metadata_documents_and_401_challenges_lead_clients_to_sign_in() {
    let Some(s) = setup().await else { return };
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let http = http.clone();
        let url = format!("{}{path}", s.mcp);
        async move {
            let reply = http.get(url).send().await.expect("get");
            (
                reply.status(),
                reply.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, server) = get("/.well-known/oauth-authorization-server").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server["issuer"], s.mcp.as_str());
    assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        server["authorization_response_iss_parameter_supported"],
        true
    );
    assert_eq!(
        server["token_endpoint_auth_methods_supported"],
        json!(["none"])
    );
    assert_eq!(
        server["registration_endpoint"],
        format!("{}/register", s.mcp)
    );
    assert_eq!(get("/.well-known/openid-configuration").await.1, server);
    let (_, prm) = get("/.well-known/oauth-protected-resource/mcp").await;
    assert_eq!(prm["resource"], format!("{}/mcp", s.mcp));
    assert_eq!(prm["authorization_servers"], json!([s.mcp]));
    let (_, prm) = get("/.well-known/oauth-protected-resource/servers/weather/mcp").await;
    assert_eq!(prm["resource"], format!("{}/servers/weather/mcp", s.mcp));
    let (_, root) = get("/.well-known/oauth-protected-resource").await;
    assert_eq!(root["resource"], s.mcp.as_str());
    assert_eq!(
        get("/.well-known/oauth-protected-resource/other").await.0,
        StatusCode::NOT_FOUND
    );
    let (_, jwks) = get("/.well-known/jwks.json").await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 3, "previous, current and next key");
    assert!(
        keys.iter()
            .all(|k| k["alg"] == "ES256" && k["kty"] == "EC" && k.get("d").is_none())
    );

    let (status, headers) = mcp_initialize(&format!("{}/mcp", s.mcp), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let challenge = challenge_of(&headers);
    assert!(
        challenge.contains(&format!(
            "resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
            s.mcp
        )),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"User.Read profile openid email\""),
        "{challenge}"
    );
    let (status, headers) = mcp_initialize(&format!("{}/servers/weather/mcp", s.mcp), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        challenge_of(&headers)
            .contains("/.well-known/oauth-protected-resource/servers/weather/mcp")
    );
    let (status, headers) = mcp_initialize(&format!("{}/mcp", s.mcp), Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge_of(&headers).contains("error=\"invalid_token\""));
    let (status, body) = s.app.get("/api/v1/servers").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        s.app.get("/healthz").await.0,
        StatusCode::OK,
        "health stays open"
    );
    let metrics = s
        .app
        .http
        .get(s.app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(metrics.status(), StatusCode::OK, "metrics stay open");
}

#[tokio::test]
async fn a_signed_in_user_gets_mreg_tokens_that_work_and_refresh_with_rotation() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    // A second GET of the consent page (a reload, a prefetch) shows the same form.
    let (txn, csrf) = flow.open_consent(&[]).await;
    let (_, _, again) = flow.get(&format!("{}/consent?txn={txn}", s.mcp)).await;
    assert_eq!(hidden(&again, "csrf"), csrf);

    let code = flow.code("alice").await;
    let (status, tokens) = flow.redeem(&code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().expect("access token");
    let claims = claims_of(access);
    assert_eq!(claims["iss"], s.mcp.as_str());
    assert_eq!(claims["aud"], format!("{}/mcp", s.mcp));
    assert_eq!(claims["sub"], ALICE_OID);
    assert_eq!(claims["oid"], ALICE_OID);
    assert_eq!(claims["tid"], TENANT);
    assert_eq!(claims["email"], "alice@contoso.test");
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["roles"], json!(["admin"]));
    assert_eq!(claims["client_id"], flow.client_id.as_str());
    assert_eq!(claims["scope"], "User.Read profile openid email");
    assert!(claims["jti"].is_string());
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(access.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("json");
    assert_eq!(header["alg"], "ES256");

    let (status, _, me) = whoami(&s.app, access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["subject"], ALICE_OID);
    assert_eq!(me["tenant"], TENANT);
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["client_id"], flow.client_id.as_str());
    let (status, _) = mcp_initialize(&format!("{}/mcp", s.mcp), Some(access)).await;
    assert_eq!(status, StatusCode::OK);

    // The code is single-use, and a replay ends what was issued for it.
    let (status, replay) = flow.redeem(&code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(replay["error"], "invalid_grant");
    let replayed_refresh = tokens["refresh_token"].as_str().expect("refresh token");
    assert_eq!(
        flow.refresh(replayed_refresh).await.0,
        StatusCode::BAD_REQUEST
    );

    // Refresh rotates; presenting a spent refresh token ends the whole family.
    let tokens = flow.tokens("alice").await;
    let first = tokens["refresh_token"].as_str().expect("refresh token");
    let (status, second) = flow.refresh(first).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_refresh = second["refresh_token"].as_str().expect("rotated");
    assert_ne!(second_refresh, first);
    assert_eq!(
        claims_of(second["access_token"].as_str().expect("access"))["roles"],
        json!(["admin"])
    );
    let (status, reuse) = flow.refresh(first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(reuse["error"], "invalid_grant");
    let (status, after) = flow.refresh(second_refresh).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the family is revoked: {after}"
    );

    // Revocation (RFC 7009): an access token is refused from then on, a refresh token ends.
    let fresh = flow.tokens("bob").await;
    let access = fresh["access_token"].as_str().expect("access");
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::OK);
    assert_eq!(flow.revoke(access).await, StatusCode::OK);
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::UNAUTHORIZED);
    let refresh = fresh["refresh_token"].as_str().expect("refresh").to_owned();
    assert_eq!(flow.revoke(&refresh).await, StatusCode::OK);
    assert_eq!(flow.refresh(&refresh).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(
        flow.revoke("unknown").await,
        StatusCode::OK,
        "unknown tokens are fine"
    );

    // Registration, sign-ins and every token event are audited, failures included, and no
    // token reaches the log.
    let rows =
        crate::support::audit::at_least(16, || crate::support::audit::sqlite_rows(&s.app.dir.0))
            .await;
    let oauth: Vec<(&str, &str, &str)> = rows
        .iter()
        .filter(|r| r.event.operation.starts_with("oauth."))
        .map(|r| {
            (
                r.event.operation.as_str(),
                r.event.actor_subject.as_str(),
                r.event.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        oauth,
        [
            ("oauth.register", "unauthenticated", "ok"),
            ("oauth.login", ALICE_OID, "ok"),
            ("oauth.token", ALICE_OID, "ok"),
            ("oauth.token", "unauthenticated", "error"),
            ("oauth.refresh", "unauthenticated", "error"),
            ("oauth.login", ALICE_OID, "ok"),
            ("oauth.token", ALICE_OID, "ok"),
            ("oauth.refresh", ALICE_OID, "ok"),
            ("oauth.refresh", "unauthenticated", "error"),
            ("oauth.refresh", "unauthenticated", "error"),
            ("oauth.login", BOB_OID, "ok"),
            ("oauth.token", BOB_OID, "ok"),
            ("oauth.revoke", "unauthenticated", "ok"),
            ("oauth.revoke", "unauthenticated", "ok"),
            ("oauth.refresh", "unauthenticated", "error"),
            ("oauth.revoke", "unauthenticated", "ok"),
        ]
    );
    assert!(
        rows.iter()
            .filter(|r| r.event.operation.starts_with("oauth."))
            .all(|r| r.event.actor_client_id.as_deref() == Some(flow.client_id.as_str()))
    );
    let replayed = rows
        .iter()
        .find(|r| r.event.operation == "oauth.token" && r.event.outcome == "error")
        .expect("the replayed code");
    assert!(
        replayed
            .event
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("invalid_grant")),
        "{replayed:?}"
    );
    // A replayed code and a reused refresh token are refusals of a leak or an attack: `deny`,
    // where an auditor looks; the other failures (a token of an ended grant) stay `allow`.
    let decisions: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.event.operation.starts_with("oauth.") && r.event.outcome == "error")
        .map(|r| (r.event.operation.as_str(), r.event.decision.as_str()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("oauth.token", "deny"),
            ("oauth.refresh", "allow"),
            ("oauth.refresh", "deny"),
            ("oauth.refresh", "allow"),
            ("oauth.refresh", "allow"),
        ]
    );
    let everything = format!("{rows:?}");
    for secret in [
        replayed_refresh,
        first,
        second_refresh,
        refresh.as_str(),
        &code,
    ] {
        assert!(
            !everything.contains(secret),
            "a token reached the audit log"
        );
    }
}

#[tokio::test]
async fn authorize_refuses_bad_clients_redirects_pkce_resources_and_scopes() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    // Without a known client or an exact redirect URI there is nobody safe to redirect to.
    for changes in [
        vec![("client_id", Some("00000000-0000-0000-0000-000000000000"))],
        vec![("redirect_uri", Some("http://127.0.0.1:9/other"))],
        vec![("redirect_uri", Some("https://evil.example/callback"))],
        vec![("redirect_uri", Some("http://127.0.0.1:9/callback/../x"))],
    ] {
        let (status, headers, _) = flow.get(&flow.authorize_url(&changes)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{changes:?}");
        assert!(
            headers.get(LOCATION).is_none(),
            "{changes:?} must not redirect"
        );
    }
    // A loopback redirect may change only its port.
    let (status, headers, _) = flow
        .get(&flow.authorize_url(&[("redirect_uri", Some("http://127.0.0.1:10/callback"))]))
        .await;
    assert_eq!(status, StatusCode::FOUND);
    assert!(location(&headers).contains("/consent?txn="));
    // Every other error is shown on an error page too: before consent, a redirect URI anyone
    // could register must not receive the browser (no open redirector), whatever is wrong.
    let long_state = "s".repeat(513);
    for (changes, error) in [
        (vec![("code_challenge", None)], "invalid_request"),
        (
            vec![("code_challenge_method", Some("plain"))],
            "invalid_request",
        ),
        (vec![("code_challenge_method", None)], "invalid_request"),
        (vec![("code_challenge", Some("short"))], "invalid_request"),
        (
            vec![("response_type", Some("token"))],
            "unsupported_response_type",
        ),
        (
            vec![("resource", Some("https://other.example/mcp"))],
            "invalid_target",
        ),
        (
            vec![("resource", Some(&*format!("{}/elsewhere", s.mcp)))],
            "invalid_target",
        ),
        (
            vec![("scope", Some("openid Directory.ReadWrite.All"))],
            "invalid_scope",
        ),
        (
            vec![("state", Some(long_state.as_str()))],
            "invalid_request",
        ),
    ] {
        let (status, headers, page) = flow.get(&flow.authorize_url(&changes)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{changes:?}");
        assert!(
            headers.get(LOCATION).is_none(),
            "{changes:?} must not redirect"
        );
        assert!(page.contains(error), "{changes:?}: {page}");
        assert_eq!(
            headers.get("x-frame-options").map(|v| v.to_str().ok()),
            Some(Some("DENY")),
            "the consent page's headers"
        );
        let csp = headers
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(
            headers.get("cache-control").map(|v| v.to_str().ok()),
            Some(Some("no-store"))
        );
        assert!(
            headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/html")),
            "{changes:?}"
        );
    }
    // A state of 512 characters is fine.
    let (status, _, _) = flow
        .get(&flow.authorize_url(&[("state", Some(&"s".repeat(512)))]))
        .await;
    assert_eq!(status, StatusCode::FOUND);
    // A repeated parameter is refused outright.
    let doubled = format!("{}&state=again", flow.authorize_url(&[]));
    assert_eq!(flow.get(&doubled).await.0, StatusCode::BAD_REQUEST);

    // Registration rules.
    for (uris, kind) in [
        (json!(["javascript:alert(1)"]), "unsafe scheme"),
        (json!(["https://app.example/cb#x"]), "fragment"),
        (json!(["https://user@app.example/cb"]), "userinfo"),
        (json!(["http://app.example/cb"]), "http off loopback"),
        (json!(["https://app.example/a/%2e%2e/cb"]), "dot-segment"),
        (json!([]), "none"),
        (json!(["search-ms:query=x"]), "an operating system handler"),
        (
            json!(["ms-msdt:/id PCWDiagnostic"]),
            "an operating system handler",
        ),
        (
            json!(["myapp:/callback"]),
            "a scheme that is not a reverse domain name",
        ),
        (
            json!(["https://evil.example/cb\r\nSet-Cookie: x=y"]),
            "control characters",
        ),
        (json!(["https://evil.example/c b"]), "a space"),
        (
            json!(["https://ex\u{202E}moc.example/cb"]),
            "a bidi control",
        ),
    ] {
        let reply = flow
            .http
            .post(format!("{}/register", s.mcp))
            .json(&json!({ "redirect_uris": uris }))
            .send()
            .await
            .expect("register");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{kind}");
        let body: Value = reply.json().await.expect("json");
        assert_eq!(body["error"], "invalid_redirect_uri", "{kind}");
    }
    let reply = flow
        .http
        .post(format!("{}/register", s.mcp))
        .json(&json!({"redirect_uris": ["http://127.0.0.1:3/cb"], "application_type": "web"}))
        .send()
        .await
        .expect("register");
    assert_eq!(
        reply.status(),
        StatusCode::BAD_REQUEST,
        "web clients need https"
    );
    let reply = flow
        .http
        .post(format!("{}/register", s.mcp))
        .json(&json!({"redirect_uris": ["https://app.example/cb"], "application_type": "web", "scope": "openid"}))
        .send()
        .await
        .expect("register");
    assert_eq!(reply.status(), StatusCode::CREATED);
    let body: Value = reply.json().await.expect("json");
    assert_eq!(body["token_endpoint_auth_method"], "none");
    assert_eq!(body["application_type"], "web");
}

#[tokio::test]
async fn consent_needs_the_csrf_token_and_the_browser_that_started_the_sign_in() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    let (txn, csrf) = flow.open_consent(&[]).await;
    // Another browser (no cookie) sees neither the page nor can it decide.
    let other = no_redirects();
    let page = other
        .get(format!("{}/consent?txn={txn}", s.mcp))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let (status, _, _) = flow
        .post_consent(
            &[("txn", &txn), ("csrf", &csrf), ("decision", "allow")],
            false,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no cookie");
    let (status, _, _) = flow
        .post_consent(&[("txn", &txn), ("decision", "allow")], true)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no CSRF token");
    let (status, _, _) = flow
        .post_consent(
            &[("txn", &txn), ("csrf", "forged"), ("decision", "allow")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "wrong CSRF token");
    // The provider's answer is accepted only in the browser that approved.
    let (status, headers, _) = flow
        .post_consent(
            &[("txn", &txn), ("csrf", &csrf), ("decision", "allow")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FOUND);
    let callback = walk(
        &location(&headers),
        "alice",
        &format!("{}/auth/callback", s.mcp),
    )
    .await;
    let stolen = other.get(&callback).send().await.expect("callback");
    assert_eq!(
        stolen.status(),
        StatusCode::FORBIDDEN,
        "callback without the cookie"
    );
    // A transaction never approved cannot be completed at the callback.
    let (txn2, _) = flow.open_consent(&[]).await;
    let (status, _, _) = flow
        .get(&format!(
            "{}/auth/callback?state={txn2}&code=made-up",
            s.mcp
        ))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Deny sends the client an access_denied.
    let (txn3, csrf3) = flow.open_consent(&[]).await;
    let (status, headers, _) = flow
        .post_consent(
            &[("txn", &txn3), ("csrf", &csrf3), ("decision", "deny")],
            true,
        )
        .await;
    assert_eq!(status, StatusCode::FOUND);
    let q = query_of(&location(&headers));
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], flow.state);
}

#[tokio::test]
async fn the_token_endpoint_checks_pkce_client_redirect_resource_and_code_lifetime() {
    let Some(s) = setup().await else {
        return;
    };
    let mut flow = Flow::new(&s).await;
    let resource = format!("{}/mcp", s.mcp);

    let code = flow.code("alice").await;
    let (status, body) = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &flow.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &mreg::oauth::random_token(40)),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "wrong verifier"
    );
    assert_eq!(
        flow.redeem(&code).await.0,
        StatusCode::BAD_REQUEST,
        "a failed attempt spends the code"
    );

    let code = flow.code("alice").await;
    let (status, body) = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &flow.client_id),
            ("redirect_uri", REDIRECT),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "no verifier"
    );

    let code = flow.code("alice").await;
    let (status, body) = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &flow.client_id),
            ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
            ("code_verifier", &flow.verifier),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "redirect mismatch"
    );

    let code = flow.code("alice").await;
    let (status, body) = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &flow.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &flow.verifier),
            ("resource", &format!("{}/servers/x/mcp", s.mcp)),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_target")),
        "resource mismatch"
    );

    let code = flow.code("alice").await;
    let (status, body) = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", "00000000-0000-0000-0000-000000000000"),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &flow.verifier),
            ("resource", &resource),
        ])
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "unknown clients re-register on 401"
    );
    assert_eq!(body["error"], "invalid_client");

    let other = Flow::new(&s).await;
    let code = flow.code("alice").await;
    let (status, body) = other
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &other.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &flow.verifier),
        ])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "another client's code"
    );

    // A code lives two minutes (MREG_AUTHORIZATION_CODE_TTL): one second before, it works; a
    // code redeemed one second after is refused.
    let code = flow.code("alice").await;
    s.app.clock.advance(Duration::from_secs(119));
    let (status, _) = flow.redeem(&code).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a code one second before it expires"
    );
    let code = flow.code("alice").await;
    s.app.clock.advance(Duration::from_secs(121));
    let (status, body) = flow.redeem(&code).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_grant")),
        "expired code"
    );

    let (status, body) = flow
        .token(&[("grant_type", "password"), ("client_id", &flow.client_id)])
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("unsupported_grant_type"))
    );
}

#[tokio::test]
async fn provider_tokens_for_this_app_are_accepted_and_forged_ones_refused() {
    let Some(s) =
        setup_with(|app| app.with_config(|c| c.azure.clock_skew = Duration::from_secs(60))).await
    else {
        return;
    };
    let app_token = s.idp.app_token(TENANT, &format!("api://{CLIENT_ID}")).await;
    let (status, _, me) = whoami(&s.app, &app_token).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["roles"], json!(["admin"]));
    assert_eq!(me["tenant"], TENANT);
    assert_eq!(me["client_id"], CLIENT_ID);
    let bare = s.idp.app_token(TENANT, CLIENT_ID).await;
    assert_eq!(
        whoami(&s.app, &bare).await.0,
        StatusCode::OK,
        "aud = client id"
    );
    let (status, _) = mcp_initialize(&format!("{}/mcp", s.mcp), Some(&app_token)).await;
    assert_eq!(status, StatusCode::OK);

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = s.idp.claims(TENANT);
    let token = s.idp.sign(good.clone()).await;
    assert_eq!(
        whoami(&s.app, &token).await.0,
        StatusCode::OK,
        "the baseline token is good"
    );
    let spoil = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        claims
    };
    let within_skew = s.idp.sign(spoil("exp", json!(now - 30))).await;
    assert_eq!(
        whoami(&s.app, &within_skew).await.0,
        StatusCode::OK,
        "expired within the skew"
    );
    for (claims, why) in [
        (spoil("aud", json!("api://someone-else")), "wrong audience"),
        (
            spoil(
                "iss",
                json!(format!("{}/{OTHER_TENANT}/v2.0", s.idp.authority)),
            ),
            "wrong issuer",
        ),
        (
            spoil("tid", json!(OTHER_TENANT)),
            "tenant does not match the issuer",
        ),
        (spoil("exp", json!(now - 120)), "expired beyond the skew"),
        (spoil("nbf", json!(now + 600)), "not yet valid"),
    ] {
        let token = s.idp.sign(claims).await;
        let (status, headers, _) = whoami(&s.app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(challenge_of(&headers).contains("invalid_token"), "{why}");
    }
    let mut other_tenant = s.idp.claims(OTHER_TENANT);
    other_tenant["roles"] = json!(["admin"]);
    let token = s.idp.sign(other_tenant).await;
    assert_eq!(
        whoami(&s.app, &token).await.0,
        StatusCode::UNAUTHORIZED,
        "another tenant"
    );
    let none = s
        .idp
        .sign(json!({"claims": good, "header": {"alg": "none"}}))
        .await;
    assert_eq!(
        whoami(&s.app, &none).await.0,
        StatusCode::UNAUTHORIZED,
        "alg none"
    );
    let hs256 = s
        .idp
        .sign(json!({"claims": good, "header": {"alg": "HS256"}}))
        .await;
    assert_eq!(
        whoami(&s.app, &hs256).await.0,
        StatusCode::UNAUTHORIZED,
        "HS256 keyed with the public key"
    );
    let rogue = s.idp.sign(json!({"claims": good, "key": "rogue"})).await;
    assert_eq!(
        whoami(&s.app, &rogue).await.0,
        StatusCode::UNAUTHORIZED,
        "an unpublished key"
    );

    // A flood of unknown key ids costs at most one key-set fetch a minute.
    let before = s.idp.jwks_hits().await;
    for i in 0..25 {
        let token = s
            .idp
            .sign(json!({"claims": good, "header": {"kid": format!("made-up-{i}")}}))
            .await;
        assert_eq!(whoami(&s.app, &token).await.0, StatusCode::UNAUTHORIZED);
    }
    let after = s.idp.jwks_hits().await;
    assert!(
        after - before <= 1,
        "{} fetches for 25 unknown kids",
        after - before
    );
}

#[tokio::test]
async fn mreg_tokens_are_bound_to_their_resource() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    let resource = format!("{}/servers/alpha/mcp", s.mcp);
    let back = flow
        .sign_in("alice", &[("resource", Some(&resource))])
        .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("client_id", &flow.client_id),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &flow.verifier),
            ("resource", &resource),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(claims_of(access)["aud"], resource);
    // Valid for its own endpoint (the proxy then says the server is unknown) …
    let (status, _) = mcp_initialize(&resource, Some(access)).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "authenticated; no such server"
    );
    // … but not for another server's, nor for the gateway's own /mcp or the REST API.
    let (status, headers) =
        mcp_initialize(&format!("{}/servers/beta/mcp", s.mcp), Some(access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(challenge_of(&headers).contains("another resource"));
    assert_eq!(
        mcp_initialize(&format!("{}/mcp", s.mcp), Some(access))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_missing_required_scope_is_403_insufficient_scope() {
    let Some(s) = setup_with(|app| {
        app.with_config(|c| c.auth.required_scopes = vec!["access_as_user".to_owned()])
    })
    .await
    else {
        return;
    };
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("alice").await;
    let access = tokens["access_token"].as_str().expect("access");
    let (status, headers, body) = whoami(&s.app, access).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let challenge = challenge_of(&headers);
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("scope=\"access_as_user\""),
        "{challenge}"
    );
    // Asking for the scope gets a token that passes.
    let mut flow = Flow::new(&s).await;
    let back = flow
        .sign_in("alice", &[("scope", Some("openid profile access_as_user"))])
        .await;
    let code = query_of(&back)["code"].clone();
    let (status, tokens) = flow.redeem(&code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::OK);
    // App-only tokens carry roles, not scopes.
    let app_token = s.idp.app_token(TENANT, &format!("api://{CLIENT_ID}")).await;
    assert_eq!(whoami(&s.app, &app_token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_multi_tenant_app_admits_only_allowed_tenants() {
    let Some(s) = setup_with(|app| app.with_allowed_tenants(&[TENANT])).await else {
        return;
    };
    let token = s.idp.sign(s.idp.claims(TENANT)).await;
    assert_eq!(whoami(&s.app, &token).await.0, StatusCode::OK);
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("alice").await;
    assert_eq!(
        claims_of(tokens["access_token"].as_str().expect("access"))["tid"],
        TENANT
    );
    let other = s.idp.sign(s.idp.claims(OTHER_TENANT)).await;
    let (status, headers, _) = whoami(&s.app, &other).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a tenant not on the allowlist"
    );
    assert!(challenge_of(&headers).contains("not allowed"));
    let mut forged = s.idp.claims(OTHER_TENANT);
    forged["tid"] = json!(TENANT);
    let forged = s.idp.sign(forged).await;
    assert_eq!(
        whoami(&s.app, &forged).await.0,
        StatusCode::UNAUTHORIZED,
        "tid and iss disagree"
    );
}

#[tokio::test]
async fn a_user_graph_does_not_confirm_is_not_signed_in() {
    // Nothing listens on the discard port.
    let dead = url::Url::parse("http://127.0.0.1:9").expect("url");
    let Some(s) = setup_with(|app| app.with_config(move |c| c.azure.graph_url = dead)).await else {
        return;
    };
    let mut flow = Flow::new(&s).await;
    let back = flow.sign_in("alice", &[]).await;
    let q = query_of(&back);
    assert_eq!(
        q.get("error").map(String::as_str),
        Some("access_denied"),
        "{back}"
    );
    assert!(!q.contains_key("code"));
}

#[tokio::test]
async fn tokens_from_one_replica_are_accepted_by_another() {
    if !peers_available() {
        return;
    }
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (idp, a) = provider_and_gateway(&[TENANT, OTHER_TENANT], |app, idp| {
        app.with_oauth(idp).with_postgres(&db.url)
    })
    .await;
    // Replica B: the same database, and A's address as the issuer both answer for.
    let public = format!("http://{}", a.mcp_addr);
    let issuer = url::Url::parse(&public).expect("url");
    let b = TestApp::builder()
        .with_oauth(&idp)
        .with_postgres(&db.url)
        .with_config(move |c| c.public_url = Some(issuer))
        .spawn()
        .await;
    let s = Setup {
        idp,
        app: a,
        mcp: public.clone(),
    };
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("alice").await;
    let access = tokens["access_token"].as_str().expect("access");
    let (status, _, me) = whoami(&b, access).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "replica B accepts replica A's token: {me}"
    );
    assert_eq!(me["subject"], ALICE_OID);
    // B can refresh A's grant (clients, grants and keys are in the shared database).
    let reply = reqwest::Client::new()
        .post(format!("http://{}/token", b.mcp_addr))
        .form(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                tokens["refresh_token"].as_str().expect("refresh"),
            ),
            ("client_id", &flow.client_id),
        ])
        .send()
        .await
        .expect("refresh at B");
    assert_eq!(reply.status(), StatusCode::OK);
    drop(flow);
    s.app.stop().await;
    b.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_callback_on_another_origin_than_the_gateway_is_refused_at_start() {
    let dir = crate::support::TempDir::new();
    let config = crate::support::test_config(
        &dir,
        &[
            ("AZURE_TENANT_ID", TENANT),
            ("AZURE_CLIENT_ID", CLIENT_ID),
            ("AZURE_CLIENT_SECRET", SECRET),
            ("MREG_PUBLIC_URL", "http://127.0.0.1:8001"),
            ("OAUTH_CALLBACK_URL", "http://localhost:8001/auth/callback"),
        ],
    );
    let error = mreg::app::start(config).await.err().expect("refused");
    assert!(error.to_string().contains("OAUTH_CALLBACK_URL"), "{error}");
}

#[tokio::test]
async fn without_authentication_only_loopback_binds_are_allowed() {
    // A configuration error, found before anything is bound (`mreg serve` and `check-config`
    // exit 64 with it; see cli::a_public_listener_without_authentication_is_a_configuration_error).
    for (host_var, host) in [
        ("MREG_API_HOST", "0.0.0.0"),
        ("FASTMCP_SERVER_HOST", "192.0.2.10"),
    ] {
        let error = mreg::config::RawConfig::collect(
            None,
            Vec::new(),
            [("MREG_AUTH", "none"), (host_var, host)].map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .and_then(|raw| raw.parse())
        .expect_err("refused");
        assert_eq!(error.setting, host_var);
        assert!(error.message.contains("authentication is off"), "{error}");
    }
}

#[tokio::test]
async fn the_typescript_sdk_client_completes_the_flow_and_calls_tools() {
    let Some(s) = setup().await else { return };
    let upstream = crate::support::upstream::Upstream::start(true).await;
    let app_token = s.idp.app_token(TENANT, &format!("api://{CLIENT_ID}")).await;
    let reply = s
        .app
        .http
        .post(s.app.url("/api/v1/servers"))
        .bearer_auth(&app_token)
        .json(&json!({"name": "echo", "url": upstream.url}))
        .send()
        .await
        .expect("register");
    assert_eq!(reply.status(), StatusCode::CREATED);

    let run = |url: String, command: Vec<&'static str>| async move {
        let output = Command::new("node")
            .arg(interop_dir().join("oauth-client.mjs"))
            .args(["--url", &url, "--user", "alice"])
            .args(command)
            .output()
            .await
            .expect("node runs the client");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        let reply: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
            panic!(
                "client output: {stdout} / {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        assert!(output.status.success(), "{reply}");
        reply
    };
    let tools = run(format!("{}/mcp", s.mcp), vec!["tools"]).await;
    let names = tools["tools"].as_array().expect("tools");
    assert!(names.contains(&json!("list_servers")), "{tools}");
    let listed = run(format!("{}/mcp", s.mcp), vec!["call", "list_servers", "{}"]).await;
    assert!(listed.to_string().contains("echo"), "{listed}");
    let echoed = run(
        format!("{}/servers/echo/mcp", s.mcp),
        vec!["call", "echo", r#"{"text":"through the gateway"}"#],
    )
    .await;
    assert!(
        echoed.to_string().contains("through the gateway"),
        "{echoed}"
    );
}

#[tokio::test]
async fn mreg_login_signs_in_from_the_terminal_and_client_commands_use_the_token() {
    let Some(s) = setup().await else { return };
    let dir = crate::support::TempDir::new();
    let credentials = dir.0.join("credentials.json");
    let mreg = |args: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_mreg"));
        command
            .args(args)
            .env("MREG_CREDENTIALS", &credentials)
            .env("MREG_GATEWAY_URL", s.app.base.as_str())
            .env_remove("MREG_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    };
    // The gateway is named once (its REST API); login finds the issuer from it.
    let mut login = mreg(&["login", "--no-browser", "--timeout", "60"])
        .spawn()
        .expect("mreg login starts");
    let mut stderr = BufReader::new(login.stderr.take().expect("stderr")).lines();
    let url = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), stderr.next_line())
            .await
            .expect("login prints the sign-in URL")
            .expect("read")
            .expect("a line");
        if let Some(url) = line.trim().strip_prefix("http") {
            break format!("http{url}");
        }
    };
    let redirect = query_of(&url)["redirect_uri"].clone();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    // A connection that says nothing (a port scanner, a browser's preconnect) and a request for
    // another path do not stall the loopback redirect.
    let port = url::Url::parse(&redirect)
        .expect("url")
        .port()
        .expect("port");
    let _silent = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    // One that starts a request and never finishes it must not hold the answer back either.
    let mut unfinished = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut unfinished, b"GET /callback?code=forged HTTP/1.1\r\n")
        .await
        .expect("write");
    // A HEAD to the redirect is not the redirect: it does not end the login.
    let head = reqwest::Client::new()
        .head(format!("http://127.0.0.1:{port}/callback?code=forged"))
        .send()
        .await
        .expect("HEAD answered");
    assert_eq!(head.status(), StatusCode::METHOD_NOT_ALLOWED);
    let other = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(format!("http://127.0.0.1:{port}/favicon.ico")),
    )
    .await
    .expect("answered beside a silent connection")
    .expect("reached");
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
    let back = walk(&url, "alice", &redirect).await;
    let landing = reqwest::get(&back).await.expect("the loopback redirect");
    assert_eq!(landing.status(), StatusCode::OK);
    assert!(
        landing
            .text()
            .await
            .expect("page")
            .starts_with("Signed in."),
        "the page tells the person the sign-in worked"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), login.wait())
        .await
        .expect("login ends")
        .expect("status");
    assert!(status.success(), "mreg login failed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials)
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "credentials are private");
    }

    let out = mreg(&["whoami"]).output().await.expect("whoami");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(ALICE_OID) && text.contains("admin"), "{text}");
    let out = mreg(&["servers", "list"]).output().await.expect("servers");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = mreg(&[
        "call",
        "register_server",
        "name=cli-made",
        "url=https://cli-made.example.com/mcp",
    ])
    .output()
    .await
    .expect("call");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (status, _, listed) = {
        let reply = s
            .app
            .http
            .get(s.app.url("/api/v1/servers/cli-made"))
            .bearer_auth(
                serde_json::from_str::<Value>(
                    &std::fs::read_to_string(&credentials).expect("read"),
                )
                .expect("json")["access_token"]
                    .as_str()
                    .expect("token"),
            )
            .send()
            .await
            .expect("get");
        (
            reply.status(),
            (),
            reply.json::<Value>().await.expect("json"),
        )
    };
    assert_eq!(status, StatusCode::OK, "{listed}");

    // An expired access token is refreshed (and rotated) on the next command.
    let mut saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&credentials).expect("read")).expect("json");
    let old_refresh = saved["refresh_token"].as_str().expect("refresh").to_owned();
    saved["expires_at"] = json!(0);
    std::fs::write(&credentials, saved.to_string()).expect("write");
    let out = mreg(&["whoami"]).output().await.expect("whoami");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(&credentials).expect("read")).expect("json");
    let new_refresh = saved["refresh_token"].as_str().expect("refresh").to_owned();
    assert_ne!(new_refresh, old_refresh, "the refresh token rotated");
    assert!(
        saved["expires_at"].as_i64().expect("exp")
            > time::OffsetDateTime::now_utc().unix_timestamp()
    );

    // Logout revokes the grant and forgets the credentials.
    let out = mreg(&["logout"]).output().await.expect("logout");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!credentials.exists());
    let client_id = saved["client_id"].as_str().expect("client").to_owned();
    let reply = reqwest::Client::new()
        .post(format!("{}/token", s.mcp))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", new_refresh.as_str()),
            ("client_id", client_id.as_str()),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(
        reply.status(),
        StatusCode::BAD_REQUEST,
        "the grant is revoked"
    );
    let out = mreg(&["servers", "list"]).output().await.expect("servers");
    assert!(!out.status.success(), "without a login the gateway refuses");
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

/// Serves client metadata documents on loopback: good, lying about its id, too big, moved, and
/// asking for an unsupported authentication method.
async fn document_server() -> String {
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let doc = |path: &str, extra: Value| {
        let mut d = json!({
            "client_id": format!("{base}{path}"),
            "client_name": "Document Client",
            "redirect_uris": [REDIRECT],
            "token_endpoint_auth_method": "none",
        });
        if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            d.extend(extra.clone());
        }
        d
    };
    let good = doc("/good.json", json!({}));
    let mismatch = doc(
        "/mismatch.json",
        json!({"client_id": "https://elsewhere.example/client.json"}),
    );
    let big = doc("/big.json", json!({"padding": "x".repeat(10_000)}));
    let private_key = doc(
        "/jwt.json",
        json!({"token_endpoint_auth_method": "private_key_jwt"}),
    );
    let router = axum::Router::new()
        .route(
            "/good.json",
            axum::routing::get(move || async move { axum::Json(good) }),
        )
        .route(
            "/mismatch.json",
            axum::routing::get(move || async move { axum::Json(mismatch) }),
        )
        .route(
            "/big.json",
            axum::routing::get(move || async move { axum::Json(big) }),
        )
        .route(
            "/jwt.json",
            axum::routing::get(move || async move { axum::Json(private_key) }),
        )
        .route(
            "/moved.json",
            axum::routing::get(|| async {
                (StatusCode::FOUND, [(LOCATION, "/good.json")]).into_response()
            }),
        );
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test]
async fn a_client_id_metadata_document_stands_in_for_registration() {
    let Some(s) = setup_with(|app| app.with_config(|c| c.auth.cimd_allow_private = true)).await
    else {
        return;
    };
    let docs = document_server().await;
    let (status, meta) = {
        let reply = reqwest::get(format!("{}/.well-known/oauth-authorization-server", s.mcp))
            .await
            .expect("metadata");
        (reply.status(), reply.json::<Value>().await.expect("json"))
    };
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["client_id_metadata_document_supported"], true);

    let client_id = format!("{docs}/good.json");
    let mut flow = Flow::with_client_id(&s, &client_id);
    let (txn, _) = flow.open_consent(&[]).await;
    let (_, _, page) = flow.get(&format!("{}/consent?txn={txn}", s.mcp)).await;
    assert!(
        page.contains("published by <strong>127.0.0.1</strong>"),
        "{page}"
    );
    let tokens = flow.tokens("alice").await;
    let claims = claims_of(tokens["access_token"].as_str().expect("access"));
    assert_eq!(claims["client_id"], client_id);

    for path in [
        "/mismatch.json",
        "/big.json",
        "/moved.json",
        "/jwt.json",
        "/missing.json",
    ] {
        let flow = Flow::with_client_id(&s, &format!("{docs}{path}"));
        let reply = flow
            .http
            .get(flow.authorize_url(&[]))
            .send()
            .await
            .expect("authorize");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply.headers().get(LOCATION).is_none(),
            "{path} must not redirect"
        );
    }
    let flow = Flow::with_client_id(&s, &client_id);
    let reply = flow
        .http
        .get(flow.authorize_url(&[("redirect_uri", Some("http://127.0.0.1:9/not-listed"))]))
        .send()
        .await
        .expect("authorize");
    assert_eq!(
        reply.status(),
        StatusCode::BAD_REQUEST,
        "redirect URIs come from the document"
    );
}

#[tokio::test]
async fn metadata_documents_on_private_addresses_are_not_fetched_by_default() {
    let Some(s) = setup().await else { return };
    let docs = document_server().await;
    // Plain http is refused outright; https to a private address is refused before any fetch.
    let flow = Flow::with_client_id(&s, &format!("{docs}/good.json"));
    let reply = flow
        .http
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .expect("authorize");
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert!(reply.text().await.expect("page").contains("https"));
    let private = format!("{}/good.json", docs.replace("http://", "https://"));
    let flow = Flow::with_client_id(&s, &private);
    let reply = flow
        .http
        .get(flow.authorize_url(&[]))
        .send()
        .await
        .expect("authorize");
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    let page = reply.text().await.expect("page");
    assert!(page.contains("private address"), "{page}");
    let reply = flow
        .token(&[
            ("grant_type", "authorization_code"),
            ("code", "anything"),
            ("client_id", &format!("{docs}/good.json")),
        ])
        .await;
    assert_eq!(reply.0, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.1["error"], "invalid_client");
}

#[tokio::test]
async fn a_generic_openid_connect_provider_works_like_the_entra_preset() {
    if !peers_available() {
        return;
    }
    // The generic provider's settings are this test's subject, so it names them.
    let (idp, app) = provider_and_gateway(&[TENANT, OTHER_TENANT], |app, idp| {
        let issuer = format!("{}/{TENANT}/v2.0", idp.authority);
        app.settings(&[
            ("MREG_OIDC_ISSUER", issuer.as_str()),
            ("MREG_OIDC_CLIENT_ID", CLIENT_ID),
            ("MREG_OIDC_CLIENT_SECRET", SECRET),
            ("OAUTH_SCOPES", "openid profile email"),
        ])
    })
    .await;
    let s = Setup {
        mcp: format!("http://{}", app.mcp_addr),
        idp,
        app,
    };
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("bob").await;
    let access = tokens["access_token"].as_str().expect("access");
    let (status, _, me) = whoami(&s.app, access).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["subject"], BOB_OID);
    assert_eq!(me["roles"], json!(["user"]));
    // The provider's own tokens for this client are accepted; the issuer must be exact.
    let app_token = s.idp.app_token(TENANT, CLIENT_ID).await;
    assert_eq!(whoami(&s.app, &app_token).await.0, StatusCode::OK);
    let mut other = s.idp.claims(OTHER_TENANT);
    other["aud"] = json!(CLIENT_ID);
    let other = s.idp.sign(other).await;
    assert_eq!(
        whoami(&s.app, &other).await.0,
        StatusCode::UNAUTHORIZED,
        "another issuer"
    );
}

#[tokio::test]
async fn validated_tokens_are_cached_in_redis_no_longer_than_allowed() {
    let Some(redis_url) = crate::support::redis_available().await else {
        return;
    };
    let prefix = format!("mreg-test-{}:", uuid::Uuid::new_v4().simple());
    let Some(s) = setup_with(|app| {
        app.with_redis(&redis_url)
            .with_redis_prefix(&prefix)
            .with_config(|c| c.azure.token_cache_ttl = Duration::from_secs(30))
    })
    .await
    else {
        return;
    };
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("alice").await;
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::OK);
    let key = format!("{prefix}auth:token:{}", mreg::oauth::sha256_hex(access));
    let client = redis::Client::open(redis_url.as_str()).expect("redis");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(
        (1..=30_000).contains(&ttl),
        "cached for at most AZURE_TOKEN_CACHE_TTL: {ttl} ms"
    );
    let cached: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("get");
    assert!(
        !cached.contains(access),
        "the cache holds the principal, not the token"
    );
    // A token that expires sooner is cached only until it expires.
    let mut claims = s.idp.claims(TENANT);
    claims["exp"] = json!(time::OffsetDateTime::now_utc().unix_timestamp() + 5);
    let short = s.idp.sign(claims).await;
    assert_eq!(whoami(&s.app, &short).await.0, StatusCode::OK);
    let key = format!("{prefix}auth:token:{}", mreg::oauth::sha256_hex(&short));
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .expect("pttl");
    assert!(
        (1..=5_000).contains(&ttl),
        "never past the token's expiry: {ttl} ms"
    );
    // Revocation removes the cached entry at once.
    let revoked = reqwest::Client::new()
        .post(format!("{}/revoke", s.mcp))
        .form(&[("token", access), ("client_id", flow.client_id.as_str())])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoked.status(), StatusCode::OK);
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn two_signed_in_users_never_share_an_upstream_session() {
    let Some(s) = setup().await else { return };
    let upstream = crate::support::upstream::Upstream::start(true).await;
    let alice = s.idp.sign(s.idp.claims(TENANT)).await;
    let mut bob_claims = s.idp.claims(TENANT);
    bob_claims["oid"] = json!(BOB_OID);
    let bob = s.idp.sign(bob_claims).await;
    let reply = s
        .app
        .http
        .post(s.app.url("/api/v1/servers"))
        .bearer_auth(&alice)
        .json(&json!({"name": "shared", "url": upstream.url}))
        .send()
        .await
        .expect("register");
    assert_eq!(reply.status(), StatusCode::CREATED);
    let endpoint = format!("{}/servers/shared/mcp", s.mcp);
    let (status, headers) = mcp_initialize(&endpoint, Some(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    let session = headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a session")
        .to_owned();
    let list = |token: String| {
        let endpoint = endpoint.clone();
        let session = session.clone();
        async move {
            reqwest::Client::new()
                .post(endpoint)
                .bearer_auth(token)
                .header("mcp-session-id", session)
                .header("accept", "application/json, text/event-stream")
                .json(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
                .send()
                .await
                .expect("tools/list")
                .status()
        }
    };
    assert_eq!(
        list(alice.clone()).await,
        StatusCode::OK,
        "alice's own session"
    );
    assert_eq!(
        list(bob.clone()).await,
        StatusCode::NOT_FOUND,
        "bob cannot use alice's session"
    );
}

#[tokio::test]
async fn the_public_endpoints_are_limited_per_client_address_behind_a_trusted_proxy() {
    let Some(s) = setup_with(|app| {
        app.with_config(|c| {
            c.auth.oauth_rate_limit_per_minute = 3;
            c.auth.trusted_proxy_hops = 1;
        })
    })
    .await
    else {
        return;
    };
    let http = reqwest::Client::new();
    // The trusted proxy appends the address it saw; what the client put before it is ignored.
    let register = |forwarded: String| {
        let (http, url) = (http.clone(), format!("{}/register", s.mcp));
        async move {
            http.post(url)
                .header("x-forwarded-for", forwarded)
                .json(&json!({"redirect_uris": ["http://127.0.0.1:9/cb"]}))
                .send()
                .await
                .expect("register")
        }
    };
    for spoofed in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        let forwarded = format!("{spoofed}, 203.0.113.7");
        assert_eq!(register(forwarded).await.status(), StatusCode::CREATED);
    }
    let refused = register("198.51.100.4, 203.0.113.7".to_owned()).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "retry after {retry} s");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("too many requests from this address")),
        "{body}"
    );
    // The token endpoint shares the address's budget; another address has its own.
    let token = http
        .post(format!("{}/token", s.mcp))
        .header("x-forwarded-for", "203.0.113.7")
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x")])
        .send()
        .await
        .expect("token");
    assert_eq!(token.status(), StatusCode::TOO_MANY_REQUESTS);
    // So do the authorization pages, which store a sign-in transaction per request.
    let authorize = http
        .get(format!(
            "{}/authorize?client_id=x&response_type=code",
            s.mcp
        ))
        .header("x-forwarded-for", "203.0.113.7")
        .send()
        .await
        .expect("authorize");
    assert_eq!(authorize.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        register("203.0.113.8".to_owned()).await.status(),
        StatusCode::CREATED,
        "another client address"
    );

    // Each refusal is audited and counted.
    let rows =
        crate::support::audit::at_least(7, || crate::support::audit::sqlite_rows(&s.app.dir.0))
            .await;
    let limited: Vec<&str> = rows
        .iter()
        .filter(|r| r.event.decision == "rate_limited")
        .map(|r| r.event.operation.as_str())
        .collect();
    assert_eq!(
        limited,
        ["oauth.register", "oauth.token", "oauth.authorize"]
    );
    let metrics = s.app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "mreg_policy_refusals_total{reason=\"rate_limited\"} 3"),
        "{metrics}"
    );
}

// ---------------------------------------------------------------- security review (issue 14)

/// Unix seconds now.
fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test]
async fn a_refreshed_id_token_that_fails_validation_revokes_the_grant() {
    let Some(s) = setup().await else { return };
    for (change, why) in [
        (
            json!({"id_token": {"aud": "api://someone-else"}}),
            "wrong audience",
        ),
        (
            json!({"key": "rogue", "id_token": {}}),
            "an unpublished key",
        ),
        (json!({"id_token": {"oid": BOB_OID}}), "another user"),
        (json!({"id_token": {"exp": unix_now() - 3600}}), "expired"),
    ] {
        let mut flow = Flow::new(&s).await;
        let tokens = flow.tokens("alice").await;
        let access = tokens["access_token"].as_str().expect("access");
        let refresh = tokens["refresh_token"].as_str().expect("refresh");
        assert_eq!(whoami(&s.app, access).await.0, StatusCode::OK, "{why}");
        let mut change = change;
        change["grant_type"] = json!("refresh_token");
        s.idp.next_token(change).await;
        let (status, body) = flow.refresh(refresh).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(body["error"], "invalid_grant", "{why}");
        assert!(body.get("access_token").is_none(), "{why}: no token issued");
        // The grant is gone: its refresh token (with a good provider answer now) and the access
        // token it issued earlier are refused.
        let (status, body) = flow.refresh(refresh).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}: {body}");
        assert_eq!(
            whoami(&s.app, access).await.0,
            StatusCode::UNAUTHORIZED,
            "{why}: the access token of a revoked grant"
        );
    }
}

#[tokio::test]
async fn without_a_provider_refresh_token_the_grant_ends_with_the_id_token() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    // Ten minutes: the sign-in has all the time it needs; the clock is moved past it below.
    let expires = unix_now() + 600;
    s.idp
        .next_token(json!({
            "grant_type": "authorization_code",
            "drop": ["refresh_token"],
            "id_token": {"exp": expires},
        }))
        .await;
    let tokens = flow.tokens("alice").await;
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    // Within the ID token's lifetime the grant refreshes (without asking the provider) …
    assert!(unix_now() < expires - 1, "the sign-in took too long");
    let (status, next) = flow.refresh(&refresh).await;
    assert_eq!(status, StatusCode::OK, "{next}");
    let refresh = next["refresh_token"].as_str().expect("rotated").to_owned();
    // … and not after it (the gateway's clock moves past it; nobody waits).
    let wait = (expires + 1 - unix_now()).max(0) as u64;
    s.app.clock.advance(Duration::from_secs(wait));
    let (status, body) = flow.refresh(&refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("access_token").is_none());
}

#[tokio::test]
async fn a_refresh_rechecks_the_tenant_against_the_configuration_of_now() {
    if !peers_available() {
        return;
    }
    let Some(db) = TestDb::create().await else {
        return;
    };
    let (idp, a) = provider_and_gateway(&[TENANT, OTHER_TENANT], |app, idp| {
        app.with_oauth(idp)
            .with_allowed_tenants(&[TENANT, OTHER_TENANT])
            .with_postgres(&db.url)
    })
    .await;
    let public = format!("http://{}", a.mcp_addr);
    let issuer = url::Url::parse(&public).expect("url");
    // The same deployment restarted with TENANT taken off the list.
    let b = TestApp::builder()
        .with_oauth(&idp)
        .with_allowed_tenants(&[OTHER_TENANT])
        .with_postgres(&db.url)
        .with_config(move |c| c.public_url = Some(issuer))
        .spawn()
        .await;
    let s = Setup {
        idp,
        app: a,
        mcp: public.clone(),
    };
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("alice").await;
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    // The provider answers without an ID token, so only the stored tenant can be checked.
    s.idp
        .next_token(json!({"grant_type": "refresh_token", "drop": ["id_token"]}))
        .await;
    let at_b = |refresh: String| {
        let url = format!("http://{}/token", b.mcp_addr);
        let client_id = flow.client_id.clone();
        async move {
            let reply = reqwest::Client::new()
                .post(url)
                .form(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", client_id.as_str()),
                ])
                .send()
                .await
                .expect("refresh at B");
            (
                reply.status(),
                reply.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = at_b(refresh.to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    assert!(body.get("access_token").is_none());
    // The grant is revoked, not only refused this once: A refuses it too.
    let (status, body) = flow.refresh(refresh).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    drop(flow);
    s.app.stop().await;
    b.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_replayed_code_revokes_the_tokens_issued_for_it() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    let code = flow.code("alice").await;
    let (status, tokens) = flow.redeem(&code).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = tokens["access_token"].as_str().expect("access");
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::OK);
    let (status, replay) = flow.redeem(&code).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(replay["error"], "invalid_grant");
    assert!(replay.get("access_token").is_none());
    assert_eq!(
        whoami(&s.app, access).await.0,
        StatusCode::UNAUTHORIZED,
        "the access token issued for the code"
    );
    let (status, _) = mcp_initialize(&format!("{}/mcp", s.mcp), Some(access)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = flow.refresh(refresh).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the refresh token issued for the code: {body}"
    );
}

#[tokio::test]
async fn a_revoked_grant_takes_its_cached_access_tokens_with_it() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    // Revocation of the refresh token (RFC 7009).
    let tokens = flow.tokens("alice").await;
    let access = tokens["access_token"].as_str().expect("access");
    assert!(claims_of(access)["gid"].is_string(), "the grant id claim");
    // Used (and so cached, validated) on both listeners first.
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::OK);
    let mcp = format!("{}/mcp", s.mcp);
    assert_eq!(mcp_initialize(&mcp, Some(access)).await.0, StatusCode::OK);
    let reply = flow
        .http
        .post(format!("{}/revoke", s.mcp))
        .form(&[
            ("token", tokens["refresh_token"].as_str().expect("refresh")),
            ("client_id", flow.client_id.as_str()),
        ])
        .send()
        .await
        .expect("revoke");
    assert_eq!(reply.status(), StatusCode::OK);
    assert_eq!(whoami(&s.app, access).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        mcp_initialize(&mcp, Some(access)).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Reuse detection: every access token of the family goes.
    let tokens = flow.tokens("bob").await;
    let first_access = tokens["access_token"].as_str().expect("access");
    let first = tokens["refresh_token"].as_str().expect("refresh");
    let (status, second) = flow.refresh(first).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    let second_access = second["access_token"].as_str().expect("access");
    assert_eq!(whoami(&s.app, second_access).await.0, StatusCode::OK);
    let (status, _) = flow.refresh(first).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "reuse");
    for access in [first_access, second_access] {
        assert_eq!(whoami(&s.app, access).await.0, StatusCode::UNAUTHORIZED);
    }
}

/// With Redis down, the gateway's own tokens still work (the grant is checked in the database,
/// which decides revocation; the cache holds only a copy), and a revoked grant stays revoked.
#[tokio::test]
async fn while_redis_is_down_own_tokens_work_and_revoked_grants_stay_revoked() {
    let Some(crate::support::RedisBehindProxy { proxy, url, prefix }) =
        crate::support::RedisBehindProxy::start().await
    else {
        return;
    };
    let Some(s) = setup_with(|app| app.with_redis(&url).with_redis_prefix(&prefix)).await else {
        return;
    };
    let mut flow = Flow::new(&s).await;
    let kept = flow.tokens("alice").await;
    let kept = kept["access_token"].as_str().expect("access").to_owned();
    let revoked = flow.tokens("bob").await;
    let revoked_access = revoked["access_token"].as_str().expect("access").to_owned();
    // An access token revoked by itself (its jti is marked in the cache alone, and its grant
    // ends in the database), and one revoked while the cache is down.
    let by_itself = flow.tokens("bob").await["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let during = flow.tokens("bob").await["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    for token in [&kept, &revoked_access, &by_itself, &during] {
        assert_eq!(whoami(&s.app, token).await.0, StatusCode::OK);
    }
    assert_eq!(flow.revoke(&by_itself).await, StatusCode::OK);
    let reply = flow
        .http
        .post(format!("{}/revoke", s.mcp))
        .form(&[
            ("token", revoked["refresh_token"].as_str().expect("refresh")),
            ("client_id", flow.client_id.as_str()),
        ])
        .send()
        .await
        .expect("revoke");
    assert_eq!(reply.status(), StatusCode::OK);

    proxy.cut();
    assert_eq!(
        flow.revoke(&during).await,
        StatusCode::OK,
        "recorded in the database"
    );
    for _ in 0..3 {
        let (status, _, body) = whoami(&s.app, &kept).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["subject"], ALICE_OID, "{body}");
        for token in [&by_itself, &during] {
            assert_eq!(whoami(&s.app, token).await.0, StatusCode::UNAUTHORIZED);
        }
        let (status, headers, _) = whoami(&s.app, &revoked_access).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(
            headers
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("revoked")),
            "{headers:?}"
        );
    }
    proxy.restore();
    // Once the cache answers again (its markers decide again, on every replica), the tokens
    // revoked while it was down stay refused: their markers were set when it came back.
    let back = std::time::Instant::now();
    while s.app.get("/readyz").await.1["status"] != "ready" {
        assert!(
            back.elapsed() < std::time::Duration::from_secs(5),
            "Redis is back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    for token in [&by_itself, &during] {
        assert_eq!(whoami(&s.app, token).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(whoami(&s.app, &kept).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_refresh_may_ask_for_fewer_scopes() {
    let Some(s) = setup().await else { return };
    let mut flow = Flow::new(&s).await;
    let tokens = flow.tokens("alice").await;
    assert_eq!(tokens["scope"], "User.Read profile openid email");
    let refresh = tokens["refresh_token"].as_str().expect("refresh");
    let (status, narrow) = flow
        .token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", &flow.client_id),
            ("scope", "openid profile"),
        ])
        .await;
    assert_eq!(status, StatusCode::OK, "{narrow}");
    assert_eq!(narrow["scope"], "openid profile");
    let access = narrow["access_token"].as_str().expect("access");
    assert_eq!(claims_of(access)["scope"], "openid profile");
    let (_, _, me) = whoami(&s.app, access).await;
    assert_eq!(me["scopes"], json!(["openid", "profile"]), "{me}");
    // The grant keeps what the user approved: a later refresh without scope gets it all.
    let (status, full) = flow
        .refresh(narrow["refresh_token"].as_str().expect("rotated"))
        .await;
    assert_eq!(status, StatusCode::OK, "{full}");
    assert_eq!(full["scope"], "User.Read profile openid email");
    // Nothing beyond the grant.
    let (status, body) = flow
        .token(&[
            ("grant_type", "refresh_token"),
            (
                "refresh_token",
                full["refresh_token"].as_str().expect("rotated"),
            ),
            ("client_id", &flow.client_id),
            ("scope", "openid access_as_user"),
        ])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_scope");
}

#[tokio::test]
async fn registration_is_bounded_in_size_and_in_clients_that_never_signed_in() {
    let Some(s) = setup_with(|app| app.with_config(|c| c.auth.max_idle_clients = 3)).await else {
        return;
    };
    let http = no_redirects();
    let register = |body: Value| {
        let http = http.clone();
        let url = format!("{}/register", s.mcp);
        async move {
            let reply = http.post(url).json(&body).send().await.expect("register");
            (
                reply.status(),
                reply.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let idle = || async {
        let store = mreg::store::SqliteStore::open(&s.app.dir.0.join("mreg.db"), 1)
            .await
            .expect("open the database");
        domain::AuthStore::idle_clients(&store)
            .await
            .expect("count")
    };
    for (body, why) in [
        (
            json!({"redirect_uris": [REDIRECT], "scope": vec!["openid"; 300].join(" ")}),
            "a long scope",
        ),
        (
            json!({"redirect_uris": [REDIRECT], "grant_types": vec!["authorization_code"; 1000]}),
            "many grant types",
        ),
    ] {
        let (status, reply) = register(body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{why}");
        assert_eq!(reply["error"], "invalid_client_metadata", "{why}");
    }
    assert_eq!(idle().await, 0, "nothing was stored");
    // A body over the endpoints' limit is refused the OAuth way (JSON), not as plain text.
    for path in ["/register", "/token", "/revoke"] {
        let reply = http
            .post(format!("{}{path}", s.mcp))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("a=".to_owned() + &"x".repeat(100 * 1024))
            .send()
            .await
            .expect("send");
        assert_eq!(reply.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        let body: Value = reply.json().await.expect("a JSON error body");
        assert_eq!(body["error"], "invalid_request", "{path}: {body}");
    }
    assert_eq!(idle().await, 0, "nothing was stored");
    let mut flow = Flow::new(&s).await;
    for _ in 0..2 {
        let (status, _) = register(json!({"redirect_uris": [REDIRECT]})).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    assert_eq!(idle().await, 3);
    let (status, reply) = register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    assert_eq!(reply["error"], "temporarily_unavailable");
    assert!(reply.get("client_id").is_none());
    assert_eq!(idle().await, 3, "no row for the refused registration");
    // A client that signed in holds a grant and no longer counts.
    let tokens = flow.tokens("alice").await;
    let (status, _) = register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, reply) = register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{reply}");
    // Registrations nobody signed in with for ten minutes make room: a burst of them shuts
    // registration for minutes, not for the week until the prune. The client that signed in
    // keeps its registration.
    s.app.clock.advance(Duration::from_secs(601));
    let (status, reply) = register(json!({"redirect_uris": [REDIRECT]})).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(idle().await, 1, "the abandoned ones were removed");
    let (status, refreshed) = flow
        .refresh(tokens["refresh_token"].as_str().expect("a refresh token"))
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
}

#[tokio::test]
async fn a_metadata_document_that_failed_is_not_fetched_again_at_once() {
    let Some(s) = setup_with(|app| app.with_config(|c| c.auth.cimd_allow_private = true)).await
    else {
        return;
    };
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = axum::Router::new().route(
        "/broken.json",
        axum::routing::get(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async { StatusCode::INTERNAL_SERVER_ERROR }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    let flow = Flow::with_client_id(&s, &format!("{base}/broken.json"));
    for _ in 0..3 {
        let reply = flow
            .http
            .get(flow.authorize_url(&[]))
            .send()
            .await
            .expect("authorize");
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
        assert!(reply.headers().get(LOCATION).is_none());
    }
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one fetch, then the failure is remembered"
    );
}

#[tokio::test]
async fn provider_id_tokens_are_not_accepted_as_access_tokens() {
    let Some(s) = setup().await else { return };
    let good = s.idp.claims(TENANT);
    let token = s.idp.sign(good.clone()).await;
    assert_eq!(whoami(&s.app, &token).await.0, StatusCode::OK, "baseline");
    // The scheme is case-insensitive (RFC 7235).
    for scheme in ["BEARER", "bearer", "Bearer"] {
        let reply = s
            .app
            .http
            .get(s.app.url("/api/v1/whoami"))
            .header("authorization", format!("{scheme} {token}"))
            .send()
            .await
            .expect("whoami");
        assert_eq!(reply.status(), StatusCode::OK, "{scheme}");
    }
    let remove = |claims: &mut Value, key: &str| {
        claims.as_object_mut().expect("object").remove(key);
    };
    let mut cases = Vec::new();
    for claim in ["nonce", "at_hash", "c_hash"] {
        let mut c = good.clone();
        c[claim] = json!("x");
        cases.push((c, claim));
    }
    let mut no_client = good.clone();
    remove(&mut no_client, "azp");
    cases.push((no_client, "neither azp nor appid"));
    let mut nothing = good.clone();
    remove(&mut nothing, "roles");
    cases.push((nothing, "neither scp nor roles"));
    let mut user_without_scp = good.clone();
    user_without_scp["idtyp"] = json!("user");
    cases.push((user_without_scp, "a user token without scp"));
    // An ID token as the provider issues them at sign-in: aud = client id, nonce, no azp.
    let mut id_token = good.clone();
    id_token["aud"] = json!(CLIENT_ID);
    id_token["nonce"] = json!("n");
    remove(&mut id_token, "azp");
    cases.push((id_token, "an ID token"));
    for (claims, why) in cases {
        let token = s.idp.sign(claims).await;
        let (status, headers, _) = whoami(&s.app, &token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{why}");
        assert!(challenge_of(&headers).contains("invalid_token"), "{why}");
    }
    // Entra's app-only tokens (idtyp app, roles) and delegated ones (scp) still pass.
    let mut app_only = good.clone();
    app_only["idtyp"] = json!("app");
    assert_eq!(
        whoami(&s.app, &s.idp.sign(app_only).await).await.0,
        StatusCode::OK
    );
    let mut delegated = good.clone();
    delegated["idtyp"] = json!("user");
    delegated["scp"] = json!("access_as_user");
    assert_eq!(
        whoami(&s.app, &s.idp.sign(delegated).await).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn with_authentication_on_the_api_documentation_lists_the_oauth_endpoints() {
    let Some(s) = setup().await else { return };
    let doc: Value = s
        .app
        .http
        .get(s.app.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    for (path, method) in [
        ("/.well-known/oauth-protected-resource/mcp", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/register", "post"),
        ("/authorize", "get"),
        ("/auth/callback", "get"),
        ("/token", "post"),
        ("/revoke", "post"),
    ] {
        assert_eq!(
            doc["paths"][path][method]["tags"][0], "OAuth (port 8001)",
            "{path}: {}",
            doc["paths"][path]
        );
        assert_eq!(doc["paths"][path]["servers"][0]["url"], s.mcp.as_str());
        // Each documented endpoint is really there, on the MCP listener.
        let url = format!("{}{path}", s.mcp);
        let response = match method {
            "get" => reqwest::Client::new().get(&url).send().await,
            _ => reqwest::Client::new().post(&url).send().await,
        }
        .expect("answered");
        assert_ne!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
