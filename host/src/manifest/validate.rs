//! Turns the raw manifest into validated types, collecting every problem with its field
//! and line instead of stopping at the first.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::raw::{RawComponent, RawLimits, RawManifest};
use super::{ComponentSpec, Limits, Location, Manifest, ManifestError, Outbound, Problem, VERSION};

pub(super) struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    /// `v` when it lies in `min..=max`; else a problem for `field` naming the range (with
    /// `unit`, if any), and `None`.
    pub(super) fn in_range(
        &mut self,
        field: String,
        v: &Option<Spanned<i64>>,
        (min, max): (i64, i64),
        unit: &str,
    ) -> Option<u64> {
        let v = v.as_ref()?;
        let n = *v.get_ref();
        if (min..=max).contains(&n) {
            return Some(n.unsigned_abs());
        }
        let unit = if unit.is_empty() {
            String::new()
        } else {
            format!(" {unit}")
        };
        self.problem(
            Some(v.span()),
            field,
            format!("must be between {min} and {max}{unit}, got {n}"),
        );
        None
    }

    fn at(&self, span: Range<usize>) -> Location {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        Location { line, col }
    }

    pub(super) fn problem(&mut self, span: Option<Range<usize>>, field: String, message: String) {
        let at = span.map(|s| self.at(s));
        self.problems.push(Problem {
            path: self.path.to_path_buf(),
            at,
            field,
            message,
        });
    }
}

/// The route table refused the routes together (a prefix and method claimed twice):
/// point at the second claim when every route was valid on its own.
fn table_problem(
    c: &mut Checker,
    err: &panal_gateway::RouteError,
    route_spans: &[(String, Range<usize>)],
) {
    let (field, span) = match &err {
        panal_gateway::RouteError::ClaimedTwice { index, .. } if c.problems.is_empty() => {
            route_spans
                .get(*index)
                .cloned()
                .map_or((None, None), |(f, s)| (Some(f), Some(s)))
        }
        _ => (None, None),
    };
    c.problem(
        span,
        field.unwrap_or_else(|| "routes".into()),
        err.to_string(),
    );
}

pub(super) fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    let raw: RawManifest = toml::from_str(text).map_err(|err| {
        let at = err.span().map(|s| {
            Checker {
                path,
                text,
                problems: vec![],
            }
            .at(s)
        });
        ManifestError(vec![Problem {
            path: path.to_path_buf(),
            at,
            field: String::new(),
            message: err.message().trim_end().to_string(),
        }])
    })?;
    let mut c = Checker {
        path,
        text,
        problems: Vec::new(),
    };
    if *raw.version.get_ref() != VERSION {
        c.problem(
            Some(raw.version.span()),
            "version".into(),
            format!(
                "unsupported manifest version {}; this panal reads version {VERSION}",
                raw.version.get_ref()
            ),
        );
    }
    let storage = super::storage::storage(&mut c, raw.storage, env);
    let cluster = super::storage::cluster(&mut c, raw.cluster, env);
    let traces = super::traces::traces(&mut c, raw.traces, env);
    let (messaging, streams) = super::messaging::backend(&mut c, raw.messaging, env);
    let dir = path.parent().unwrap_or(Path::new("."));
    let names: Vec<String> = raw.components.keys().cloned().collect();
    let mut components = Vec::new();
    // Where each route was written, in the order the route table sees them.
    let mut route_spans = Vec::new();
    for (name, comp) in raw.components {
        let span = comp.span();
        if let Some(why) = bad_name(&name) {
            c.problem(Some(span.clone()), format!("components.{name}"), why);
        }
        let raw = comp.into_inner();
        for (i, r) in raw.routes.iter().enumerate() {
            route_spans.push((format!("components.{name}.routes[{i}]"), r.span()));
        }
        components.push(component(&mut c, dir, &names, name, raw, env, &streams));
    }
    let auth = super::gateway::auth(&mut c, raw.auth, &components, env);
    let aggregates = super::gateway::aggregates(&mut c, raw.aggregates, &names);
    let routes: Vec<panal_gateway::Route> = components
        .iter()
        .flat_map(|comp: &ComponentSpec| comp.routes.iter().cloned())
        .collect();
    // Routes with a bad prefix were left out above (and reported), so indexes line up
    // only when there are none; then a conflict can point at the second claim.
    let table = panal_gateway::RouteTable::new(routes);
    let raw_gateway = raw.gateway.unwrap_or_default();
    let gateway = super::gateway::settings(&mut c, &raw_gateway, dir);
    let openapi = match &table {
        Ok(table) => super::gateway::openapi(&mut c, &raw_gateway, dir, table, &aggregates),
        Err(_) => None,
    };
    if let Err(err) = table {
        table_problem(&mut c, &err, &route_spans);
    }
    if c.problems.is_empty() {
        Ok(Manifest {
            path: path.to_path_buf(),
            storage,
            cluster,
            traces,
            messaging,
            streams,
            auth,
            aggregates,
            components,
            openapi,
            gateway,
        })
    } else {
        c.problems
            .sort_by_key(|p| p.at.map_or((usize::MAX, 0), |a| (a.line, a.col)));
        Err(ManifestError(c.problems))
    }
}

