//! The registry's one error type: a load or a change (deploy, rollback, undeploy) that
//! did not happen, naming the component and the phase that refused it. Its text is what
//! a user reads (the admin API's `reason`, the start-up error); its fields are for code
//! (the admin API's `phase`, the tests).

/// Where loading or changing a component stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// What was asked is not possible (not deployed, nothing to roll back to, a bad name).
    Request,
    /// Reading the `.wasm` (the manifest's file, or a kept version).
    Read,
    /// Not a component, or compiling it failed.
    Compile,
    /// A capability refused the version's grants, or could not set up for it (storage).
    Grants,
    /// Linking its imports against the host's interfaces.
    Link,
    /// What it must export for its triggers (`wasi:http`, the messaging handler).
    Exports,
    /// Its routes would make the route table ambiguous.
    Routes,
    /// Instantiating the new version once, before it serves.
    Trial,
    /// Keeping the deploy record (history, blobs) on disk.
    Record,
}

impl Phase {
    /// The phase's name, as the admin API answers it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::Read => "read",
            Self::Compile => "compile",
            Self::Grants => "grants",
            Self::Link => "link",
            Self::Exports => "exports",
            Self::Routes => "routes",
            Self::Trial => "trial",
            Self::Record => "record",
        }
    }
}

/// A load or change of `component` refused in `phase`; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ChangeError {
    /// The component.
    pub component: String,
    /// Where it stopped.
    pub phase: Phase,
    /// What went wrong, for a person.
    pub message: String,
}

impl ChangeError {
    /// `message` about `component` in `phase`.
    pub fn new(component: &str, phase: Phase, message: impl Into<String>) -> Self {
        Self {
            component: component.to_string(),
            phase,
            message: message.into(),
        }
    }

    /// A mapper for `map_err`: any error about `component` becomes a [`ChangeError`]
    /// in `phase`, its text the message.
    pub fn at<E: std::fmt::Display>(component: &str, phase: Phase) -> impl Fn(E) -> Self + '_ {
        move |error| Self::new(component, phase, error.to_string())
    }
}
