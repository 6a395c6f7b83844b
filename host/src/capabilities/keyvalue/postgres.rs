//! The shared storage backend: one PostgreSQL database for every host of a cluster, one
//! table, each component's namespace its own `component` column value (so two
//! components never see each other's keys, as with one SQLite file each).
//!
//! Every operation is one statement (or one transaction), so it is atomic across
//! instances on different hosts: `increment` is an upsert that adds in place,
//! compare-and-swap a conditional update (or an insert that does nothing when the key
//! exists), `get-many` one query (one snapshot).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use super::quota::{KvLimits, Namespaces};
use super::{page, KvBackend, KvError, KvStore, LIST_PAGE};

/// Set one key, whether it exists or not.
const UPSERT: &str = "INSERT INTO panal_kv (component, bucket, key, value) VALUES ($1, $2, $3, $4)
     ON CONFLICT (component, bucket, key) DO UPDATE SET value = excluded.value";

/// The schema, created once per database; several hosts starting at once take turns
/// through an advisory lock. `key` compares bytewise (`COLLATE "C"`), as in SQLite, so
/// `list-keys` pages the same on every backend.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS panal_kv (
    component TEXT NOT NULL,
    bucket    TEXT NOT NULL,
    key       TEXT COLLATE \"C\" NOT NULL,
    value     BYTEA NOT NULL,
    PRIMARY KEY (component, bucket, key)
)";

/// An arbitrary constant naming Panal's schema lock.
const SCHEMA_LOCK: i64 = 0x7061_6e61_6c6b_7601;

/// One PostgreSQL database shared by every host.
pub struct PostgresBackend {
    pool: PgPool,
    /// Each component's quota, kept across its versions (as the SQLite backend does).
    open: Namespaces,
}

impl PostgresBackend {
    /// Connect to `url` (`postgres://user@host:port/db`) and make the schema.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .connect(url)
            .await
            .map_err(|e| anyhow::anyhow!("storage: cannot connect to PostgreSQL: {e}"))?;
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SCHEMA_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(SCHEMA).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Self {
            pool,
            open: Namespaces::default(),
        })
    }
}

#[async_trait]
impl KvBackend for PostgresBackend {
    async fn namespace(
        &self,
        component: &str,
        limits: KvLimits,
    ) -> anyhow::Result<Arc<dyn KvStore>> {
        self.open
            .get_or_open(component, limits, || async {
                let store: Arc<dyn KvStore> = Arc::new(PgStore {
                    pool: self.pool.clone(),
                    component: component.to_string(),
                });
                Ok(store)
            })
            .await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

/// One component's namespace in the shared table.
struct PgStore {
    pool: PgPool,
    component: String,
}

/// A counter that is not a number, or one that would overflow, is the guest's error.
fn counter_error(key: &str, delta: i64, err: sqlx::Error) -> KvError {
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    match code.as_deref() {
        Some("22003") => KvError::Overflow {
            key: key.to_string(),
            delta,
        },
        Some(c) if c.starts_with("22") => KvError::NotACounter {
            key: key.to_string(),
        },
        _ => err.into(),
    }
}

#[async_trait]
impl KvStore for PgStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        Ok(sqlx::query_scalar(
            "SELECT value FROM panal_kv WHERE component = $1 AND bucket = $2 AND key = $3",
        )
        .bind(&self.component)
        .bind(bucket)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        sqlx::query(UPSERT)
            .bind(&self.component)
            .bind(bucket)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        sqlx::query("DELETE FROM panal_kv WHERE component = $1 AND bucket = $2 AND key = $3")
            .bind(&self.component)
            .bind(bucket)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        Ok(self.get(bucket, key).await?.is_some())
    }

    async fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        // One row more than a page tells whether another page follows.
        let rows = sqlx::query(
            "SELECT key FROM panal_kv WHERE component = $1 AND bucket = $2
             AND ($3::text IS NULL OR key > $3) ORDER BY key LIMIT $4",
        )
        .bind(&self.component)
        .bind(bucket)
        .bind(cursor)
        .bind(i64::try_from(LIST_PAGE + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        Ok(page(rows.into_iter().map(|r| r.get(0)).collect()))
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        // One upsert: the row lock of the conflicting row serialises concurrent
        // increments on any host; the counter stays decimal ASCII, as on SQLite.
        sqlx::query_scalar(
            "INSERT INTO panal_kv (component, bucket, key, value)
             VALUES ($1, $2, $3, convert_to($4::bigint::text, 'UTF8'))
             ON CONFLICT (component, bucket, key) DO UPDATE SET value = convert_to(
                 (trim(convert_from(panal_kv.value, 'UTF8'))::bigint + $4)::text, 'UTF8')
             RETURNING convert_from(value, 'UTF8')::bigint",
        )
        .bind(&self.component)
        .bind(bucket)
        .bind(key)
        .bind(delta)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| counter_error(key, delta, e))
    }

    async fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let done =
            match expected {
                Some(old) => {
                    sqlx::query(
                        "UPDATE panal_kv SET value = $4
                     WHERE component = $1 AND bucket = $2 AND key = $3 AND value = $5",
                    )
                    .bind(&self.component)
                    .bind(bucket)
                    .bind(key)
                    .bind(new)
                    .bind(old)
                    .execute(&self.pool)
                    .await?
                }
                None => sqlx::query(
                    "INSERT INTO panal_kv (component, bucket, key, value) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (component, bucket, key) DO NOTHING",
                )
                .bind(&self.component)
                .bind(bucket)
                .bind(key)
                .bind(new)
                .execute(&self.pool)
                .await?,
            };
        Ok(done.rows_affected() == 1)
    }

    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        // One query: one snapshot across the keys.
        let rows = sqlx::query(
            "SELECT key, value FROM panal_kv
             WHERE component = $1 AND bucket = $2 AND key = ANY($3)",
        )
        .bind(&self.component)
        .bind(bucket)
        .bind(keys)
        .fetch_all(&self.pool)
        .await?;
        let found: HashMap<String, Vec<u8>> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let mut tx = self.pool.begin().await?;
        for (key, value) in pairs {
            sqlx::query(UPSERT)
                .bind(&self.component)
                .bind(bucket)
                .bind(key)
                .bind(value)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete_many(&self, bucket: &str, keys: &[String]) -> Result<(), KvError> {
        sqlx::query("DELETE FROM panal_kv WHERE component = $1 AND bucket = $2 AND key = ANY($3)")
            .bind(&self.component)
            .bind(bucket)
            .bind(keys)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn usage(&self) -> Result<(u64, u64), KvError> {
        let (keys, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(octet_length(key) + octet_length(value)), 0)::bigint
             FROM panal_kv WHERE component = $1",
        )
        .bind(&self.component)
        .fetch_one(&self.pool)
        .await?;
        Ok((keys.unsigned_abs(), bytes.unsigned_abs()))
    }

    async fn value_len(&self, bucket: &str, key: &str) -> Result<Option<u64>, KvError> {
        let len: Option<i32> = sqlx::query_scalar(
            "SELECT octet_length(value) FROM panal_kv
             WHERE component = $1 AND bucket = $2 AND key = $3",
        )
        .bind(&self.component)
        .bind(bucket)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(len.map(i32::unsigned_abs).map(u64::from))
    }
}