/// `routes = [...]` as the manifest writes a component's routes, given on their own
/// (a deploy that replaces a component's routes), for component `name`; `names`: the
/// components its middleware may name. Held to the manifest's rules; `label` names the
/// text in errors.
pub(super) fn routes_alone(
    label: &Path,
    text: &str,
    name: &str,
    names: &[String],
) -> Result<Vec<panal_gateway::Route>, ManifestError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawRoutes {
        routes: Vec<Spanned<super::raw::RawRoute>>,
    }
    let mut c = Checker {
        path: label,
        text,
        problems: Vec::new(),
    };
    let raw: RawRoutes = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            let at = err.span();
            c.problem(at, String::new(), err.message().trim_end().to_string());
            return Err(ManifestError(c.problems));
        }
    };
    let routes = super::routes::routes(&mut c, name, names, &raw.routes);
    if raw.routes.is_empty() {
        c.problem(None, "routes".into(), "give at least one route".into());
    }
    if let Err(err) = panal_gateway::RouteTable::new(routes.clone()) {
        c.problem(None, "routes".into(), err.to_string());
    }
    if c.problems.is_empty() {
        Ok(routes)
    } else {
        Err(ManifestError(c.problems))
    }
}

fn component(
    c: &mut Checker,
    dir: &Path,
    names: &[String],
    name: String,
    raw: RawComponent,
    env: &dyn Fn(&str) -> Option<String>,
    streams: &[super::StreamSpec],
) -> ComponentSpec {
    let field = |f: &str| format!("components.{name}.{f}");
    let source = dir.join(raw.source.get_ref());
    if raw.source.get_ref().is_empty() {
        c.problem(
            Some(raw.source.span()),
            field("source"),
            "must not be empty".into(),
        );
    } else if !source.is_file() {
        c.problem(
            Some(raw.source.span()),
            field("source"),
            format!(
                "component file `{}` does not exist (resolved to `{}`)",
                raw.source.get_ref(),
                source.display()
            ),
        );
    }
    let source_at = c.at(raw.source.span());

    let routes = super::routes::routes(c, &name, names, &raw.routes);

    let mut buckets: Vec<String> = Vec::new();
    for (i, b) in raw.keyvalue.iter().enumerate() {
        let bucket = b.get_ref();
        if let Some(why) = bad_bucket(bucket) {
            c.problem(Some(b.span()), field(&format!("keyvalue[{i}]")), why);
        } else if buckets.contains(bucket) {
            c.problem(
                Some(b.span()),
                field(&format!("keyvalue[{i}]")),
                format!("bucket `{bucket}` is granted twice"),
            );
        } else {
            buckets.push(bucket.clone());
        }
    }

    let mut outbound = Outbound::default();
    for (i, o) in raw.outbound.iter().enumerate() {
        let entry = o.get_ref();
        if names.contains(entry) {
            outbound.components.push(entry.clone());
            continue;
        }
        match parse_host(entry) {
            Ok(host) => outbound.hosts.push(host),
            Err(why) => c.problem(Some(o.span()), field(&format!("outbound[{i}]")), why),
        }
    }

    let mut config = Vec::new();
    for (key, value) in &raw.config {
        match substitute_env(value.get_ref(), env) {
            Ok(v) => config.push((key.clone(), v)),
            Err(why) => c.problem(Some(value.span()), field(&format!("config.{key}")), why),
        }
    }

    let (publish, subscribe) = super::messaging::grants(c, &name, &raw.messaging, streams);
    let limits = limits(c, &name, &raw.limits);
    let schedule = super::schedule::entries(c, &name, &raw.schedule);
    ComponentSpec {
        name,
        source,
        source_at,
        routes,
        buckets,
        outbound,
        config,
        publish,
        subscribe,
        limits,
        schedule,
    }
}

