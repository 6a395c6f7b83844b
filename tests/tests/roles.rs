//! Roles come only from the operator, through the real binary and its CLI: registering
//! any email gives no role, and a token's own `roles` claim grants nothing; `panal roles
//! grant` makes an account an admin and `revoke` takes it back from the next request,
//! whatever tokens are out; grants survive a restart. The roles travel with the request
//! to the component (`x-panal-roles`) and its in-process calls, which also name their
//! caller (`x-panal-caller`); neither a client nor a guest can set them. The shop's
//! components check the role themselves, so a route whose roles were left out still
//! keeps strangers off the catalogue, and a middleware cannot pass on another request
//! than the one the gateway admitted. A redeploy keeps a component's routes with their
//! roles unless complete routes replace them.

use panal_tests::shop::{token_of, Shop, SECRET};
use panal_tests::{client, component, Panal};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn manifest() -> String {
    format!(
        r#"version = 1
[auth]
jwt_secret = "${{PANAL_TEST_JWT_SECRET}}"
issuers = ["user"]

[components.user]
source = "{user}"
routes = ["/users", {{ prefix = "/users/me", protected = true }}]
keyvalue = ["users"]

[components.product]
source = "{product}"
routes = [
  {{ prefix = "/products", methods = ["GET", "HEAD"] }},
  {{ prefix = "/products", methods = ["POST", "PATCH", "DELETE"], roles = ["admin"] }},
]
keyvalue = ["products"]

[components.probe]
source = "{probe}"
routes = [
  {{ prefix = "/probe", protected = true }},
  "/open",
  {{ prefix = "/mw", protected = true, middleware = ["audit"] }},
]
outbound = ["probe2"]
keyvalue = ["p"]

[components.probe2]
source = "{probe}"
keyvalue = ["p2"]

[components.audit]
source = "{audit}"
"#,
        user = component("user"),
        product = component("product"),
        probe = component("probe"),
        audit = component("audit"),
    )
}

/// `panal roles ARGS` against `panal`'s admin API: success, and what it printed.
fn roles(panal: &Panal, args: &[&str]) -> (bool, String) {
    cli(panal, &[&["roles"], args].concat())
}

