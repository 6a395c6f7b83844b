//! JetStream object store buckets, where a cluster keeps component bytes by name (their
//! sha256): the server's object protocol chunks them, so any size fits whatever the
//! `max_payload`.

use async_nats::jetstream::object_store::{self, GetErrorKind};
use async_nats::jetstream::stream::StorageType;
use tokio::io::AsyncReadExt;

use crate::{MsgError, Nats};

/// One object store bucket.
#[derive(Clone)]
pub struct ObjectBucket {
    store: object_store::ObjectStore,
}

fn other(what: &str, err: impl std::fmt::Display) -> MsgError {
    MsgError::Other(format!("object store {what}: {err}"))
}

impl Nats {
    /// The object store `name`, created (file storage, `replicas` copies) if missing.
    pub async fn object_bucket(
        &self,
        name: &str,
        replicas: usize,
    ) -> Result<ObjectBucket, MsgError> {
        let js = self.js();
        let config = object_store::Config {
            bucket: name.to_string(),
            num_replicas: replicas.max(1),
            storage: StorageType::File,
            ..Default::default()
        };
        let store = match js.create_object_store(config).await {
            Ok(store) => store,
            Err(created) => js.get_object_store(name).await.map_err(|e| {
                other(
                    &format!("bucket `{name}`"),
                    format!("cannot create ({created}) or open ({e})"),
                )
            })?,
        };
        Ok(ObjectBucket { store })
    }
}

impl ObjectBucket {
    /// Keep `bytes` as `name` (replacing what was there).
    pub async fn put(&self, name: &str, bytes: &[u8]) -> Result<(), MsgError> {
        let mut reader = bytes;
        self.store
            .put(name, &mut reader)
            .await
            .map(drop)
            .map_err(|e| other(&format!("put `{name}`"), e))
    }

    /// The bytes kept as `name`, if any.
    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, MsgError> {
        let mut object = match self.store.get(name).await {
            Ok(object) => object,
            Err(e) if e.kind() == GetErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(other(&format!("get `{name}`"), e)),
        };
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| other(&format!("read `{name}`"), e))?;
        Ok(Some(bytes))
    }
}
