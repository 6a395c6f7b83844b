//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` for guests, written once over
//! [`KvStore`]. `open` is where grants bite: a bucket the manifest does not list fails
//! with `access-denied`, never a trap.

use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime::Result;

use super::{KvError, KvStore};
use crate::capabilities::bindings::{atomics, batch, store};
use crate::metrics::{KvOp, Stats};
use crate::traces;

/// Where an operation goes, and its span.
type Target = (Arc<dyn KvStore>, String, Option<traces::Span>);

/// What one component may touch: its namespace and the buckets its manifest grants.
#[derive(Clone)]
pub struct KvGrant {
    /// The component's namespace; `None` when it is granted no bucket.
    pub store: Option<Arc<dyn KvStore>>,
    /// Granted bucket names.
    pub buckets: Arc<[String]>,
    /// The component's counters.
    pub stats: Arc<Stats>,
}

/// An open bucket (the `bucket` resource).
pub struct Bucket {
    name: String,
}

/// A compare-and-swap in progress (the `cas` resource): the value seen when it began.
pub struct Cas {
    bucket: String,
    key: String,
    current: Option<Vec<u8>>,
}

/// The slice of store state the keyvalue host needs.
pub struct KvView<'a> {
    /// The grant of the component this store runs.
    pub grant: &'a KvGrant,
    /// The store's resource table.
    pub table: &'a mut ResourceTable,
    /// The context of the request the instance serves: each operation's span is its
    /// child.
    pub trace: &'a [(String, String)],
}

impl crate::capabilities::State {
    /// The keyvalue capability's view of one instance.
    pub(crate) fn kv(&mut self) -> KvView<'_> {
        self.sync();
        KvView {
            grant: &self.caps.keyvalue,
            table: &mut self.table,
            trace: &self.caps.http_out.ctx.trace,
        }
    }
}

/// [`HasData`] marker for linking with [`KvView`].
pub struct Kv;

impl HasData for Kv {
    type Data<'a> = KvView<'a>;
}

/// Add the three keyvalue interfaces to `linker`.
pub(super) fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> Result<()> {
    store::add_to_linker::<T, Kv>(linker, view)?;
    atomics::add_to_linker::<T, Kv>(linker, view)?;
    batch::add_to_linker::<T, Kv>(linker, view)?;
    Ok(())
}

fn other(err: KvError) -> store::Error {
    store::Error::Other(err.to_string())
}

impl KvView<'_> {
    /// The namespace and bucket name behind an open bucket. `open` hands out buckets only
    /// when a namespace exists, so its absence here is a host bug, hence a trap.
    /// Counts `op` too, and starts its span (it ends when the caller drops it): every
    /// operation on a bucket comes through here.
    fn target(&self, bucket: &Resource<Bucket>, op: KvOp) -> Result<Target> {
        self.grant.stats.kv(op);
        let name = self.table.get(bucket)?.name.clone();
        let store = self
            .grant
            .store
            .clone()
            .ok_or_else(|| wasmtime::format_err!("bucket `{name}` open without a namespace"))?;
        let span = traces::start(traces::Kind::Client, self.trace, || {
            let attrs = vec![
                traces::Attr::new("db.operation.name", op.name()),
                traces::Attr::new("db.namespace", name.clone()),
            ];
            (format!("kv.{} {name}", op.name()), attrs)
        });
        Ok((store, name, span))
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Result<Resource<Bucket>, store::Error>> {
        if self.grant.store.is_none() || !self.grant.buckets.contains(&identifier) {
            tracing::debug!(bucket = %identifier, "bucket not granted");
            return Ok(Err(store::Error::AccessDenied));
        }
        Ok(Ok(self.table.push(Bucket { name: identifier })?))
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<Option<Vec<u8>>, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Get)?;
        Ok(s.get(&name, &key).await.map_err(other))
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Set)?;
        Ok(s.set(&name, &key, &value).await.map_err(other))
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Delete)?;
        Ok(s.delete(&name, &key).await.map_err(other))
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<bool, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Exists)?;
        Ok(s.exists(&name, &key).await.map_err(other))
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<Result<store::KeyResponse, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::ListKeys)?;
        Ok(s.list_keys(&name, cursor.as_deref())
            .await
            .map(|(keys, cursor)| store::KeyResponse { keys, cursor })
            .map_err(other))
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: i64,
    ) -> Result<Result<i64, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Increment)?;
        Ok(s.increment(&name, &key, delta).await.map_err(other))
    }

    async fn swap(
        &mut self,
        cas: Resource<Cas>,
        value: Vec<u8>,
    ) -> Result<Result<(), atomics::CasError>> {
        let op = self.table.delete(cas)?;
        self.grant.stats.kv(KvOp::Swap);
        let store = self
            .grant
            .store
            .clone()
            .ok_or_else(|| wasmtime::format_err!("cas open without a namespace"))?;
        match store
            .compare_and_swap(&op.bucket, &op.key, op.current.as_deref(), &value)
            .await
        {
            Ok(true) => Ok(Ok(())),
            Err(e) => Ok(Err(atomics::CasError::StoreError(other(e)))),
            Ok(false) => {
                // The spec asks for a handle already at the latest value, so a retry loop
                // converges without another read.
                let current = match store.get(&op.bucket, &op.key).await {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(atomics::CasError::StoreError(other(e)))),
                };
                let fresh = self.table.push(Cas { current, ..op })?;
                Ok(Err(atomics::CasError::CasFailed(fresh)))
            }
        }
    }
}

impl atomics::HostCas for KvView<'_> {
    async fn new(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<Resource<Cas>, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Cas)?;
        let current = match s.get(&name, &key).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(other(e))),
        };
        Ok(Ok(self.table.push(Cas {
            bucket: name,
            key,
            current,
        })?))
    }

    async fn current(
        &mut self,
        cas: Resource<Cas>,
    ) -> Result<Result<Option<Vec<u8>>, store::Error>> {
        Ok(Ok(self.table.get(&cas)?.current.clone()))
    }

    async fn drop(&mut self, cas: Resource<Cas>) -> Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Result<Vec<Option<(String, Vec<u8>)>>, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::GetMany)?;
        Ok(s.get_many(&name, &keys).await.map_err(other).map(|values| {
            keys.into_iter()
                .zip(values)
                .map(|(k, v)| v.map(|v| (k, v)))
                .collect()
        }))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::SetMany)?;
        Ok(s.set_many(&name, &key_values).await.map_err(other))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::DeleteMany)?;
        Ok(s.delete_many(&name, &keys).await.map_err(other))
    }
}
