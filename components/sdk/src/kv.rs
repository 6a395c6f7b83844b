//! Compare-and-swap loops over `wasi:keyvalue/atomics`, the one primitive the services use
//! for every read-modify-write that may race (stock, per-user indexes, unique claims).
//!
//! The host hands back a refreshed `cas` handle when a swap loses, so a retry does not need
//! another read; the loop gives up after [`MAX_ATTEMPTS`] losses in a row, which only a
//! pathological pile-up on one key reaches.

use crate::api::ApiError;
use crate::bindings::wasi::keyvalue::atomics::{self, Cas, CasError};
use crate::bindings::wasi::keyvalue::store::{Bucket, Error};

/// How many lost swaps in a row `update` tolerates before answering `Contended`.
pub const MAX_ATTEMPTS: u32 = 1000;

/// What an `update` step wants done with the key.
pub enum Step<T> {
    /// Swap in this value, then return `T` (if the swap loses, the step runs again).
    Write(Vec<u8>, T),
    /// Leave the key as it is and return `T`.
    Keep(T),
}

/// Why an `update` did not complete.
#[derive(Debug)]
pub enum UpdateError<E> {
    /// The step refused (e.g. not enough stock); nothing was written.
    Abort(E),
    Store(Error),
    /// Every attempt lost its swap.
    Contended,
}

impl<E> From<Error> for UpdateError<E> {
    fn from(e: Error) -> Self {
        UpdateError::Store(e)
    }
}

/// An aborted step is already an API error; a store error is a 500, contention a 503
/// (the client may retry).
impl From<UpdateError<ApiError>> for ApiError {
    fn from(e: UpdateError<ApiError>) -> Self {
        match e {
            UpdateError::Abort(e) => e,
            UpdateError::Store(e) => e.into(),
            UpdateError::Contended => ApiError::new(503, "too much contention, retry"),
        }
    }
}

/// Read-modify-write of `key`: `step` sees the current value (`None`: absent) and says
/// what to write. Runs again on the fresh value whenever another writer got there first,
/// so `step` must be free of side effects.
pub fn update<T, E>(
    bucket: &Bucket,
    key: &str,
    mut step: impl FnMut(Option<&[u8]>) -> Result<Step<T>, E>,
) -> Result<T, UpdateError<E>> {
    let mut cas = Cas::new(bucket, key)?;
    for _ in 0..MAX_ATTEMPTS {
        let current = cas.current()?;
        match step(current.as_deref()).map_err(UpdateError::Abort)? {
            Step::Keep(result) => return Ok(result),
            Step::Write(value, result) => match atomics::swap(cas, &value) {
                Ok(()) => return Ok(result),
                Err(CasError::CasFailed(fresh)) => cas = fresh,
                Err(CasError::StoreError(e)) => return Err(UpdateError::Store(e)),
            },
        }
    }
    Err(UpdateError::Contended)
}

/// Sets `key` to `value` only if it is absent. `Ok(None)`: this caller now owns the key;
/// `Ok(Some(existing))`: someone else had it (their value is returned).
pub fn claim(bucket: &Bucket, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let result = update(bucket, key, |current| {
        Ok::<_, ()>(match current {
            Some(existing) => Step::Keep(Some(existing.to_vec())),
            None => Step::Write(value.to_vec(), None),
        })
    });
    match result {
        Ok(outcome) => Ok(outcome),
        Err(UpdateError::Store(e)) => Err(e),
        // A claim loses at most once (the key then exists), so neither can happen.
        Err(UpdateError::Abort(())) | Err(UpdateError::Contended) => {
            Err(Error::Other(format!("claim of {key:?} did not settle")))
        }
    }
}

/// Parses a counter written by `atomics::increment` (decimal ASCII); absent is 0.
pub fn parse_counter(value: Option<&[u8]>) -> Option<i64> {
    match value {
        None => Some(0),
        Some(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        assert_eq!(parse_counter(None), Some(0));
        assert_eq!(parse_counter(Some(b"42")), Some(42));
        assert_eq!(parse_counter(Some(b"x")), None);
    }
}
