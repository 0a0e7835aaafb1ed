//! The audit log's rows: what one audited event holds ([`AuditEvent`]), and the hash chain that
//! links each stored row ([`AuditRecord`]) to the one before, so that an altered, removed or
//! reordered row is detected. The gateway opens, fills and writes events (`mreg::audit`); the
//! stores keep and verify the chain.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first row ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the policy chain decided.
pub mod decision {
    /// Admitted.
    pub const ALLOW: &str = "allow";
    /// Refused: a role is missing.
    pub const DENY: &str = "deny";
    /// Refused: over the rate limit.
    pub const RATE_LIMITED: &str = "rate_limited";
}

/// How an admitted operation ended.
pub mod outcome {
    /// It succeeded.
    pub const OK: &str = "ok";
    /// It failed (the row's `error` says why), or it was refused.
    pub const ERROR: &str = "error";
    /// The caller went away before it ended.
    pub const CANCELLED: &str = "cancelled";
}

/// One audited operation, as queued, spooled and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id (UUID v7); the database keeps one row per id.
    pub id: String,
    /// When the operation started, in microseconds since the Unix epoch.
    pub at_us: i64,
    /// The request id (`x-request-id`), `-` when there is none.
    pub request_id: String,
    /// Subject (Entra object id) of the caller.
    pub actor_subject: String,
    /// The caller's email, when known.
    pub actor_email: Option<String>,
    /// The caller's tenant, when known.
    pub actor_tenant: Option<String>,
    /// The OAuth client the caller used, when known.
    pub actor_client_id: Option<String>,
    /// What was done: a gateway tool's name, an MCP method, `METHOD /route`, `oauth.token`, …
    pub operation: String,
    /// The tool called, when one was.
    pub tool: Option<String>,
    /// The registered server addressed, when one was.
    pub server: Option<String>,
    /// The arguments, as redacted JSON.
    pub arguments: Option<String>,
    /// [`decision`]: allow, deny or `rate_limited`.
    pub decision: String,
    /// [`outcome`]: ok, error or cancelled.
    pub outcome: String,
    /// Why it failed or was refused.
    pub error: Option<String>,
    /// How long it took, in microseconds.
    pub duration_us: i64,
    /// The tenant of the server addressed, when it has one (names are per tenant: this says
    /// which `payroll` the row means). Left out of the hashed form when absent, so rows written
    /// before it existed still verify.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_tenant: Option<String>,
}

/// What a NUL character (U+0000) in an audited text becomes: U+FFFD, the replacement character.
///
/// PostgreSQL cannot store U+0000 in `text` (nor `\u0000` in `jsonb`): one such row would make
/// every batch holding it fail. So every text of an event, and every string (and key) inside its
/// JSON arguments, has its NULs replaced by this character before the event is queued, i.e.
/// before it is hashed, spooled or stored: the chain covers exactly what is stored. U+FFFD (rather
/// than an escape such as `\u0000`) keeps the replacement visibly not part of the original and
/// cannot be confused with text the caller sent.
pub const NUL_REPLACEMENT: char = '\u{FFFD}';