/// `panal ARGS --admin` (of `panal`): success, and what it printed.
fn cli(panal: &Panal, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(panal_tests::panal_bin())
        .args(args)
        .args(["--admin", &panal.admin])
        .env_remove("PANAL_ADMIN_TOKEN")
        .output()
        .expect("panal");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn start(data: &std::path::Path) -> Panal {
    Panal::with(&manifest(), data)
        .env(&[("PANAL_TEST_JWT_SECRET", SECRET)])
        .start()
}

#[tokio::test]
async fn only_the_operator_grants_roles_and_a_revocation_counts_at_once() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let jar = json!({"name": "Jar", "price_cents": 500, "stock": 3});
    // Whoever registers first, with whatever email, is a plain user.
    let (ana, token) = shop.user("ana@example.com").await;
    let (s, me) = shop.get("/users/me", Some(&token)).await;
    assert_eq!((s, me["roles"].clone()), (StatusCode::OK, json!([])));
    let (s, e) = shop.post("/products", Some(&token), jar.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");

    // The operator makes Ana an admin: her token as it is now works.
    let (ok, out) = roles(&panal, &["grant", &ana, "admin"]);
    assert!(ok && out.contains("granted `admin`"), "{out}");
    let (s, p) = shop.post("/products", Some(&token), jar.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let (_, me) = shop.get("/users/me", Some(&token)).await;
    assert_eq!(me["roles"], json!(["admin"]));
    let (ok, out) = roles(&panal, &["list"]);
    assert!(ok && out.contains(&ana) && out.contains("admin"), "{out}");
    let (ok, out) = roles(&panal, &["grant", &ana, "a,b"]);
    assert!(!ok && out.contains("`a,b` is not a role name"), "{out}");

    // The roles reach the component and its in-process calls, with the caller named;
    // what a client or a guest writes in those headers is not what arrives.
    let c = &shop.c;
    let whoami = |path: &str, token: &str| {
        c.get(panal.at(path))
            .bearer_auth(token)
            .header("x-panal-roles", "root")
            .header("x-panal-caller", "order")
    };
    let direct: Value = whoami("/probe/whoami", &token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(direct["roles"], "admin", "{direct}");
    assert_eq!(direct["caller"], Value::Null, "{direct}");
    for forge in ["", "&forge=1"] {
        let path = format!("/probe/call?url=http://probe2/p/whoami{forge}");
        let called: Value = whoami(&path, &token)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let inner: Value =
            serde_json::from_str(called["body"].as_str().expect("body")).expect("json");
        assert_eq!(
            (&inner["user"], &inner["roles"], &inner["caller"]),
            (&json!(ana), &json!("admin"), &json!("probe")),
            "{inner}"
        );
    }
    let open: Value = c
        .get(panal.at("/open/whoami"))
        .header("x-panal-user-id", &ana)
        .header("x-panal-roles", "admin")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(open["user"], Value::Null, "{open}");
    assert_eq!(open["roles"], Value::Null, "{open}");

    // A middleware passes on what the gateway admitted, and nothing else.
    let through: Value = whoami("/mw/whoami", &token)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(
        (&through["roles"], &through["path"]),
        (&json!("admin"), &json!("/mw/whoami")),
        "{through}"
    );
    let rerouted = whoami("/mw/whoami", &token)
        .header("x-audit-reroute", "/mw/elsewhere")
        .send()
        .await
        .expect("get");
    assert_ne!(rerouted.status(), StatusCode::OK);
    assert!(
        panal
            .log()
            .contains("passed on DELETE /mw/elsewhere where the gateway admitted GET /mw/whoami"),
        "{}",
        panal.log()
    );

    // A token's own roles claim grants nothing.
    let (bob, _) = shop.user("bob@example.com").await;
    let claimed = panal_tests::sign_hs256(
        SECRET.as_bytes(),
        &json!({"sub": bob, "exp": u64::MAX / 2, "roles": ["admin"]}),
    );
    let (s, _) = shop.post("/products", Some(&claimed), jar.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Revoked: the same token is refused from the next request on; grants survive a
    // restart.
    assert!(roles(&panal, &["grant", &ana, "ops"]).0);
    let (ok, out) = roles(&panal, &["revoke", &ana, "admin"]);
    assert!(
        ok && out.contains("revoked `admin`") && out.contains("ops"),
        "{out}"
    );
    let (s, _) = shop.post("/products", Some(&token), jar.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (ok, out) = roles(&panal, &["revoke", &ana, "admin"]);
    assert!(ok && out.contains("did not hold"), "{out}");
    panal.stop();
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let (_, me) = shop.get("/users/me", Some(&token)).await;
    assert_eq!(me["roles"], json!(["ops"]), "{me}");
    panal.stop();
}

/// The shop's components check the role themselves: with the catalogue's route
/// redeployed without its roles, and its internal stock endpoint routed by mistake,
/// strangers still get 403 from the component.
#[tokio::test]
async fn the_shop_checks_roles_itself_when_a_route_forgets_them() {
    let data = tempfile::tempdir().expect("tmp");
    let panal = start(data.path());
    let shop = Shop {
        panal: &panal,
        c: client(),
    };
    let routes = data.path().join("open-routes.toml");
    std::fs::write(
        &routes,
        r#"routes = [{ prefix = "/products", protected = true }, "/internal"]"#,
    )
    .expect("write");
    let file = component("product");
    let (ok, out) = cli(
        &panal,
        &[
            "deploy",
            "product",
            &file,
            "--routes",
            &routes.display().to_string(),
        ],
    );
    assert!(ok, "{out}");
    let (bob, bob_token) = shop.user("bob@example.com").await;
    let jar = json!({"name": "Jar", "price_cents": 500, "stock": 3});
    let (s, e) = shop.post("/products", Some(&bob_token), jar.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert_eq!(e["reason"], "this needs the role `admin`", "{e}");
    panal.grant(&bob, "admin").await;
    let (s, p) = shop.post("/products", Some(&bob_token), jar).await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().expect("id");
    let reserve = json!({"order_id": "o1", "items": [{"product_id": id, "quantity": 3}]});
    let (s, e) = shop
        .post("/internal/reserve", Some(&token_of(&bob)), reserve)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    let (_, p) = shop.get(&format!("/products/{id}"), Some(&bob_token)).await;
    assert_eq!(p["stock"], 3, "{p}");
    panal.stop();
}

/// `panal deploy NAME FILE ARGS` through the real CLI.
fn deploy(panal: &Panal, name: &str, file: &std::path::Path, args: &[&str]) -> (bool, String) {
    let file = file.display().to_string();
    cli(panal, &[&["deploy", name, &file], args].concat())
}

/// A redeploy keeps a component's routes with their roles; bare `--route` prefixes are
/// refused for a running component; `--routes FILE` replaces them with complete routes,
/// checked like the manifest's.
#[tokio::test]
async fn a_redeploy_keeps_the_routes_and_their_roles() {
    let manifest = format!(
        r#"version = 1
[components.p]
source = "{}"
routes = [{{ prefix = "/p", roles = ["admin"] }}]
keyvalue = ["b"]
"#,
        component("probe")
    );
    let data = tempfile::tempdir().expect("dir");
    let panal = Panal::start(&manifest, data.path());
    let c = client();
    let status = |path: &'static str| {
        let url = panal.at(path);
        let c = c.clone();
        async move { c.get(url).send().await.expect("get").status().as_u16() }
    };
    assert_eq!(status("/p/config").await, 401);
    let files = tempfile::tempdir().expect("dir");
    let probe = std::fs::read(component("probe")).expect("probe");
    let write = |name: &str, bytes: &[u8]| {
        let path = files.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    };
    let v2 = write("v2.wasm", &panal_tests::variant(&probe, "v2"));

    let (ok, out) = deploy(&panal, "p", &v2, &["--route", "/p"]);
    assert!(
        !ok,
        "bare prefixes replaced a running component's routes: {out}"
    );
    assert!(out.contains("keeps its routes"), "{out}");
    assert_eq!(status("/p/config").await, 401);

    let (ok, out) = deploy(&panal, "p", &v2, &[]);
    assert!(ok, "{out}");
    assert_eq!(
        status("/p/config").await,
        401,
        "the redeploy dropped the route's roles"
    );

    let zero = write(
        "zero.toml",
        b"routes = [{ prefix = \"/q\", rate_limit = { per_ip = \"0/s\" } }]\n",
    );
    let v3 = write("v3.wasm", &panal_tests::variant(&probe, "v3"));
    let (ok, out) = deploy(&panal, "p", &v3, &["--routes", &zero.display().to_string()]);
    assert!(!ok && out.contains("rate_limit"), "{out}");

    let open = write(
        "open.toml",
        b"routes = [{ prefix = \"/q\", methods = [\"GET\"] }]\n",
    );
    let (ok, out) = deploy(&panal, "p", &v3, &["--routes", &open.display().to_string()]);
    assert!(ok, "{out}");
    assert_eq!(status("/q/config").await, 200);
    assert_eq!(status("/p/config").await, 404);
    panal.stop();
}
