//! The outbox: durable publishes NATS could not store yet, kept in
//! `DATA_DIR/outbox.db` (SQLite, synchronous commits) in publish order until the relay
//! hands them to JetStream. A message accepted here survives a host restart.
//!
//! Each row carries the message id the first attempt used, so JetStream drops a second
//! copy when a publish succeeded but its row was not yet removed.
//!
//! A row that can never be published (NATS refuses the message itself) is moved to the
//! table `outbox_dead` with the reason, so it neither blocks the queue nor is lost.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::Msg;

/// One waiting message.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Row id: the publish order.
    pub id: i64,
    /// JetStream message id (de-duplication).
    pub msg_id: String,
    /// The message.
    pub msg: Msg,
}

/// The on-disk queue.
pub struct Outbox {
    pool: SqlitePool,
}

impl Outbox {
    /// Open (or create) the outbox file.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // Accepting a message is a promise: it is on disk before the guest hears Ok.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("outbox {}: {e}", path.display()))?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS outbox (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                msg_id TEXT NOT NULL,
                subject TEXT NOT NULL,
                headers TEXT NOT NULL,
                payload BLOB NOT NULL
            )",
        )
        .execute(&pool)
        .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS outbox_dead (
                id INTEGER PRIMARY KEY,
                msg_id TEXT NOT NULL,
                subject TEXT NOT NULL,
                headers TEXT NOT NULL,
                payload BLOB NOT NULL,
                reason TEXT NOT NULL,
                at INTEGER NOT NULL
            )",
        )
        .execute(&pool)
        .await?;
        Ok(Self { pool })
    }

    /// Move the message `id` out of the queue into `outbox_dead`, with `reason`.
    pub async fn dead_letter(&self, id: i64, reason: &str) -> anyhow::Result<()> {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO outbox_dead (id, msg_id, subject, headers, payload, reason, at)
             SELECT id, msg_id, subject, headers, payload, ?, ? FROM outbox WHERE id = ?",
        )
        .bind(reason)
        .bind(at)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keep `msg` until it is published.
    pub async fn push(&self, msg_id: &str, msg: &Msg) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO outbox (msg_id, subject, headers, payload) VALUES (?, ?, ?, ?)")
            .bind(msg_id)
            .bind(&msg.subject)
            .bind(serde_json::to_string(&msg.headers)?)
            .bind(msg.payload.as_ref())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The oldest `limit` messages.
    pub async fn peek(&self, limit: i64) -> anyhow::Result<Vec<Pending>> {
        let rows = sqlx::query(
            "SELECT id, msg_id, subject, headers, payload FROM outbox ORDER BY id LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let headers: String = row.try_get("headers")?;
                let payload: Vec<u8> = row.try_get("payload")?;
                Ok(Pending {
                    id: row.try_get("id")?,
                    msg_id: row.try_get("msg_id")?,
                    msg: Msg {
                        subject: row.try_get("subject")?,
                        reply: None,
                        headers: serde_json::from_str(&headers)?,
                        payload: Bytes::from(payload),
                    },
                })
            })
            .collect()
    }

    /// Forget a published message.
    pub async fn remove(&self, id: i64) -> anyhow::Result<()> {
        sqlx::query("DELETE FROM outbox WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many are waiting.
    pub async fn len(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Close the file (at shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_messages_in_order_across_reopen() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("outbox.db");
        let outbox = Outbox::open(&path).await.expect("open");
        for i in 0..3 {
            let msg = Msg {
                subject: format!("jobs.{i}"),
                headers: vec![("k".into(), i.to_string())],
                payload: Bytes::from(vec![i as u8, 0xff]),
                ..Msg::default()
            };
            outbox.push(&format!("id-{i}"), &msg).await.expect("push");
        }
        outbox.close().await;
        let outbox = Outbox::open(&path).await.expect("reopen");
        let pending = outbox.peek(10).await.expect("peek");
        let subjects: Vec<&str> = pending.iter().map(|p| p.msg.subject.as_str()).collect();
        assert_eq!(subjects, ["jobs.0", "jobs.1", "jobs.2"]);
        assert_eq!(pending[2].msg_id, "id-2");
        assert_eq!(pending[2].msg.payload.as_ref(), [2, 0xff]);
        assert_eq!(
            pending[1].msg.headers,
            vec![("k".to_string(), "1".to_string())]
        );
        outbox.remove(pending[0].id).await.expect("remove");
        assert_eq!(outbox.len().await.expect("len"), 2);
        outbox
            .dead_letter(pending[1].id, "too big")
            .await
            .expect("dead letter");
        assert_eq!(outbox.len().await.expect("len"), 1);
        let kept: (String, String) = sqlx::query_as("SELECT subject, reason FROM outbox_dead")
            .fetch_one(&outbox.pool)
            .await
            .expect("kept");
        assert_eq!(kept, ("jobs.1".to_string(), "too big".to_string()));
    }
}
