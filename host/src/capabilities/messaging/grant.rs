//! The messaging capability's grant: the subjects a component may publish to (checked
//! on every send, in [`super::host`]), and per instance the trace context its messages
//! carry and the bytes its messages hold.

use std::sync::Arc;

use wasmtime::component::Linker;

use super::host::{self, MsgGrant};
use crate::capabilities::{CallContext, Capability, GrantError, State, Version};

/// The messaging capability.
pub struct Messaging;

/// One instance's messaging state.
pub struct MsgInstance {
    pub(crate) grant: MsgGrant,
    /// Request id and trace context of what started the instance.
    pub(crate) trace: Arc<[(String, String)]>,
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

    fn prepare(grant: &MsgGrant, ctx: &CallContext) -> MsgInstance {
        MsgInstance {
            grant: grant.clone(),
            trace: ctx.trace.clone(),
            held: 0,
        }
    }

    fn enter(instance: &mut MsgInstance, ctx: &CallContext) {
        instance.trace = ctx.trace.clone();
    }
}
