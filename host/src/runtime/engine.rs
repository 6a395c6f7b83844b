//! The one wasmtime [`Engine`]: pooling allocator sized from the manifest, epoch interruption driven by a single
//! ticker thread, and compiled components cached on disk keyed by content hash and
//! engine settings, so a second start does not recompile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; timeouts are measured in these ticks.
pub const TICK: Duration = Duration::from_millis(10);

/// Room in the pool beyond the manifest's own components: a component added later by a
/// deploy (default limits), trial instances of deploys, message deliveries.
const HEADROOM: u32 = 256;

/// The pool's ceiling, whatever the manifest asks. Each memory slot reserves about 4 GiB
/// of address space (two per instance), so 4096 instances reserve ~32 TiB of the 128 TiB
/// a process has on x86-64; more would risk failing to start.
const MAX_INSTANCES: u32 = 4096;

/// Linear memory kept mapped between uses of a pool slot: reset with a `memset` on reuse
/// instead of being returned to the kernel and faulted in again. Covers a small Rust
/// component's whole memory (stack, data, a first heap). Measured on `minimal` under wrk
/// (c=16): 2-4 MiB gave 1.2-1.35x the requests/s of 0 (madvise) and of 128 KiB-1 MiB
/// (which reset part by memset and part by madvise).
const KEEP_RESIDENT: usize = 4 << 20;

/// What one component instance may take from the pool: core instances (modules, shims,
/// adapters), tables and linear memories. A component whose instances use more is
/// refused at deploy instead of draining the pool for every other component. Sized for
/// guests built by componentize-py and componentize-js (an interpreter, its libc and
/// adapters: 14 core instances for a Python proxy); a Rust component takes a handful.
pub const CORE_INSTANCES_PER_INSTANCE: u32 = 32;
/// Tables one component instance may have.
pub const TABLES_PER_INSTANCE: u32 = 32;
/// Linear memories one component instance may have (`memory_mb` bounds their total).
pub const MEMORIES_PER_INSTANCE: u32 = 8;
/// What the pool holds per instance slot, on average: the totals are shared, so a few
/// large instances fit beside many small ones. (Each memory slot reserves address
/// space for its largest size and guard: the total of memories is what bounds it.)
const CORE_INSTANCES_PER_SLOT: u32 = 16;
const TABLES_PER_SLOT: u32 = 8;
const MEMORIES_PER_SLOT: u32 = 2;

/// How big the pooling allocator is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSize {
    /// Component instances alive at once; more fail to instantiate and are answered 503.
    pub instances: u32,
    /// The largest linear memory any one instance may have (MiB).
    pub max_memory_mb: u64,
    /// Address space reserved per linear memory (MiB); `None`: wasmtime's 4 GiB, which
    /// lets compiled code skip most bounds checks.
    pub reservation_mb: Option<u64>,
}

/// What the operator sets on the pool (`--max-instances`, `--memory-reservation-mb`),
/// for hosts with little address space (`ulimit -v`, valgrind, 39-bit address spaces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolOverrides {
    /// Component instances alive at once, instead of what the manifest adds up to.
    pub max_instances: Option<u32>,
    /// Address space reserved per linear memory, MiB.
    pub memory_reservation_mb: Option<u32>,
}

/// A pool setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error(
        "--memory-reservation-mb {reservation_mb} is below the largest memory a component \
         may grow to ({max_memory_mb} MiB: the largest `limits.memory_mb`, at least the \
         default 128): raise it, or lower `memory_mb`"
    )]
    /// Memories could not grow to their `memory_mb` in so little address space.
    ReservationTooSmall {
        /// What the operator asked for.
        reservation_mb: u64,
        /// The largest memory a component may grow to.
        max_memory_mb: u64,
    },
    /// More instances than the pool can reserve address space for, or none.
    #[error("--max-instances must be between 1 and {MAX_INSTANCES}, not {0}")]
    Instances(u32),
}

impl PoolSize {
    /// Enough for every component of `manifest` at its `max_concurrency` (the limit
    /// holds across versions during a swap), plus [`HEADROOM`].
    pub fn for_manifest(manifest: &crate::manifest::Manifest) -> Self {
        let defaults = crate::manifest::Limits::default();
        let wanted: u64 = manifest
            .components
            .iter()
            .map(|c| {
                // Reused instances wait idle between requests: up to one per running slot.
                let per_slot = if c.limits.reuse.is_some_and(|r| r > 1) {
                    2
                } else {
                    1
                };
                u64::from(c.limits.max_concurrency) * per_slot
            })
            .sum::<u64>()
            + u64::from(HEADROOM);
        let max_memory_mb = manifest
            .components
            .iter()
            .map(|c| c.limits.memory_mb)
            .fold(defaults.memory_mb, u64::max);
        if wanted > u64::from(MAX_INSTANCES) {
            tracing::warn!(
                wanted,
                max = MAX_INSTANCES,
                "the components' max_concurrency adds up to more instances than the pool \
                 holds; past {MAX_INSTANCES} running instances requests get 503"
            );
        }
        let instances = wanted.min(u64::from(MAX_INSTANCES));
        Self {
            instances: u32::try_from(instances).unwrap_or(MAX_INSTANCES),
            max_memory_mb,
            reservation_mb: None,
        }
    }

