//! Who is asking. Every handler and tool receives a [`Principal`]; until authentication is
//! configured it is the anonymous local operator.

use serde::{Deserialize, Serialize};

/// The authenticated caller, as every later step (authorization, audit, ownership) sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Principal {
    /// Stable subject identifier (Entra `oid` or the token's `sub`).
    pub subject: String,
    /// E-mail or UPN, when known.
    pub email: Option<String>,
    /// Display name, when known.
    pub name: Option<String>,
    /// Tenant (Entra `tid`), when known.
    pub tenant: Option<String>,
    /// App roles granted to the caller.
    pub roles: Vec<String>,
    /// OAuth scopes granted to the token.
    pub scopes: Vec<String>,
    /// The OAuth client the caller came through.
    pub client_id: Option<String>,
}

impl Principal {
    /// The caller when authentication is disabled: a local operator with every role.
    pub fn anonymous() -> Self {
        Self {
            subject: "anonymous".to_owned(),
            email: None,
            name: None,
            tenant: None,
            roles: vec!["admin".to_owned(), "user".to_owned()],
            scopes: Vec::new(),
            client_id: None,
        }
    }
}
