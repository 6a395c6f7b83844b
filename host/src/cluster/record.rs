//! The desired-version records of a cluster's deploys, as they travel through its KV
//! bucket: what every host should run of one component, sealed with the cluster key
//! (`SEAL` line, then the JSON), and held to the manifest's rules when read back, since
//! anyone who can write to the bucket could have put anything there.

use serde::{Deserialize, Serialize};

use super::seal::{Refusal, Seal};
use crate::manifest::Limits;
use crate::registry::store::RouteRecord;

/// The most routes one record may carry.
const MAX_ROUTES: usize = 64;

/// What every host should run of one component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// The version's sha256 (`None`: undeployed).
    pub sha256: Option<String>,
    /// Its routes, when the change set them (else each host keeps its own).
    pub routes: Option<Vec<RouteRecord>>,
    /// The host the change was made on.
    pub by: String,
    /// How hosts that do not run it reach it (absent: they keep what they know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<Reach>,
}

/// The routes and the limits of a component, for the hosts that call it elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reach {
    /// The routes every gateway serves it on.
    pub routes: Vec<RouteRecord>,
    /// Its `max_body_kb` (a caller refuses a bigger body before sending it).
    pub max_body_kb: u64,
    /// Its `timeout_ms` and `queue_ms` (how long a caller waits for the first answer).
    pub timeout_ms: u64,
    /// See `timeout_ms`.
    pub queue_ms: u64,
}

impl Reach {
    pub(super) fn of(routes: &[panal_gateway::Route], limits: &Limits) -> Self {
        Self {
            routes: routes.iter().map(RouteRecord::of).collect(),
            max_body_kb: limits.max_body_kb,
            timeout_ms: limits.timeout_ms,
            queue_ms: limits.queue_ms,
        }
    }

    pub(super) fn limits(&self) -> Limits {
        Limits {
            max_body_kb: self.max_body_kb,
            timeout_ms: self.timeout_ms,
            queue_ms: self.queue_ms,
            ..Limits::default()
        }
    }
}

/// `desired` for component `name`, sealed: the bytes to put in the bucket.
pub(super) fn seal(
    seal: &Seal,
    name: &str,
    desired: &Desired,
) -> Result<Vec<u8>, super::ClusterError> {
    sealed(seal, &purpose(name), desired)
}

/// `value` as JSON sealed for `purpose`: the seal line, then the JSON.
pub(super) fn sealed<T: Serialize>(
    seal: &Seal,
    purpose: &str,
    value: &T,
) -> Result<Vec<u8>, super::ClusterError> {
    let json = serde_json::to_vec(value).map_err(|e| super::ClusterError::Record(e.to_string()))?;
    let mut out = seal.seal(purpose, &json).into_bytes();
    out.push(b'\n');
    out.extend_from_slice(&json);
    Ok(out)
}

/// The JSON of a record [`sealed`] for `purpose`, its seal checked and not older than
/// `newest`, with when it was sealed.
pub(super) fn opened<'a>(
    seal: &Seal,
    purpose: &str,
    value: &'a [u8],
    newest: Option<u64>,
) -> Result<(&'a [u8], u64), (Refusal, String)> {
    let (line, json) = match value.iter().position(|b| *b == b'\n') {
        Some(at) => (std::str::from_utf8(&value[..at]).ok(), &value[at + 1..]),
        None => (None, value),
    };
    let opened = seal
        .open(purpose, json, line, false)
        .map_err(|why| (why, why.to_string()))?;
    if newest.is_some_and(|n| opened.at < n) {
        seal.refuse(Refusal::Stale);
        return Err((
            Refusal::Stale,
            "older than the record this host follows".into(),
        ));
    }
    Ok((json, opened.at))
}

/// The record in `value` for component `name`, its seal checked (not older than
/// `newest`, the last one taken for it) and its content held to the manifest's
/// rules; with when it was sealed.
pub(super) fn open(
    seal: &Seal,
    name: &str,
    value: &[u8],
    newest: Option<u64>,
) -> Result<(Desired, u64), (Refusal, String)> {
    let (json, at) = opened(seal, &purpose(name), value, newest)?;
    let invalid = |why: String| {
        seal.refuse(Refusal::Invalid);
        (Refusal::Invalid, why)
    };
    let desired: Desired = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
    desired.check(name).map_err(invalid)?;
    Ok((desired, at))
}

fn purpose(name: &str) -> String {
    format!("desired:{name}")
}

impl Desired {
    /// Whether every part keeps the manifest's rules (see the module doc).
    fn check(&self, name: &str) -> Result<(), String> {
        if let Some(why) = crate::manifest::bad_name(name) {
            return Err(why);
        }
        if let Some(sha) = &self.sha256 {
            let hex =
                sha.len() == 64 && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
            if !hex {
                return Err("sha256 is not 64 lowercase hex digits".into());
            }
        }
        if self.by.len() > 256 || self.by.chars().any(char::is_control) {
            return Err("`by` is not a host name".into());
        }
        if let Some(routes) = &self.routes {
            check_routes(name, routes)?;
        }
        if let Some(reach) = &self.reach {
            check_routes(name, &reach.routes)?;
            let within = |v: u64, lo: u64, hi: u64, what: &str| {
                (lo..=hi)
                    .contains(&v)
                    .then_some(())
                    .ok_or(format!("reach.{what} {v} is not within {lo}..={hi}"))
            };
            within(reach.max_body_kb, 1, 4 << 20, "max_body_kb")?;
            within(reach.timeout_ms, 1, 3_600_000, "timeout_ms")?;
            within(reach.queue_ms, 0, 60_000, "queue_ms")?;
        }
        Ok(())
    }
}

fn check_routes(name: &str, routes: &[RouteRecord]) -> Result<(), String> {
    if routes.len() > MAX_ROUTES {
        return Err(format!(
            "{} routes; a record carries at most {MAX_ROUTES}",
            routes.len()
        ));
    }
    let checked = routes
        .iter()
        .map(|r| r.checked(name))
        .collect::<Result<Vec<_>, _>>()?;
    panal_gateway::RouteTable::new(checked)
        .map(drop)
        .map_err(|e| e.to_string())
}
