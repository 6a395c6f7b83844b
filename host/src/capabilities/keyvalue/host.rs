//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` for guests, written once over
//! [`KvStore`]. `open` is where grants bite: a bucket the manifest does not list fails
//! with `access-denied`, never a trap.

use std::sync::Arc;

use wasmtime::component::{HasData, Resource, ResourceTable};
use wasmtime::Result;

use super::{KvError, KvStore, OP_TIMEOUT, STALLED};
use crate::capabilities::bindings::{atomics, batch, store};
use crate::capabilities::context::Unavailable;
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
    /// Where an outage of the backend is noted.
    pub unavailable: &'a Unavailable,
}

impl crate::capabilities::State {
    /// The keyvalue capability's view of one instance.
    pub(crate) fn kv(&mut self) -> KvView<'_> {
        self.sync();
        KvView {
            grant: &self.caps.keyvalue,
            table: &mut self.table,
            trace: &self.caps.http_out.ctx.trace,
            unavailable: &self.caps.http_out.ctx.unavailable,
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

/// `op`, failed as [`KvError::NoAnswer`] past [`OP_TIMEOUT`].
async fn bounded<T>(
    op: impl std::future::Future<Output = Result<T, KvError>>,
) -> Result<T, KvError> {
    tokio::time::timeout(OP_TIMEOUT, op)
        .await
        .unwrap_or(Err(KvError::NoAnswer))
}

/// `err` as the guest sees it; an outage of the backend is noted in `unavailable`.
fn other(unavailable: &Unavailable, err: KvError) -> store::Error {
    if err.is_outage() {
        unavailable.note();
    }
    store::Error::Other(err.to_string())
}

/// The outcome of storage operation `op`, bounded by [`OP_TIMEOUT`], as the guest sees
/// it. (A free function: a `&KvView` held across the wait would keep the future from
/// being `Send`.)
async fn done<T>(
    unavailable: &Unavailable,
    op: impl std::future::Future<Output = Result<T, KvError>>,
) -> Result<T, store::Error> {
    let mut waiting = Waiting {
        unavailable,
        since: Some(std::time::Instant::now()),
    };
    let outcome = bounded(op).await.map_err(|e| other(unavailable, e));
    waiting.since = None;
    outcome
}

/// An operation in flight: if its run is stopped (its deadline) after it waited
/// [`STALLED`], that is noted as an outage.
struct Waiting<'a> {
    unavailable: &'a Unavailable,
    since: Option<std::time::Instant>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if self.since.is_some_and(|t| t.elapsed() >= STALLED) {
            self.unavailable.note();
        }
    }
}

impl KvView<'_> {
    /// `err` as the guest sees it; an outage of the backend is noted for the run.
    fn other(&self, err: KvError) -> store::Error {
        other(self.unavailable, err)
    }

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
        Ok(done(self.unavailable, s.get(&name, &key)).await)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Set)?;
        Ok(done(self.unavailable, s.set(&name, &key, &value)).await)
    }

    async fn delete(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Delete)?;
        Ok(done(self.unavailable, s.delete(&name, &key)).await)
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Result<bool, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::Exists)?;
        Ok(done(self.unavailable, s.exists(&name, &key)).await)
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Result<Result<store::KeyResponse, store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::ListKeys)?;
        Ok(
            done(self.unavailable, s.list_keys(&name, cursor.as_deref()))
                .await
                .map(|(keys, cursor)| store::KeyResponse { keys, cursor }),
        )
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
        Ok(done(self.unavailable, s.increment(&name, &key, delta)).await)
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
        match bounded(store.compare_and_swap(&op.bucket, &op.key, op.current.as_deref(), &value))
            .await
        {
            Ok(true) => Ok(Ok(())),
            Err(e) => Ok(Err(atomics::CasError::StoreError(self.other(e)))),
            Ok(false) => {
                // The spec asks for a handle already at the latest value, so a retry loop
                // converges without another read.
                let current = match bounded(store.get(&op.bucket, &op.key)).await {
                    Ok(v) => v,
                    Err(e) => return Ok(Err(atomics::CasError::StoreError(self.other(e)))),
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
        let current = match done(self.unavailable, s.get(&name, &key)).await {
            Ok(v) => v,
            Err(e) => return Ok(Err(e)),
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
        Ok(done(self.unavailable, s.get_many(&name, &keys))
            .await
            .map(|values| {
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
        Ok(done(self.unavailable, s.set_many(&name, &key_values)).await)
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Result<(), store::Error>> {
        let (s, name, _span) = self.target(&bucket, KvOp::DeleteMany)?;
        Ok(done(self.unavailable, s.delete_many(&name, &keys)).await)
    }
}