    /// This size with the operator's `overrides` applied, or why they cannot work.
    pub fn with(mut self, overrides: PoolOverrides) -> Result<Self, PoolError> {
        if let Some(n) = overrides.max_instances {
            if n == 0 || n > MAX_INSTANCES {
                return Err(PoolError::Instances(n));
            }
            self.instances = n;
        }
        if let Some(mb) = overrides.memory_reservation_mb.map(u64::from) {
            if mb < self.max_memory_mb {
                return Err(PoolError::ReservationTooSmall {
                    reservation_mb: mb,
                    max_memory_mb: self.max_memory_mb,
                });
            }
            self.reservation_mb = Some(mb);
        }
        Ok(self)
    }
}

/// Build the engine with a pool of `size`.
pub fn new_engine(size: PoolSize) -> anyhow::Result<Engine> {
    let n = size.instances.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_SLOT))
        .total_memories(n.saturating_mul(MEMORIES_PER_SLOT))
        .total_tables(n.saturating_mul(TABLES_PER_SLOT))
        .total_stacks(n)
        .max_core_instances_per_component(CORE_INSTANCES_PER_INSTANCE)
        .max_tables_per_component(TABLES_PER_INSTANCE)
        .max_memories_per_component(MEMORIES_PER_INSTANCE)
        .max_memory_size(usize::try_from(size.max_memory_mb << 20).unwrap_or(usize::MAX))
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(64 << 10);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        // WASI 0.3 components (async exports, streams and futures).
        .wasm_component_model_async(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if let Some(mb) = size.reservation_mb {
        config.memory_reservation(mb << 20);
    }
    Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot configure the wasm engine: {e}"))
}

/// Advances the engine's epoch every [`TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Start the single ticker thread for `engine`.
    pub fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("panal-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    engine.increment_epoch();
                }
            })
            .ok();
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Where a compiled component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now, and written to the cache.
    Fresh,
    /// Loaded from the on-disk cache.
    Cached,
}

/// Compiles components, caching the machine code under a folder.
pub struct Compiler {
    engine: Engine,
    dir: PathBuf,
    engine_key: String,
}

impl Compiler {
    /// A compiler for `engine` caching in `dir` (created if missing).
    pub fn new(engine: &Engine, dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the compile cache {}", dir.display()))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        Ok(Self {
            engine: engine.clone(),
            dir,
            engine_key: format!("{:016x}", h.finish()),
        })
    }

    /// The engine it compiles for.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile `bytes` (already checked to be a component), or load it from the cache.
    pub fn compile(&self, bytes: &[u8], sha256: &str) -> anyhow::Result<(Component, Compiled)> {
        let path = self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        if path.is_file() {
            match self.load(&path) {
                Ok(c) => return Ok((c, Compiled::Cached)),
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "ignoring unreadable cache entry")
                }
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| anyhow::anyhow!("{e:#}"))?;
        if let Err(err) = self.store(&path, &component) {
            // A read-only data dir costs speed on the next start, not correctness.
            tracing::warn!(path = %path.display(), %err, "cannot write the compile cache");
        }
        give_back_free_memory();
        Ok((component, Compiled::Fresh))
    }

    #[allow(unsafe_code)]
    fn load(&self, path: &Path) -> anyhow::Result<Component> {
        // SAFETY: the file was written by `store` below from `Component::serialize` of
        // this same engine configuration (the name carries the engine's compatibility
        // hash); wasmtime still checks the header and refuses a mismatched artefact.
        unsafe { Component::deserialize_file(&self.engine, path) }
            .map_err(|e| anyhow::anyhow!("{e:#}"))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component
            .serialize()
            .map_err(|e| anyhow::anyhow!("{e:#}"))?;
        // Write then rename, so a crash never leaves a torn file under the final name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}

/// Return the allocator's free memory to the kernel. Compiling (Cranelift, on several
/// threads) frees hundreds of MB that glibc keeps in its per-thread arenas for good:
/// the shop with its Python service held 345 MB after a cold start, 86 MB after this.
fn give_back_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: `malloc_trim` only releases free pages of glibc's own arenas, under their
    // locks; no memory in use moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Hex sha256 of `bytes`: a deployed version's identity.
pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Why `bytes` cannot be a component, if it cannot.
pub fn not_a_component(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        // The header is `\0asm`, a 16-bit version, then a 16-bit layer: 1 for components.
        [0, b'a', b's', b'm', _, _, 0x01, 0x00, ..] => None,
        [0, b'a', b's', b'm', _, _, 0x00, 0x00, ..] => Some(
            "is a core WebAssembly module, not a component: build it with \
             `--target wasm32-wasip2` (or wrap it with `wasm-tools component new`)",
        ),
        [0, b'a', b's', b'm', ..] => Some("is WebAssembly of an unknown version or layer"),
        _ => Some("is not a WebAssembly file (it does not start with `\\0asm`)"),
    }
}
