//! The OAuth authorization server's store: registered clients and grants. A grant is one
//! refresh-token family: the current token's hash, the sealed data it stands for, and every hash
//! it has already exchanged, so that a replayed token can be recognised and its family revoked.

use async_trait::async_trait;

use crate::error::Result;

/// One refresh-token family as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRow {
    /// Family id.
    pub id: String,
    /// The OAuth client it was issued to.
    pub client_id: String,
    /// The user it stands for.
    pub subject: String,
    /// SHA-256 (hex) of the current refresh token.
    pub refresh_hash: String,
    /// Sealed grant data (claims, scopes, resource, upstream tokens).
    pub data: Vec<u8>,
    /// When the family ends (Unix seconds).
    pub expires_at: i64,
    /// When it was revoked, if it was.
    pub revoked_at: Option<i64>,
}

/// What refreshing a family did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented hash was current; it is now spent and the new one current.
    Rotated,
    /// The presented hash was no longer current (someone else rotated first).
    Lost,
}

/// Clients and grants of the authorization server.
#[async_trait]
pub trait AuthStore: Send + Sync + 'static {
    /// Stores a registered client's metadata (JSON).
    async fn insert_client(&self, client_id: &str, metadata: &str, now: i64) -> Result<()>;
    /// A registered client's metadata.
    async fn client(&self, client_id: &str) -> Result<Option<String>>;
    /// Stores a new grant.
    async fn insert_grant(&self, grant: &GrantRow, now: i64) -> Result<()>;
    /// The grant whose current refresh token has this hash.
    async fn grant_by_refresh(&self, hash: &str) -> Result<Option<GrantRow>>;
    /// The grant that once had this refresh-token hash and has exchanged it.
    async fn spent_refresh(&self, hash: &str) -> Result<Option<String>>;
    /// Replaces the current hash `old` by `new` (and the data), recording `old` as spent,
    /// atomically: of two concurrent rotations of one token only one succeeds.
    async fn rotate_refresh(
        &self,
        id: &str,
        old: &str,
        new: &str,
        data: &[u8],
        now: i64,
    ) -> Result<Rotation>;
    /// Revokes a family. Returns whether it was live.
    async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool>;
    /// Whether the family `id` is live at `now`: stored, not revoked, not ended. The
    /// authoritative answer behind the cache's revocation markers, asked while the cache is down.
    async fn grant_live(&self, id: &str, now: i64) -> Result<bool>;
    /// Deletes families that ended before `now`, and their spent hashes.
    async fn prune_grants(&self, now: i64) -> Result<u64>;
    /// Deletes clients registered before `before` that hold no grant (registered, never signed
    /// in, or every grant ended): open registration cannot fill the table forever, and a client
    /// that comes back gets `invalid_client` and registers again.
    async fn prune_clients(&self, before: i64) -> Result<u64>;
    /// How many registered clients hold no grant (registered, never signed in, or every grant
    /// ended and pruned): what open registration can grow, so `/register` is capped on it.
    async fn idle_clients(&self) -> Result<u64>;
}
