//! The OAuth authorization server's clients and grants: the same SQL on both backends
//! (Unix-second integers, `$n` placeholders).

use async_trait::async_trait;
use domain::{AuthStore, GrantRow, Result, Rotation};
use sqlx::Row;

use super::db_error;

macro_rules! auth_store {
    ($store:ty) => {
        #[async_trait]
        impl AuthStore for $store {
            async fn insert_client(&self, client_id: &str, metadata: &str, now: i64) -> Result<()> {
                sqlx::query(
                    "INSERT INTO oauth_clients (client_id, metadata, created_at) VALUES ($1, $2, $3)",
                )
                .bind(client_id)
                .bind(metadata)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_error("client"))?;
                Ok(())
            }

            async fn client(&self, client_id: &str) -> Result<Option<String>> {
                let row = sqlx::query("SELECT metadata FROM oauth_clients WHERE client_id = $1")
                    .bind(client_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error("client"))?;
                row.map(|r| r.try_get::<String, _>(0))
                    .transpose()
                    .map_err(db_error("client"))
            }

            async fn insert_grant(&self, grant: &GrantRow, now: i64) -> Result<()> {
                sqlx::query(
                    "INSERT INTO oauth_grants (id, client_id, subject, refresh_hash, data, expires_at, \
                     revoked_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, NULL, $7, $7)",
                )
                .bind(&grant.id)
                .bind(&grant.client_id)
                .bind(&grant.subject)
                .bind(&grant.refresh_hash)
                .bind(&grant.data)
                .bind(grant.expires_at)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db_error("grant"))?;
                Ok(())
            }

            async fn grant_by_refresh(&self, hash: &str) -> Result<Option<GrantRow>> {
                let row = sqlx::query(
                    "SELECT id, client_id, subject, refresh_hash, data, expires_at, revoked_at \
                     FROM oauth_grants WHERE refresh_hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("grant"))?;
                row.map(|r| {
                    Ok::<_, sqlx::Error>(GrantRow {
                        id: r.try_get(0)?,
                        client_id: r.try_get(1)?,
                        subject: r.try_get(2)?,
                        refresh_hash: r.try_get(3)?,
                        data: r.try_get(4)?,
                        expires_at: r.try_get(5)?,
                        revoked_at: r.try_get(6)?,
                    })
                })
                .transpose()
                .map_err(db_error("grant"))
            }

            async fn spent_refresh(&self, hash: &str) -> Result<Option<String>> {
                let row = sqlx::query("SELECT grant_id FROM oauth_spent_refresh WHERE hash = $1")
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db_error("grant"))?;
                row.map(|r| r.try_get::<String, _>(0))
                    .transpose()
                    .map_err(db_error("grant"))
            }

            async fn rotate_refresh(
                &self,
                id: &str,
                old: &str,
                new: &str,
                data: &[u8],
                now: i64,
            ) -> Result<Rotation> {
                let mut tx = self.pool.begin().await.map_err(db_error("grant"))?;
                let updated = sqlx::query(
                    "UPDATE oauth_grants SET refresh_hash = $1, data = $2, updated_at = $3 \
                     WHERE id = $4 AND refresh_hash = $5 AND revoked_at IS NULL",
                )
                .bind(new)
                .bind(data)
                .bind(now)
                .bind(id)
                .bind(old)
                .execute(&mut *tx)
                .await
                .map_err(db_error("grant"))?;
                if updated.rows_affected() == 0 {
                    return Ok(Rotation::Lost);
                }
                sqlx::query(
                    "INSERT INTO oauth_spent_refresh (hash, grant_id, spent_at) VALUES ($1, $2, $3)",
                )
                .bind(old)
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error("grant"))?;
                tx.commit().await.map_err(db_error("grant"))?;
                Ok(Rotation::Rotated)
            }

            async fn revoke_grant(&self, id: &str, now: i64) -> Result<bool> {
                let done = sqlx::query(
                    "UPDATE oauth_grants SET revoked_at = $1, updated_at = $1 \
                     WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(db_error("grant"))?;
                Ok(done.rows_affected() > 0)
            }

            async fn grant_live(&self, id: &str, now: i64) -> Result<bool> {
                let row = sqlx::query(
                    "SELECT 1 FROM oauth_grants \
                     WHERE id = $1 AND revoked_at IS NULL AND expires_at >= $2",
                )
                .bind(id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await
                .map_err(db_error("grant"))?;
                Ok(row.is_some())
            }

            async fn prune_grants(&self, now: i64) -> Result<u64> {
                let mut tx = self.pool.begin().await.map_err(db_error("grant"))?;
                sqlx::query(
                    "DELETE FROM oauth_spent_refresh WHERE grant_id IN \
                     (SELECT id FROM oauth_grants WHERE expires_at < $1)",
                )
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error("grant"))?;
                let done = sqlx::query("DELETE FROM oauth_grants WHERE expires_at < $1")
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error("grant"))?;
                tx.commit().await.map_err(db_error("grant"))?;
                Ok(done.rows_affected())
            }

            async fn prune_clients(&self, before: i64) -> Result<u64> {
                let done = sqlx::query(
                    "DELETE FROM oauth_clients WHERE created_at < $1 AND NOT EXISTS \
                     (SELECT 1 FROM oauth_grants g WHERE g.client_id = oauth_clients.client_id)",
                )
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(db_error("client"))?;
                Ok(done.rows_affected())
            }

            async fn idle_clients(&self) -> Result<u64> {
                // NOT IN over the (hashed) grant client ids: one pass over each table.
                let row = sqlx::query(
                    "SELECT COUNT(*) FROM oauth_clients WHERE client_id NOT IN \
                     (SELECT client_id FROM oauth_grants)",
                )
                .fetch_one(&self.pool)
                .await
                .map_err(db_error("client"))?;
                let count: i64 = row.try_get(0).map_err(db_error("client"))?;
                Ok(count.max(0) as u64)
            }
        }
    };
}

auth_store!(super::SqliteStore);
auth_store!(super::PgStore);
