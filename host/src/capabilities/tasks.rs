//! Each request's own context inside an instance that serves several at once (a WASI
//! 0.3 service with concurrent instances). Every request runs as its own guest task;
//! the store's task-group hook says which one runs now, and before a capability reads
//! the context (a call's identity and trace, a message's trace) the state takes on that
//! task's. An instance serving one request at a time never has this and pays nothing.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use wasmtime::component::{TaskGroupHook, TaskGroupId};

use super::CallContext;

/// The contexts of the tasks of one instance, and which one runs.
#[derive(Default)]
pub(crate) struct Tasks {
    running: Option<TaskGroupId>,
    /// Each task's context, with a serial that tells a reused task id from the old one.
    contexts: HashMap<TaskGroupId, (u64, CallContext)>,
    serial: u64,
}

impl Tasks {
    /// Task `task` serves a request made with `ctx`.
    pub fn start(&mut self, task: TaskGroupId, ctx: CallContext) {
        self.serial += 1;
        self.contexts.insert(task, (self.serial, ctx));
    }

    /// The context of the task running now, when it is not the one `entered` (a
    /// serial) already names.
    pub fn switch(&self, entered: u64) -> Option<(u64, CallContext)> {
        let (serial, ctx) = self.contexts.get(&self.running?)?;
        (*serial != entered).then(|| (*serial, ctx.clone()))
    }
}

/// Shared between an instance's state and its store's hook.
pub(crate) type Shared = Arc<Mutex<Tasks>>;

pub(crate) fn lock(tasks: &Shared) -> MutexGuard<'_, Tasks> {
    tasks.lock()
}

/// The store's task-group hook: notes which task runs, forgets the ones that ended.
pub(crate) struct Follow(pub Shared);

impl TaskGroupHook for Follow {
    fn handle_start(&mut self, _task: TaskGroupId) -> wasmtime::Result<()> {
        Ok(())
    }

    fn handle_enter(&mut self, task: TaskGroupId) -> wasmtime::Result<()> {
        lock(&self.0).running = Some(task);
        Ok(())
    }

    fn handle_exit(&mut self, _task: TaskGroupId) -> wasmtime::Result<()> {
        lock(&self.0).running = None;
        Ok(())
    }

    fn handle_finish(&mut self, task: TaskGroupId) -> wasmtime::Result<()> {
        lock(&self.0).contexts.remove(&task);
        Ok(())
    }
}
