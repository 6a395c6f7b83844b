//! The embedded storage backend: one SQLite file per component under the data dir, in
//! WAL mode. Each file has one writer connection (writes queue in-process instead of
//! spinning on SQLITE_BUSY) and a few readers that WAL lets run beside it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use tokio::sync::Mutex;

use super::quota::{KvLimits, Quota};
use super::{page, KvBackend, KvError, KvStore, LIST_PAGE};

/// Set one key, whether it exists or not.
const UPSERT: &str = "INSERT INTO kv (bucket, key, value) VALUES (?, ?, ?)
     ON CONFLICT (bucket, key) DO UPDATE SET value = excluded.value";

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS kv (
    bucket TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (bucket, key)
) WITHOUT ROWID";

/// SQLite files under one folder, one per component.
pub struct SqliteBackend {
    dir: PathBuf,
    open: Mutex<HashMap<String, Open>>,
}

/// One component's open file, and the quota components reach it through.
type Open = (Arc<SqliteStore>, Arc<Quota>);

impl SqliteBackend {
    /// A backend keeping its files in `dir` (created if missing).
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create storage folder {}: {e}", dir.display()))?;
        Ok(Self {
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl KvBackend for SqliteBackend {
    async fn namespace(
        &self,
        component: &str,
        limits: KvLimits,
    ) -> anyhow::Result<Arc<dyn KvStore>> {
        let mut open = self.open.lock().await;
        if let Some((_, quota)) = open.get(component) {
            quota.set_limits(limits);
            return Ok(quota.clone());
        }
        let path = self.dir.join(format!("{component}.sqlite"));
        let store = Arc::new(SqliteStore::open(path).await?);
        let quota = Arc::new(Quota::new(store.clone(), limits).await?);
        open.insert(component.to_string(), (store, quota.clone()));
        Ok(quota)
    }

    async fn close(&self) {
        for (name, (store, _)) in self.open.lock().await.drain() {
            // A checkpoint folds the WAL back into the main file, so a copy of the data
            // dir taken after shutdown is complete on its own.
            if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&store.writer)
                .await
            {
                tracing::warn!(component = %name, %err, "WAL checkpoint on shutdown failed");
            }
            store.writer.close().await;
            store.reader.close().await;
        }
    }
}

/// One component's SQLite file.
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Open (creating) the file at `path`.
    pub async fn open(path: PathBuf) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        sqlx::query(SCHEMA).execute(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { writer, reader })
    }
}

