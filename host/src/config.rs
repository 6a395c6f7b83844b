//! `wasi:config/store@0.2.0-draft`: a component reads the values its manifest sets
//! (environment variables already substituted at load time).

use std::sync::Arc;

use wasmtime::component::HasData;
use wasmtime::Result;

use crate::bindings::config;

/// A component's config values.
pub struct ConfigView<'a>(pub &'a Arc<[(String, String)]>);

/// [`HasData`] marker for linking with [`ConfigView`].
pub struct Config;

impl HasData for Config {
    type Data<'a> = ConfigView<'a>;
}

/// Add `wasi:config/store` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> ConfigView<'_>,
) -> Result<()> {
    config::add_to_linker::<T, Config>(linker, view)
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
