//! `panal deploy | rollback | undeploy | status | roles`: small clients of the admin API. Each
//! prints the server's answer, or fails with the server's reason.

use std::path::Path;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::server::Refused;

/// Send one request to the admin API at `admin`; the JSON answer on 2xx.
async fn call(admin: &str, method: Method, path: &str, body: Bytes) -> anyhow::Result<Value> {
    let base: Uri = admin
        .parse()
        .with_context(|| format!("--admin `{admin}` is not a URL"))?;
    if base.scheme_str() != Some("http") {
        bail!("--admin `{admin}`: only http:// is supported");
    }
    let authority = base
        .authority()
        .ok_or_else(|| anyhow!("--admin `{admin}` has no host"))?
        .clone();
    let port = authority.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((authority.host(), port))
        .await
        .map_err(|e| Refused(format!("cannot reach the admin API at {admin}: {e}")))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority.as_str());
    if let Ok(token) = std::env::var("PANAL_ADMIN_TOKEN") {
        if !token.is_empty() {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
    }
    let resp = sender.send_request(req.body(Full::new(body))?).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    let doc: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(doc);
    }
    let reason = doc["reason"]
        .as_str()
        .or_else(|| doc["error"].as_str())
        .map_or_else(
            || String::from_utf8_lossy(&bytes).into_owned(),
            str::to_string,
        );
    let what = doc["error"].as_str().unwrap_or("failed");
    Err(Refused(match status {
        StatusCode::UNAUTHORIZED => format!("{what}: {reason}"),
        _ => format!("{what} ({status}): {reason}"),
    })
    .into())
}

/// What `panal deploy` sends along with the file.
#[derive(Debug, Default)]
pub struct DeployArgs {
    /// Public routes.
    pub routes: Vec<String>,
    /// Routes that need a bearer token.
    pub protected_routes: Vec<String>,
    /// Buckets (a new component).
    pub keyvalue: Vec<String>,
    /// Components it may call (a new component).
    pub outbound: Vec<String>,
    /// Subjects it may publish to (a new component).
    pub publish: Vec<String>,
    /// A file of complete routes (`routes = [...]` as in the manifest), replacing a
    /// running component's.
    pub routes_file: Option<std::path::PathBuf>,
}

/// `panal deploy NAME FILE`.
pub async fn deploy(admin: &str, name: &str, file: &Path, args: &DeployArgs) -> anyhow::Result<()> {
    let bytes = std::fs::read(file)
        .map_err(|e| Refused(format!("cannot read `{}`: {e}", file.display())))?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (key, values) in [
        ("route", &args.routes),
        ("protected_route", &args.protected_routes),
        ("keyvalue", &args.keyvalue),
        ("outbound", &args.outbound),
        ("publish", &args.publish),
    ] {
        for v in values {
            query.append_pair(key, v);
        }
    }
    if let Some(file) = &args.routes_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Refused(format!("cannot read `{}`: {e}", file.display())))?;
        query.append_pair("routes", &text);
    }
    let query = query.finish();
    let path = if query.is_empty() {
        format!("/components/{name}")
    } else {
        format!("/components/{name}?{query}")
    };
    let done = call(admin, Method::PUT, &path, Bytes::from(bytes)).await?;
    println!(
        "deployed {name}: version {} (was {}), {:.0} ms",
        done["version"].as_str().unwrap_or("?"),
        done["previous"].as_str().unwrap_or("none"),
        done["took_ms"].as_f64().unwrap_or(0.0)
    );
    Ok(())
}

/// `panal rollback NAME`.
pub async fn rollback(admin: &str, name: &str) -> anyhow::Result<()> {
    let path = format!("/components/{name}/rollback");
    let done = call(admin, Method::POST, &path, Bytes::new()).await?;
    println!(
        "rolled back {name}: version {} (was {})",
        done["version"].as_str().unwrap_or("?"),
        done["previous"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `panal undeploy NAME`.
pub async fn undeploy(admin: &str, name: &str) -> anyhow::Result<()> {
    let done = call(
        admin,
        Method::DELETE,
        &format!("/components/{name}"),
        Bytes::new(),
    )
    .await?;
    println!(
        "undeployed {name} (was version {})",
        done["previous"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `panal status`: a table, or the JSON with `json`.
pub async fn status(admin: &str, json: bool) -> anyhow::Result<()> {
    let doc = call(admin, Method::GET, "/components", Bytes::new()).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!(
        "{:<16} {:<13} {:<20} {:>9} {:>7} {:>9}  routes",
        "component", "version", "deployed at (unix)", "requests", "errors", "in flight"
    );
    for c in doc["components"].as_array().into_iter().flatten() {
        let routes: Vec<&str> = c["routes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<16} {:<13} {:<20} {:>9} {:>7} {:>9}  {}",
            c["name"].as_str().unwrap_or("?"),
            c["version"].as_str().unwrap_or("?"),
            c["deployed_at"].as_u64().unwrap_or(0),
            c["requests"].as_u64().unwrap_or(0),
            c["errors"].as_u64().unwrap_or(0),
            c["in_flight"].as_i64().unwrap_or(0),
            routes.join(" ")
        );
    }
    // In a cluster: every host, and the version of each component it runs.
    if let Some(hosts) = doc["hosts"].as_array() {
        println!("\n{:<32} components (version)", "cluster host");
        for h in hosts {
            let components: Vec<String> = h["components"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("?");
                    format!("{name} ({})", c["version"].as_str().unwrap_or("?"))
                })
                .collect();
            let host = h["host"].as_str().unwrap_or("?");
            println!("{host:<32} {}", components.join(", "));
        }
    }
    Ok(())
}

/// `panal roles grant|revoke ACCOUNT ROLE` (`grant` false: revoke).
pub async fn roles_change(
    admin: &str,
    grant: bool,
    account: &str,
    role: &str,
) -> anyhow::Result<()> {
    let part = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let path = format!("/roles/{}/{}", part(account), part(role));
    let method = if grant { Method::PUT } else { Method::DELETE };
    let done = call(admin, method, &path, Bytes::new()).await?;
    let (did, verb) = if grant {
        ("granted", "already held")
    } else {
        ("revoked", "did not hold")
    };
    let held: Vec<&str> = done["roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if done["changed"].as_bool() == Some(true) {
        println!("{did} `{role}` for {account}; it holds: {}", list(&held));
    } else {
        println!("{account} {verb} `{role}`; it holds: {}", list(&held));
    }
    Ok(())
}

/// `panal roles list`.
pub async fn roles_list(admin: &str) -> anyhow::Result<()> {
    let doc = call(admin, Method::GET, "/roles", Bytes::new()).await?;
    let grants = doc["grants"].as_object().cloned().unwrap_or_default();
    if grants.is_empty() {
        println!("no account holds a role");
    }
    for (account, roles) in grants {
        let held: Vec<&str> = roles
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!("{account:<40} {}", list(&held));
    }
    Ok(())
}

fn list(roles: &[&str]) -> String {
    if roles.is_empty() {
        "no role".into()
    } else {
        roles.join(", ")
    }
}
