//! Operator-granted roles: which account (a bearer token's `sub`) holds which roles.
//! Only the operator changes them (the admin API, `panal roles grant|revoke|list`); the
//! gateway looks a verified user's roles up here on every request, so a revocation
//! counts from the next request, whatever tokens are out. Kept in `DATA_DIR/roles.json`;
//! in a cluster the cluster's roles bucket is the truth, which every host follows
//! (`cluster/roles.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use arc_swap::ArcSwap;
use panal_gateway::auth::{valid_role, valid_user, RoleSource};
use serde::{Deserialize, Serialize};

/// The most accounts that may hold roles (roles are for operators and staff, and the
/// table travels whole through the cluster).
pub const MAX_ACCOUNTS: usize = 1000;

/// The most roles one account may hold.
pub const MAX_ROLES: usize = 32;

/// Why a change or a table was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoleError {
    /// Not an account id.
    #[error("`{0}` is not an account id (1-256 visible ASCII characters)")]
    User(String),
    /// Not a role name.
    #[error("`{0}` is not a role name (1-64 of A-Z a-z 0-9 . _ : -)")]
    Role(String),
    /// Past [`MAX_ACCOUNTS`] or [`MAX_ROLES`].
    #[error("{0}")]
    TooMany(String),
    /// The table could not be kept.
    #[error("cannot keep the roles in {0}")]
    Io(String),
}

/// Every grant: account id → its roles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    /// Account id → roles; an account without roles is not listed.
    pub grants: BTreeMap<String, BTreeSet<String>>,
}

/// A change the operator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Give the role.
    Grant,
    /// Take it back.
    Revoke,
}

impl Table {
    /// Why this table breaks the rules (what comes from a file or the cluster).
    pub fn problem(&self) -> Option<RoleError> {
        if self.grants.len() > MAX_ACCOUNTS {
            return Some(too_many_accounts());
        }
        self.grants.iter().find_map(|(user, roles)| {
            if !valid_user(user) {
                return Some(RoleError::User(user.clone()));
            }
            if roles.is_empty() || roles.len() > MAX_ROLES {
                return Some(RoleError::TooMany(format!(
                    "`{user}` holds {} roles (1 to {MAX_ROLES})",
                    roles.len()
                )));
            }
            roles
                .iter()
                .find(|r| !valid_role(r))
                .map(|r| RoleError::Role(r.clone()))
        })
    }

    /// The table after `change` of `role` for `user`; `None` when it changes nothing.
    pub fn changed(
        &self,
        change: Change,
        user: &str,
        role: &str,
    ) -> Result<Option<Table>, RoleError> {
        if !valid_user(user) {
            return Err(RoleError::User(user.into()));
        }
        if !valid_role(role) {
            return Err(RoleError::Role(role.into()));
        }
        let mut next = self.clone();
        match change {
            Change::Grant => {
                let roles = next.grants.entry(user.to_string()).or_default();
                if !roles.insert(role.to_string()) {
                    return Ok(None);
                }
                if roles.len() > MAX_ROLES {
                    return Err(RoleError::TooMany(format!(
                        "`{user}` already holds {MAX_ROLES} roles"
                    )));
                }
                if next.grants.len() > MAX_ACCOUNTS {
                    return Err(too_many_accounts());
                }
            }
            Change::Revoke => {
                let Some(roles) = next.grants.get_mut(user) else {
                    return Ok(None);
                };
                if !roles.remove(role) {
                    return Ok(None);
                }
                if roles.is_empty() {
                    next.grants.remove(user);
                }
            }
        }
        Ok(Some(next))
    }
}

fn too_many_accounts() -> RoleError {
    RoleError::TooMany(format!("at most {MAX_ACCOUNTS} accounts may hold roles"))
}

/// The table as looked up: each account's roles ready to hand out.
struct Snapshot {
    table: Table,
    lookup: HashMap<String, Arc<[String]>>,
}

impl Snapshot {
    fn of(table: Table) -> Self {
        let lookup = table
            .grants
            .iter()
            .map(|(user, roles)| (user.clone(), roles.iter().cloned().collect()))
            .collect();
        Self { table, lookup }
    }
}

/// The grants this host applies, kept in a file when it has one.
pub struct Roles {
    current: ArcSwap<Snapshot>,
    file: Option<PathBuf>,
    /// One change at a time: each reads the table, then writes it.
    changing: Mutex<()>,
    /// One write of the file at a time (the cluster's follower writes too).
    writing: Mutex<()>,
}