/// `text` with every NUL replaced by [`NUL_REPLACEMENT`]; borrowed when it has none.
pub fn sanitise(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', NUL_REPLACEMENT.encode_utf8(&mut [0; 4])))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Replaces the NULs of `text` in place (no allocation when it has none).
fn sanitise_in_place(text: &mut String) {
    if let std::borrow::Cow::Owned(clean) = sanitise(text) {
        *text = clean;
    }
}

/// Replaces the NULs of every string and key inside `value`.
pub fn sanitise_json(value: &mut Value) {
    match value {
        Value::String(text) => sanitise_in_place(text),
        Value::Array(items) => items.iter_mut().for_each(sanitise_json),
        Value::Object(map) => {
            if map.keys().any(|k| k.contains('\0')) {
                *map = std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (sanitise(&k).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(sanitise_json);
        }
        _ => {}
    }
}

impl AuditEvent {
    /// Replaces every NUL in the event's texts by [`NUL_REPLACEMENT`] (see there why), including
    /// the strings inside its JSON arguments. Idempotent.
    pub fn sanitise(&mut self) {
        for text in [
            &mut self.id,
            &mut self.request_id,
            &mut self.actor_subject,
            &mut self.operation,
            &mut self.decision,
            &mut self.outcome,
        ] {
            sanitise_in_place(text);
        }
        for text in [
            &mut self.actor_email,
            &mut self.actor_tenant,
            &mut self.actor_client_id,
            &mut self.tool,
            &mut self.server,
            &mut self.error,
            &mut self.server_tenant,
        ]
        .into_iter()
        .flatten()
        {
            sanitise_in_place(text);
        }
        // serde_json writes a NUL inside a string as the escape `\u0000`, so the text itself
        // rarely holds one; the strings it encodes are cleaned by re-encoding (only when needed).
        if let Some(arguments) = &mut self.arguments {
            sanitise_in_place(arguments);
            if arguments.contains("\\u0000")
                && let Ok(mut value) = serde_json::from_str::<Value>(arguments)
            {
                sanitise_json(&mut value);
                *arguments = value.to_string();
            }
        }
    }

    /// The hash of this event as row `seq` following a row whose hash is `prev_hash`.
    pub fn chain_hash(&self, seq: i64, prev_hash: &str) -> String {
        #[derive(Serialize)]
        struct Canonical<'a> {
            seq: i64,
            prev_hash: &'a str,
            event: &'a AuditEvent,
        }
        let bytes = serde_json::to_vec(&Canonical {
            seq,
            prev_hash,
            event: self,
        })
        .unwrap_or_default();
        hex::encode(Sha256::digest(&bytes))
    }
}

/// Chains `events` after the row `(seq, hash)`, in order.
pub fn chain<'a>(
    events: impl IntoIterator<Item = &'a AuditEvent>,
    mut seq: i64,
    mut hash: String,
) -> Vec<AuditRecord> {
    events
        .into_iter()
        .map(|event| {
            seq += 1;
            let next = event.chain_hash(seq, &hash);
            AuditRecord {
                seq,
                prev_hash: std::mem::replace(&mut hash, next.clone()),
                hash: next,
                event: event.clone(),
            }
        })
        .collect()
}

/// One stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// Hash of the row before (or of the checkpoint, or [`GENESIS`]).
    pub prev_hash: String,
    /// Hash of this row (see [`AuditEvent::chain_hash`]).
    pub hash: String,
    /// The event.
    pub event: AuditEvent,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The chain's canonical form is fixed: rows written by any earlier mreg must still verify.
    /// The expected hash is SHA-256 of the compact JSON `{"seq":…,"prev_hash":…,"event":{…}}`
    /// with the event's fields in declaration order, computed outside Rust.
    #[test]
    fn the_chain_hash_of_an_event_is_stable() {
        let event = AuditEvent {
            id: "0190b1c2-0000-7000-8000-000000000001".into(),
            at_us: 1_764_931_200_000_000,
            request_id: "req-1".into(),
            actor_subject: "alice".into(),
            actor_email: Some("alice@example.com".into()),
            actor_tenant: None,
            actor_client_id: None,
            operation: "tools/call".into(),
            tool: Some("list_servers".into()),
            server: None,
            arguments: Some("{}".into()),
            decision: decision::ALLOW.into(),
            outcome: outcome::OK.into(),
            error: None,
            duration_us: 1500,
            server_tenant: None,
        };
        assert_eq!(
            event.chain_hash(7, GENESIS),
            "1c995a254293d212ceb408f21c01986d67578574dbb82af2e154533b4a5a5a3e"
        );
        // The server's tenant, when there is one, is hashed after every earlier field.
        let tenants = AuditEvent {
            server: Some("payroll".into()),
            server_tenant: Some("t1".into()),
            ..event.clone()
        };
        assert_eq!(
            tenants.chain_hash(7, GENESIS),
            "f2af10fbae0771b385d5b3654d814c191654084310c6e5e7f22d89d9d779be63"
        );
        let rows = chain([&event, &event], 7, GENESIS.to_owned());
        assert_eq!(rows[0].seq, 8);
        assert_eq!(rows[0].prev_hash, GENESIS);
        assert_eq!(rows[1].prev_hash, rows[0].hash);
        assert_eq!(rows[1].hash, event.chain_hash(9, &rows[0].hash));
    }
}
