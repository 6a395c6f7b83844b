//! `wasi:config/store@0.2.0-draft`: a component reads the values its manifest sets
//! (environment variables already substituted at load time). Nothing to check at load:
//! a component that imports config and has none reads an empty list.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};
use wasmtime::Result;

use super::bindings::config;
use super::{CallContext, Capability, GrantError, State, Version};

/// The config capability.
pub struct Config;

impl Capability for Config {
    type Grant = Arc<[(String, String)]>;
    type Instance = Arc<[(String, String)]>;

    fn link(linker: &mut Linker<State>) -> Result<()> {
        config::add_to_linker::<State, ConfigData>(linker, State::config)
    }

    async fn configure(version: &Version<'_>) -> Result<Self::Grant, GrantError> {
        Ok(version.spec.config.clone().into())
    }

    fn prepare(grant: &Self::Grant, _ctx: &CallContext) -> Self::Instance {
        grant.clone()
    }
}

/// A component's config values.
pub struct ConfigView<'a>(pub &'a Arc<[(String, String)]>);

impl State {
    /// The config capability's view of one instance.
    pub(crate) fn config(&mut self) -> ConfigView<'_> {
        self.sync();
        ConfigView(&self.caps.config)
    }
}

/// [`HasData`] marker for linking with [`ConfigView`].
struct ConfigData;

impl HasData for ConfigData {
    type Data<'a> = ConfigView<'a>;
}

impl config::Host for ConfigView<'_> {
    async fn get(&mut self, key: String) -> Result<Result<Option<String>, config::Error>> {
        Ok(Ok(self
            .0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())))
    }

    async fn get_all(&mut self) -> Result<Result<Vec<(String, String)>, config::Error>> {
        Ok(Ok(self.0.to_vec()))
    }
}
