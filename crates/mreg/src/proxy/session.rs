//! Session ids handed to clients of `/servers/{name}/mcp`. The upstream's own session id is
//! never shown: the client gets it sealed together with the server it belongs to and the caller
//! it was created for. A token opens only for that caller on that server, on any replica that
//! shares the key, so one user can never reach another user's upstream session.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::{Principal, Sealer};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Purpose under which session tokens are sealed.
const PURPOSE: &str = "mcp-session/v1";

#[derive(Serialize, Deserialize)]
struct Claims {
    /// The server's id (not its name: a re-registered name is another server).
    server: Uuid,
    /// The caller's subject.
    sub: String,
    /// The caller's tenant.
    tid: Option<String>,
    /// The upstream's session id.
    upstream: String,
}

/// Seals `upstream_session` for `caller` on `server`.
pub fn seal(
    sealer: &dyn Sealer,
    server: Uuid,
    caller: &Principal,
    upstream_session: &str,
) -> String {
    let claims = Claims {
        server,
        sub: caller.subject.clone(),
        tid: caller.tenant.clone(),
        upstream: upstream_session.to_owned(),
    };
    let plain = serde_json::to_vec(&claims).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(sealer.seal(PURPOSE, &plain))
}

/// The upstream session id inside `token`, if the token was made for `caller` on `server`.
pub fn open(sealer: &dyn Sealer, token: &str, server: Uuid, caller: &Principal) -> Option<String> {
    let sealed = URL_SAFE_NO_PAD.decode(token).ok()?;
    let plain = sealer.open(PURPOSE, &sealed).ok()?;
    let claims: Claims = serde_json::from_slice(&plain).ok()?;
    (claims.server == server && claims.sub == caller.subject && claims.tid == caller.tenant)
        .then_some(claims.upstream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Cipher;

    fn user(subject: &str, tenant: Option<&str>) -> Principal {
        Principal {
            subject: subject.to_owned(),
            tenant: tenant.map(str::to_owned),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn a_session_token_opens_only_for_its_caller_on_its_server() {
        let cipher = Cipher::new(&[1; 32]);
        let (server, other_server) = (Uuid::now_v7(), Uuid::now_v7());
        let alice = user("alice", Some("t1"));
        let token = seal(&cipher, server, &alice, "upstream-42");
        assert!(!token.contains("upstream-42"));
        assert_eq!(
            open(&cipher, &token, server, &alice).as_deref(),
            Some("upstream-42")
        );
        assert_eq!(
            open(&cipher, &token, other_server, &alice),
            None,
            "another server"
        );
        assert_eq!(
            open(&cipher, &token, server, &user("bob", Some("t1"))),
            None,
            "another user"
        );
        assert_eq!(
            open(&cipher, &token, server, &user("alice", Some("t2"))),
            None,
            "another tenant"
        );
        assert_eq!(
            open(&Cipher::new(&[2; 32]), &token, server, &alice),
            None,
            "another key"
        );
        assert_eq!(
            open(&cipher, "upstream-42", server, &alice),
            None,
            "a raw upstream id"
        );
        let mut forged = token.clone().into_bytes();
        forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            open(
                &cipher,
                &String::from_utf8(forged).unwrap_or_default(),
                server,
                &alice
            ),
            None
        );
    }
}
