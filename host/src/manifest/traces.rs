//! Validation of `[traces]`: the collector spans are exported to (an `http://` base
//! URL, `${ENV}` substituted; empty turns traces off, so `otlp = "${OTEL_URL:-}"` makes
//! them a deployment's choice) and the `service.name` they carry.

use super::validate::{substitute_env, Checker};
use super::TracesSpec;

/// The default `service.name`.
pub const DEFAULT_SERVICE_NAME: &str = "panal";

pub(super) fn traces(
    c: &mut Checker,
    raw: Option<super::raw::RawTraces>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<TracesSpec> {
    let raw = raw?;
    let otlp = match substitute_env(raw.otlp.get_ref(), env) {
        Ok(url) => url,
        Err(why) => {
            c.problem(Some(raw.otlp.span()), "traces.otlp".into(), why);
            return None;
        }
    };
    let service_name = match raw.service_name {
        None => DEFAULT_SERVICE_NAME.to_string(),
        Some(name) => {
            let text = name.get_ref();
            if text.is_empty() || text.len() > 128 || text.chars().any(char::is_control) {
                let why = "a service name is 1 to 128 characters, no control characters";
                c.problem(Some(name.span()), "traces.service_name".into(), why.into());
            }
            text.clone()
        }
    };
    if otlp.is_empty() {
        return None;
    }
    let authority = otlp
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or_default());
    if !authority.is_some_and(|a| !a.is_empty() && http::uri::Authority::try_from(a).is_ok()) {
        let why = format!(
            "`{otlp}` is not an OTLP/HTTP collector URL (http://HOST:PORT, spans go to \
             its /v1/traces)"
        );
        c.problem(Some(raw.otlp.span()), "traces.otlp".into(), why);
    }
    Some(TracesSpec { otlp, service_name })
}
