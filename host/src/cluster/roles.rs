//! The operator's role grants across a cluster: the whole table (`crate::roles`) as one
//! sealed record in the bucket `panal-CLUSTER-roles`, changed by compare-and-set, so
//! changes made on two hosts at once both count. Every host follows it into its own
//! table, which its gateway reads on every request; a record that is unsealed, older
//! than the one followed, or breaks the table's rules is refused and counted.

use std::sync::Arc;

use futures::StreamExt;
use panal_nats::kv::Written;

use super::record;
use super::rollout::RETRY_EVERY;
use super::seal::Refusal;
use super::{Cluster, ClusterError};
use crate::roles::{Change, Roles, Table};

/// The one key of the roles bucket.
const KEY: &str = "table";

/// What the record is sealed for (and the `newest` entry it is followed by; no
/// component can have this name).
const PURPOSE: &str = "roles:";

/// How many times a change is tried against other hosts' changes.
const TRIES: u32 = 10;

/// How long a change waits for this host's follower to take it.
const FOLLOW_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Cluster {
    /// Make `change` of `role` for `user` in the cluster's table (then in `roles`);
    /// whether anything changed.
    pub async fn change_roles(
        &self,
        roles: &Roles,
        change: Change,
        user: &str,
        role: &str,
    ) -> Result<bool, ClusterError> {
        for _ in 0..TRIES {
            let current = self.roles.entry(KEY).await?;
            let (table, revision) = match &current {
                Some((value, revision)) => (self.open_roles(value)?.0, Some(*revision)),
                None => (roles.table(), None),
            };
            let Some(next) = table.changed(change, user, role)? else {
                return Ok(false);
            };
            let value = bytes::Bytes::from(record::sealed(&self.seal, PURPOSE, &next)?);
            let max = self.nats.max_payload();
            if value.len() > max {
                let bytes = value.len();
                return Err(ClusterError::TooBig { bytes, max });
            }
            let written = match revision {
                Some(revision) => self.roles.update(KEY, value.clone(), revision).await,
                None => self.roles.create(KEY, value.clone()).await,
            }?;
            if let Written::At(_) = written {
                self.until_followed(roles, next, &value).await?;
                return Ok(true);
            }
        }
        Err(ClusterError::Contended)
    }

    /// Wait until this host's follower took the record `value` (of table `next`) this
    /// host wrote, so the answer to a change holds here, and tables are taken in order;
    /// if it does not come within [`FOLLOW_WAIT`], take `next` now.
    async fn until_followed(
        &self,
        roles: &Roles,
        next: Table,
        value: &[u8],
    ) -> Result<(), ClusterError> {
        let (_, at) = self.open_roles(value)?;
        let deadline = tokio::time::Instant::now() + FOLLOW_WAIT;
        loop {
            let taken = self.roles_taken.notified();
            if self.newest(PURPOSE).is_some_and(|n| n >= at) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, taken).await.is_err() {
                tracing::warn!("the cluster's roles watch is behind; taking this change here now");
                return Ok(roles.set(next)?);
            }
        }
    }

    /// The table in `value`, opened and checked (see the module doc).
    fn open_roles(&self, value: &[u8]) -> Result<(Table, u64), ClusterError> {
        let refused = |why: String| {
            ClusterError::Record(format!("the cluster's roles record is refused: {why}"))
        };
        let invalid = |why: String| {
            self.seal.refuse(Refusal::Invalid);
            refused(why)
        };
        let (json, at) = record::opened(&self.seal, PURPOSE, value, self.newest(PURPOSE))
            .map_err(|(_, why)| refused(why))?;
        let table: Table = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
        if let Some(why) = table.problem() {
            return Err(invalid(why.to_string()));
        }
        Ok((table, at))
    }

    /// Take the cluster's table into `roles`, or, when the cluster has none yet, give
    /// it this host's (so grants made before the cluster existed carry over).
    pub(super) async fn catch_up_roles(&self, roles: &Roles) -> Result<(), ClusterError> {
        match self.roles.entry(KEY).await? {
            Some((value, _)) => self.take_roles(roles, &value),
            None if roles.table().grants.is_empty() => Ok(()),
            None => {
                let value = record::sealed(&self.seal, PURPOSE, &roles.table())?;
                // Another host's table may have come first: the watch brings it.
                self.roles.create(KEY, value.into()).await?;
                Ok(())
            }
        }
    }

    fn take_roles(&self, roles: &Roles, value: &[u8]) -> Result<(), ClusterError> {
        let (table, at) = self.open_roles(value)?;
        roles.set(table)?;
        self.took(PURPOSE, at);
        self.roles_taken.notify_waiters();
        Ok(())
    }

    /// Follow the cluster's table into `roles` until the host stops.
    pub(super) async fn follow_roles(self: Arc<Self>, roles: Arc<Roles>) {
        loop {
            let mut changes = match self.roles.watch().await {
                Ok(changes) => changes,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch the cluster's roles; trying again");
                    tokio::time::sleep(RETRY_EVERY).await;
                    continue;
                }
            };
            while let Some((key, value)) = changes.next().await {
                match value {
                    Some(value) if key == KEY => {
                        if let Err(why) = self.take_roles(&roles, &value) {
                            tracing::error!("{why}; the roles stay as they were");
                        }
                    }
                    // Only hosts write here, and never delete: keep what is known.
                    _ => tracing::warn!(%key, "ignored a change of the cluster's roles bucket"),
                }
            }
            tracing::warn!("the watch of the cluster's roles ended; watching again");
        }
    }
}
