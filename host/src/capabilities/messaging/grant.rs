//! The messaging capability's grant: the subjects a component may publish to (checked
//! on every send, in [`super::host`]), and per instance the trace context its messages
//! carry and the bytes its messages hold.

use wasmtime::component::Linker;

use super::host::{self, MsgGrant};
use crate::capabilities::{CallContext, Capability, GrantError, State, Version};

/// The messaging capability.
pub struct Messaging;

/// One instance's messaging state.
pub struct MsgInstance {
    pub(crate) grant: MsgGrant,
    /// Bytes held by the messages this instance made (capped).
    pub(crate) held: usize,
}

impl Capability for Messaging {
    type Grant = MsgGrant;
    type Instance = MsgInstance;

    fn link(linker: &mut Linker<State>) -> wasmtime::Result<()> {
        host::add_to_linker(linker, State::msg)
    }

    async fn configure(version: &Version<'_>) -> Result<MsgGrant, GrantError> {
        Ok(MsgGrant {
            component: version.spec.name.as_str().into(),
            broker: version.backends.broker.clone(),
            publish: version.spec.publish.clone().into(),
            stats: version.stats.clone(),
        })
    }

    fn prepare(grant: &MsgGrant, _ctx: &CallContext) -> MsgInstance {
        MsgInstance {
            grant: grant.clone(),
            held: 0,
        }
    }
}