impl Roles {
    /// The grants kept in `file` (none when it does not exist; `None`: kept in memory).
    pub fn load(file: Option<PathBuf>) -> Result<Self, RoleError> {
        let table = match &file {
            Some(path) if path.exists() => {
                let io =
                    |e: &dyn std::fmt::Display| RoleError::Io(format!("{}: {e}", path.display()));
                let text = std::fs::read(path).map_err(|e| io(&e))?;
                let table: Table = serde_json::from_slice(&text).map_err(|e| io(&e))?;
                if let Some(why) = table.problem() {
                    return Err(io(&why));
                }
                table
            }
            _ => Table::default(),
        };
        Ok(Self {
            current: ArcSwap::from_pointee(Snapshot::of(table)),
            file,
            changing: Mutex::new(()),
            writing: Mutex::new(()),
        })
    }

    /// Every grant now.
    pub fn table(&self) -> Table {
        self.current.load().table.clone()
    }

    /// Apply `change` here; whether anything changed.
    pub fn change(&self, change: Change, user: &str, role: &str) -> Result<bool, RoleError> {
        let _one = self.changing.lock();
        match self.table().changed(change, user, role)? {
            Some(next) => self.set(next).map(|()| true),
            None => Ok(false),
        }
    }

    /// Make `table` the grants (kept first, then applied).
    pub fn set(&self, table: Table) -> Result<(), RoleError> {
        let _one = self.writing.lock();
        if let Some(path) = &self.file {
            let io = |e: std::io::Error| RoleError::Io(format!("{}: {e}", path.display()));
            let json =
                serde_json::to_vec_pretty(&table).map_err(|e| RoleError::Io(e.to_string()))?;
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, json).map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        self.current.store(Arc::new(Snapshot::of(table)));
        Ok(())
    }
}

impl RoleSource for Roles {
    fn roles_of(&self, user: &str) -> Option<Arc<[String]>> {
        self.current.load().lookup.get(user).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_and_revocations_change_the_table_once() {
        let t = Table::default();
        let t = t
            .changed(Change::Grant, "u1", "admin")
            .expect("ok")
            .expect("new");
        assert_eq!(t.changed(Change::Grant, "u1", "admin"), Ok(None));
        let t = t
            .changed(Change::Grant, "u1", "ops")
            .expect("ok")
            .expect("new");
        assert_eq!(t.grants["u1"].len(), 2);
        let t = t
            .changed(Change::Revoke, "u1", "admin")
            .expect("ok")
            .expect("new");
        let t = t
            .changed(Change::Revoke, "u1", "ops")
            .expect("ok")
            .expect("new");
        assert!(
            t.grants.is_empty(),
            "an account without roles is not listed"
        );
        assert_eq!(t.changed(Change::Revoke, "u1", "ops"), Ok(None));
        assert!(matches!(
            t.changed(Change::Grant, "a b", "admin"),
            Err(RoleError::User(_))
        ));
        assert!(matches!(
            t.changed(Change::Grant, "u", "a,b"),
            Err(RoleError::Role(_))
        ));
    }

    #[test]
    fn tables_past_the_limits_or_with_bad_names_are_refused() {
        let mut t = Table::default();
        for i in 0..MAX_ACCOUNTS {
            t.grants
                .insert(format!("u{i}"), BTreeSet::from(["r".to_string()]));
        }
        assert_eq!(t.problem(), None);
        assert!(matches!(
            t.changed(Change::Grant, "one-more", "r"),
            Err(RoleError::TooMany(_))
        ));
        t.grants
            .insert("x y".into(), BTreeSet::from(["r".to_string()]));
        assert!(t.problem().is_some());
        let empty = Table {
            grants: BTreeMap::from([("u".to_string(), BTreeSet::new())]),
        };
        assert!(matches!(empty.problem(), Some(RoleError::TooMany(_))));
    }

    #[test]
    fn the_file_keeps_the_grants_and_a_bad_file_is_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("roles.json");
        let roles = Roles::load(Some(path.clone())).expect("load");
        assert_eq!(roles.change(Change::Grant, "u1", "admin"), Ok(true));
        assert_eq!(
            roles.roles_of("u1").as_deref(),
            Some(&["admin".to_string()][..])
        );
        assert!(roles.roles_of("u2").is_none());
        let again = Roles::load(Some(path.clone())).expect("reload");
        assert_eq!(again.table(), roles.table());
        std::fs::write(&path, br#"{"grants":{"u1":["a,b"]}}"#).expect("write");
        let err = Roles::load(Some(path)).err().expect("refused");
        assert!(err.to_string().contains("a,b"), "{err}");
    }
}