fn limits(c: &mut Checker, name: &str, raw: &RawLimits) -> Limits {
    let mut limits = Limits::default();
    let mut check = |field: &str, v: &Option<Spanned<i64>>, range: (i64, i64), unit: &str| {
        c.in_range(format!("components.{name}.limits.{field}"), v, range, unit)
    };
    if let Some(n) = check("memory_mb", &raw.memory_mb, (1, 4096), "MiB") {
        limits.memory_mb = n;
    }
    if let Some(n) = check("timeout_ms", &raw.timeout_ms, (1, 3_600_000), "ms") {
        limits.timeout_ms = n;
    }
    if let Some(n) = check(
        "max_concurrency",
        &raw.max_concurrency,
        (1, 100_000),
        "instances",
    ) {
        limits.max_concurrency = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let Some(n) = check("queue_ms", &raw.queue_ms, (0, 60_000), "ms") {
        limits.queue_ms = n;
    }
    if let Some(n) = check("max_body_kb", &raw.max_body_kb, (1, 4 << 20), "KiB") {
        limits.max_body_kb = n;
    }
    if let Some(n) = check("reuse", &raw.reuse, (1, 100_000), "requests") {
        limits.reuse = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if let Some(n) = check("concurrent", &raw.concurrent, (1, 1000), "requests") {
        limits.concurrent = Some(u32::try_from(n).unwrap_or(u32::MAX));
    }
    if let Some(n) = check("idle_ms", &raw.idle_ms, (0, 3_600_000), "ms") {
        limits.idle_ms = n;
    }
    if let Some(n) = check("kv_max_mb", &raw.kv_max_mb, (1, 1 << 20), "MiB") {
        limits.kv_max_mb = n;
    }
    if let Some(n) = check("kv_max_keys", &raw.kv_max_keys, (1, 1_000_000_000), "keys") {
        limits.kv_max_keys = n;
    }
    limits
}

/// Component names double as host names for in-process calls: a lowercase DNS label.
pub(crate) fn bad_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    (!ok).then(|| {
        format!(
            "component name `{name}` is not valid: use lowercase letters, digits and `-`, \
             starting with a letter (it is also the host name other components call it by)"
        )
    })
}

fn bad_bucket(bucket: &str) -> Option<String> {
    let ok = !bucket.is_empty()
        && bucket.len() <= 128
        && bucket
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    (!ok).then(|| {
        format!("bucket name `{bucket}` is not valid: use 1-128 letters, digits, `-`, `_` or `.`")
    })
}

/// `host`, `host:port` or `ip:port`. A bare word without a dot would most likely be a
/// misspelt component name, so it is refused rather than silently granted as a host.
fn parse_host(entry: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = match entry.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!("`{entry}`: port `{p}` is not a number between 1 and 65535")
            })?;
            (h, Some(port))
        }
        None => (entry, None),
    };
    let valid_chars = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
    if !valid_chars {
        return Err(format!(
            "`{entry}` is not a component of this manifest nor a host name"
        ));
    }
    if port.is_none() && !host.contains('.') {
        return Err(format!(
            "`{entry}` is not a component of this manifest; for an external host write a \
             domain with a dot or add a port (`{entry}:8080`)"
        ));
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// Replace `${NAME}` with the environment variable `NAME` (`${NAME:-fallback}` when it
/// may be unset); `$$` is a literal `$`.
pub fn substitute_env(value: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(r) = rest.strip_prefix("$$") {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix("${") {
            let end = r
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{value}`"))?;
            let (name, fallback) = match r[..end].split_once(":-") {
                Some((name, fallback)) => (name, Some(fallback)),
                None => (&r[..end], None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "`${{{name}}}` is not a valid environment variable name"
                ));
            }
            let v = env(name)
                .or_else(|| fallback.map(str::to_string))
                .ok_or_else(|| format!("environment variable `{name}` is not set"))?;
            out.push_str(&v);
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}