#[async_trait]
impl KvStore for SqliteStore {
    async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let row = sqlx::query("SELECT value FROM kv WHERE bucket = ? AND key = ?")
            .bind(bucket)
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|r| r.get::<Vec<u8>, _>(0)))
    }

    async fn set(&self, bucket: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        sqlx::query(UPSERT)
            .bind(bucket)
            .bind(key)
            .bind(value)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), KvError> {
        sqlx::query("DELETE FROM kv WHERE bucket = ? AND key = ?")
            .bind(bucket)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn exists(&self, bucket: &str, key: &str) -> Result<bool, KvError> {
        let row = sqlx::query("SELECT 1 FROM kv WHERE bucket = ? AND key = ?")
            .bind(bucket)
            .bind(key)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.is_some())
    }

    async fn list_keys(
        &self,
        bucket: &str,
        cursor: Option<&str>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        // One row more than a page tells whether another page follows.
        let rows = sqlx::query(
            "SELECT key FROM kv WHERE bucket = ? AND (? IS NULL OR key > ?) ORDER BY key LIMIT ?",
        )
        .bind(bucket)
        .bind(cursor)
        .bind(cursor)
        .bind(i64::try_from(LIST_PAGE + 1).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await?;
        Ok(page(rows.into_iter().map(|r| r.get(0)).collect()))
    }

    async fn increment(&self, bucket: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        // The single writer connection serialises this read-modify-write in-process;
        // BEGIN IMMEDIATE also holds off any other process on the same file.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT value FROM kv WHERE bucket = ? AND key = ?")
            .bind(bucket)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let current = match row {
            None => 0,
            Some(r) => {
                let bytes: Vec<u8> = r.get(0);
                std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|s| s.trim().parse::<i64>().ok())
                    .ok_or_else(|| KvError::NotACounter {
                        key: key.to_string(),
                    })?
            }
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError::Overflow {
                key: key.to_string(),
                delta,
            })?;
        sqlx::query(UPSERT)
            .bind(bucket)
            .bind(key)
            .bind(next.to_string().into_bytes())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(next)
    }

    async fn compare_and_swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let done = match expected {
            Some(old) => {
                sqlx::query("UPDATE kv SET value = ? WHERE bucket = ? AND key = ? AND value = ?")
                    .bind(new)
                    .bind(bucket)
                    .bind(key)
                    .bind(old)
                    .execute(&self.writer)
                    .await?
            }
            None => {
                sqlx::query(
                    "INSERT INTO kv (bucket, key, value) VALUES (?, ?, ?)
                     ON CONFLICT (bucket, key) DO NOTHING",
                )
                .bind(bucket)
                .bind(key)
                .bind(new)
                .execute(&self.writer)
                .await?
            }
        };
        Ok(done.rows_affected() == 1)
    }

    async fn get_many(
        &self,
        bucket: &str,
        keys: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        // One read transaction gives a consistent snapshot across the keys.
        let mut tx = self.reader.begin().await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let row = sqlx::query("SELECT value FROM kv WHERE bucket = ? AND key = ?")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
            out.push(row.map(|r| r.get::<Vec<u8>, _>(0)));
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn set_many(&self, bucket: &str, pairs: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let mut tx = self.writer.begin().await?;
        for (key, value) in pairs {
            sqlx::query(UPSERT)
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
        let mut tx = self.writer.begin().await?;
        for key in keys {
            sqlx::query("DELETE FROM kv WHERE bucket = ? AND key = ?")
                .bind(bucket)
                .bind(key)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn usage(&self) -> Result<(u64, u64), KvError> {
        let (keys, bytes): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(key AS BLOB)) + LENGTH(value)), 0) FROM kv",
        )
        .fetch_one(&self.writer)
        .await?;
        Ok((keys.unsigned_abs(), bytes.unsigned_abs()))
    }

    async fn value_len(&self, bucket: &str, key: &str) -> Result<Option<u64>, KvError> {
        // On the writer: the quota's check must see the writes before it.
        let len: Option<i64> =
            sqlx::query_scalar("SELECT LENGTH(value) FROM kv WHERE bucket = ? AND key = ?")
                .bind(bucket)
                .bind(key)
                .fetch_optional(&self.writer)
                .await?;
        Ok(len.map(i64::unsigned_abs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KvLimits = KvLimits {
        max_bytes: 1 << 30,
        max_keys: 1_000_000,
    };

    async fn store() -> (tempfile::TempDir, Arc<dyn KvStore>, SqliteBackend) {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SqliteBackend::new(dir.path().to_path_buf()).expect("backend");
        let store = backend.namespace("t", LIMITS).await.expect("open");
        (dir, store, backend)
    }

    #[tokio::test]
    async fn crud_list_and_batch_on_a_real_file() {
        let (_dir, s, backend) = store().await;
        s.set("b", "k1", b"v1").await.expect("set");
        assert_eq!(s.get("b", "k1").await.expect("get"), Some(b"v1".to_vec()));
        assert_eq!(s.get("other", "k1").await.expect("get"), None);
        assert!(s.exists("b", "k1").await.expect("exists"));
        s.set_many(
            "b",
            &[("k2".into(), b"2".to_vec()), ("k3".into(), b"3".to_vec())],
        )
        .await
        .expect("set_many");
        let got = s
            .get_many("b", &["k3".into(), "nope".into()])
            .await
            .expect("get_many");
        assert_eq!(got, vec![Some(b"3".to_vec()), None]);
        let (keys, cursor) = s.list_keys("b", None).await.expect("list");
        assert_eq!(keys, ["k1", "k2", "k3"]);
        assert_eq!(cursor, None);
        let (keys, _) = s.list_keys("b", Some("k1")).await.expect("list");
        assert_eq!(keys, ["k2", "k3"]);
        s.delete_many("b", &["k1".into(), "k2".into()])
            .await
            .expect("delete_many");
        s.delete("b", "k3").await.expect("delete");
        assert!(s.list_keys("b", None).await.expect("list").0.is_empty());
        backend.close().await;
    }

    #[tokio::test]
    async fn list_keys_pages_with_a_cursor() {
        let (_dir, s, _b) = store().await;
        let pairs: Vec<(String, Vec<u8>)> = (0..LIST_PAGE + 5)
            .map(|i| (format!("k{i:05}"), vec![1]))
            .collect();
        for chunk in pairs.chunks(500) {
            s.set_many("b", chunk).await.expect("set_many");
        }
        let (first, cursor) = s.list_keys("b", None).await.expect("page 1");
        assert_eq!(first.len(), LIST_PAGE);
        let (second, end) = s.list_keys("b", cursor.as_deref()).await.expect("page 2");
        assert_eq!(second.len(), 5);
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn increment_and_cas_are_atomic_under_concurrency() {
        let (_dir, s, _b) = store().await;
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let s = s.clone();
                tokio::spawn(async move { s.increment("b", "n", 2).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("increment");
        }
        assert_eq!(s.get("b", "n").await.expect("get"), Some(b"200".to_vec()));
        s.set("b", "text", b"abc").await.expect("set");
        assert!(s.increment("b", "text", 1).await.is_err());

        assert!(s.compare_and_swap("b", "c", None, b"1").await.expect("cas"));
        assert!(!s.compare_and_swap("b", "c", None, b"2").await.expect("cas"));
        assert!(!s
            .compare_and_swap("b", "c", Some(b"0"), b"2")
            .await
            .expect("cas"));
        assert!(s
            .compare_and_swap("b", "c", Some(b"1"), b"2")
            .await
            .expect("cas"));
        assert_eq!(s.get("b", "c").await.expect("get"), Some(b"2".to_vec()));
    }

    #[tokio::test]
    async fn namespaces_are_separate_files() {
        let (dir, a, backend) = store().await;
        let b = backend.namespace("u", LIMITS).await.expect("open");
        a.set("x", "k", b"a").await.expect("set");
        assert_eq!(b.get("x", "k").await.expect("get"), None);
        assert!(dir.path().join("t.sqlite").exists());
        assert!(dir.path().join("u.sqlite").exists());
    }
}
