//! Why the cluster could not do what this host asked of it (publish a change, change
//! the roles, read a frame): typed, so a caller can tell the cluster's NATS failing
//! from a refusal; its text is what the operator reads (the admin API's `reason`).

use crate::registry::store::StoreError;
use crate::roles::RoleError;

/// A change not published, or a message not read; nothing changed in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The cluster's NATS (its KV buckets, its object store) failed.
    #[error("the cluster's NATS: {0}")]
    Nats(#[from] panal_nats::MsgError),
    /// The version's bytes could not be read on this host.
    #[error("the version's bytes: {0}")]
    Store(#[from] StoreError),
    /// The bytes are not a component this host can compile.
    #[error("not a component this host can compile: {0:#}")]
    NotAComponent(wasmtime::Error),
    /// The roles change breaks the rules, or the table could not be kept.
    #[error(transparent)]
    Roles(#[from] RoleError),
    /// A record could not be made, or one read back was refused (unsealed, older,
    /// out of the rules).
    #[error("{0}")]
    Record(String),
    /// The roles table would not fit in one NATS message.
    #[error("the roles table would be {bytes} bytes, past the NATS server's max_payload {max}")]
    TooBig {
        /// Its size.
        bytes: usize,
        /// The server's `max_payload`.
        max: usize,
    },
    /// Other hosts changed the roles every time this one tried.
    #[error("the cluster's roles kept changing under this change: try again")]
    Contended,
}

/// Why a cluster message is not a frame (`cluster/wire.rs`).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Shorter than its frame header or its head.
    #[error("a cluster message shorter than its {0}")]
    Short(&'static str),
    /// The head is not the JSON it should be.
    #[error("a bad cluster head: {0}")]
    Head(#[from] serde_json::Error),
}
