//! Reading the identity settings: the upstream provider (Entra ID, `AZURE_*`, or a generic
//! OpenID Connect provider, `MREG_OIDC_*`) and mreg's own authorization server (`MREG_AUTH`,
//! token lifetimes, registration limits).

use super::parse::Parser;
use super::*;

impl Parser<'_> {
    pub(super) fn azure(&self) -> Result<AzureConfig, ConfigError> {
        let tenant_id = self.parse("AZURE_TENANT_ID", |v| {
            let named = matches!(v, "common" | "organizations" | "consumers");
            let domain = v.contains('.')
                && v.split('.').all(|p| {
                    !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if named || domain || uuid::Uuid::try_parse(v).is_ok() {
                Ok(v.to_owned())
            } else {
                Err(format!(
                    "'{v}' is not a tenant; use the tenant's GUID, a verified domain, organizations or common"
                ))
            }
        })?;
        let client_id = self.parse("AZURE_CLIENT_ID", |v| {
            uuid::Uuid::try_parse(v)
                .map(|_| v.to_owned())
                .map_err(|_| format!("'{v}' is not an application (client) ID; it is a GUID"))
        })?;
        let client_secret = self.parse("AZURE_CLIENT_SECRET", |v| {
            Ok(SecretString::from(v.to_owned()))
        })?;
        let missing: Vec<&str> = [
            ("AZURE_TENANT_ID", tenant_id.is_some()),
            ("AZURE_CLIENT_ID", client_id.is_some()),
            ("AZURE_CLIENT_SECRET", client_secret.is_some()),
        ]
        .into_iter()
        .filter_map(|(env, set)| (!set).then_some(env))
        .collect();
        if !missing.is_empty() && missing.len() < 3 {
            return Err(missing_together(
                &missing,
                "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET",
            ));
        }
        Ok(AzureConfig {
            tenant_id: tenant_id.clone(),
            client_id,
            client_secret,
            callback_url: self.parse("OAUTH_CALLBACK_URL", parse_callback_url)?,
            scopes: self.required("OAUTH_SCOPES", |v| {
                let scopes: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                match scopes.iter().find(|s| !is_scope_token(s)) {
                    Some(bad) => Err(format!("'{bad}' is not a valid scope")),
                    None => Ok(scopes),
                }
            })?,
            validate_with_graph: self.required("AZURE_VALIDATE_WITH_GRAPH", parse_bool)?,
            token_cache_ttl: self.seconds("AZURE_TOKEN_CACHE_TTL", 86_400)?,
            clock_skew: self.seconds("AZURE_CLOCK_SKEW", 900)?,
            authority_host: self.required("AZURE_AUTHORITY_HOST", parse_secure_base_url)?,
            allowed_tenants: {
                let tenants = self
                    .parse("AZURE_ALLOWED_TENANTS", |v| {
                        v.split([' ', ','])
                            .filter(|t| !t.is_empty())
                            .map(|t| {
                                uuid::Uuid::try_parse(t)
                                    .map(|_| t.to_ascii_lowercase())
                                    .map_err(|_| format!("'{t}' is not a tenant GUID"))
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })?
                    .unwrap_or_default();
                // Every personal Microsoft account shares one tid, so `consumers` without a list
                // would admit anyone with an outlook.com address.
                if tenants.is_empty()
                    && matches!(
                        tenant_id.as_deref(),
                        Some("organizations" | "common" | "consumers")
                    )
                {
                    return Err(self.error(
                        "AZURE_ALLOWED_TENANTS",
                        "must list the tenant GUIDs whose users may sign in when AZURE_TENANT_ID is organizations, common or consumers (for consumers: 9188040d-6c67-4c5b-b112-36a304b66dad, the tenant of every personal account, and know that this admits every personal Microsoft account)",
                    ));
                }
                tenants
            },
            api_scopes: self
                .parse("AZURE_API_SCOPES", |v| {
                    let scopes: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                    match scopes
                        .iter()
                        .find(|s| !is_scope_token(s) || s.contains('/'))
                    {
                        Some(bad) => Err(format!(
                            "'{bad}' is not a short scope name (write access_as_user, not api://…/access_as_user)"
                        )),
                        None => Ok(scopes),
                    }
                })?
                .unwrap_or_default(),
            graph_url: self.required("AZURE_GRAPH_URL", parse_secure_base_url)?,
        })
    }

    pub(super) fn auth(&self) -> Result<AuthConfig, ConfigError> {
        let issuer = self.parse("MREG_OIDC_ISSUER", parse_secure_base_url)?;
        let client_id = self.parse("MREG_OIDC_CLIENT_ID", |v| Ok(v.to_owned()))?;
        let client_secret = self.parse("MREG_OIDC_CLIENT_SECRET", |v| {
            Ok(SecretString::from(v.to_owned()))
        })?;
        let oidc = match (issuer, client_id, client_secret) {
            (None, None, None) => None,
            (Some(issuer), Some(client_id), Some(client_secret)) => Some(OidcConfig {
                issuer,
                client_id,
                client_secret,
            }),
            (issuer, client_id, client_secret) => {
                let missing: Vec<&str> = [
                    ("MREG_OIDC_ISSUER", issuer.is_some()),
                    ("MREG_OIDC_CLIENT_ID", client_id.is_some()),
                    ("MREG_OIDC_CLIENT_SECRET", client_secret.is_some()),
                ]
                .into_iter()
                .filter_map(|(env, set)| (!set).then_some(env))
                .collect();
                return Err(missing_together(
                    &missing,
                    "MREG_OIDC_ISSUER, MREG_OIDC_CLIENT_ID and MREG_OIDC_CLIENT_SECRET",
                ));
            }
        };
        let azure = self.text("AZURE_TENANT_ID").is_some();
        if azure && oidc.is_some() {
            return Err(self.error(
                "MREG_OIDC_ISSUER",
                "configure either the Entra preset (AZURE_*) or a generic OpenID Connect upstream (MREG_OIDC_*), not both",
            ));
        }
        let upstream = azure || oidc.is_some();
        let mode = self.required("MREG_AUTH", |v| match v {
            "auto" if upstream => Ok(AuthMode::OAuth),
            "auto" | "none" => Ok(AuthMode::None),
            "oauth" if upstream => Ok(AuthMode::OAuth),
            "oauth" => Err("oauth needs an identity provider: set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (or MREG_OIDC_*)".to_owned()),
            _ => Err(format!("'{v}' is not an authentication mode; use auto, oauth or none")),
        })?;
        Ok(AuthConfig {
            mode,
            required_scopes: self
                .parse("MREG_REQUIRED_SCOPES", |v| {
                    let scopes: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
                    match scopes.iter().find(|s| !is_scope_token(s)) {
                        Some(bad) => Err(format!("'{bad}' is not a valid scope")),
                        None => Ok(scopes),
                    }
                })?
                .unwrap_or_default(),
            access_token_ttl: self.bounded_seconds("MREG_ACCESS_TOKEN_TTL", 60, 86_400)?,
            code_ttl: self.bounded_seconds("MREG_AUTHORIZATION_CODE_TTL", 1, 600)?,
            refresh_token_ttl: self.bounded_seconds("MREG_REFRESH_TOKEN_TTL", 300, 366 * 86_400)?,
            signing_key_rotation: self.bounded_seconds(
                "MREG_SIGNING_KEY_ROTATION",
                2 * 86_400,
                366 * 86_400,
            )?,
            oidc,
            cimd_allow_private: self.required("MREG_CIMD_ALLOW_PRIVATE", parse_bool)?,
            oauth_rate_limit_per_minute: self.required(
                "MREG_OAUTH_RATE_LIMIT_PER_MINUTE",
                |v| match v.parse::<u32>() {
                    Ok(n) if n <= 1_000_000 => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 0 to 1000000")),
                },
            )?,
            max_idle_clients: self.required("MREG_OAUTH_MAX_IDLE_CLIENTS", |v| {
                match v.parse::<u64>() {
                    Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 1 to 10000000")),
                }
            })?,
            trusted_proxy_hops: self.required("MREG_TRUSTED_PROXY_HOPS", |v| {
                match v.parse::<usize>() {
                    Ok(n) if n <= 10 => Ok(n),
                    _ => Err(format!("'{v}' is not a number from 0 to 10")),
                }
            })?,
        })
    }
}
