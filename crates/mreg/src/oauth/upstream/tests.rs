use super::*;

fn entra(api_scopes: &[&str]) -> Upstream {
    Upstream {
        kind: Kind::Azure {
            tenant: "t".to_owned(),
            allowed_tenants: Vec::new(),
            api_scopes: api_scopes.iter().map(|s| (*s).to_owned()).collect(),
            graph: None,
        },
        client_id: "cid".to_owned(),
        client_secret: SecretString::from("s".to_owned()),
        discovery: Url::parse("https://login.example/t/v2.0/.well-known/openid-configuration")
            .expect("url"),
        sign_in_scopes: vec!["User.Read".to_owned(), "openid".to_owned()],
        skew: Duration::from_secs(0),
        http: reqwest::Client::new(),
        metadata: RwLock::new(None),
        keys: RwLock::new(KeyCache::default()),
        fetching: Mutex::new(()),
    }
}

fn owned(scopes: &[&str]) -> Vec<String> {
    scopes.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn entra_gets_prefixed_custom_scopes_and_always_offline_access() {
    let upstream = entra(&["access_as_user"]);
    assert_eq!(
        upstream.upstream_scopes(&owned(&["User.Read", "access_as_user"])),
        owned(&[
            "User.Read",
            "api://cid/access_as_user",
            "openid",
            "offline_access"
        ])
    );
    assert!(
        upstream
            .supported_scopes()
            .contains(&"access_as_user".to_owned())
    );
    assert!(
        upstream
            .supported_scopes()
            .contains(&"offline_access".to_owned())
    );
}

#[test]
fn graph_confirmation_always_asks_for_a_graph_token() {
    let mut upstream = entra(&["access_as_user"]);
    if let Kind::Azure { graph, .. } = &mut upstream.kind {
        *graph = Some(Url::parse("https://graph.example").expect("url"));
    }
    assert_eq!(
        upstream.exchange_scopes(&owned(&["access_as_user"])),
        "openid offline_access User.Read",
        "the code is redeemed for Graph so that /me can be called"
    );
}

#[test]
fn code_exchanges_ask_for_one_resource_at_a_time() {
    let upstream = entra(&["access_as_user"]);
    assert_eq!(
        upstream.exchange_scopes(&owned(&["User.Read", "access_as_user"])),
        "User.Read openid offline_access",
        "Graph wins when both are asked for (AADSTS28000)"
    );
    assert_eq!(
        upstream.exchange_scopes(&owned(&["openid", "access_as_user"])),
        "openid api://cid/access_as_user offline_access"
    );
}
