//! The shop's manifest and a small client of its API, shared by the shop and durable
//! messaging tests.

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

use crate::{component, Panal};

/// The shop's HS256 secret in tests.
pub const SECRET: &str = "test-secret-0123456789abcdef-xyz";

/// The shop paying over HTTP, its notification service on plain `orders.*` and
/// `shipments.*`, messaging in-process.
pub fn manifest() -> String {
    manifest_with("http", false)
}

/// The shop paying via `route` (`http` or `messaging`), the notification service's
/// subscriptions durable or not, messaging in-process.
pub fn manifest_with(route: &str, durable: bool) -> String {
    manifest_on(route, durable, "")
}

/// [`manifest_with`] with `messaging` (TOML lines: `backend`, `url`) in `[messaging]`.
/// Order events are in stream ORDERS and shipment events in SHIPMENTS either way; the
/// shipping service's `orders.paid` and the order service's `shipments.*` are always
/// durable subscriptions.
pub fn manifest_on(route: &str, durable: bool, messaging: &str) -> String {
    let notification_subs = if durable {
        r#"{ subject = "orders.*", durable = true }, { subject = "shipments.*", durable = true }"#
    } else {
        r#""orders.*", "shipments.*""#
    };
    format!(
        r#"version = 1
[messaging]
{messaging}
[messaging.streams.ORDERS]
subjects = ["orders.>"]
[messaging.streams.SHIPMENTS]
subjects = ["shipments.>"]

[gateway]
openapi = "{openapi}"

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

[components.order]
source = "{order}"
routes = [{{ prefix = "/orders", protected = true }}]
keyvalue = ["orders"]
outbound = ["product", "payment"]
messaging = {{ publish = ["orders.>", "payments.charge"], subscribe = [{{ subject = "shipments.*", durable = true }}] }}
config = {{ payment_via = "{route}" }}

[components.notification]
source = "{notification}"
routes = [{{ prefix = "/notifications", protected = true }}]
keyvalue = ["notifications"]
messaging = {{ subscribe = [{notification_subs}] }}

[components.shipping]
source = "{shipping}"
routes = [
  {{ prefix = "/shipments", methods = ["GET"], protected = true }},
  {{ prefix = "/shipments", methods = ["POST"], roles = ["admin"] }},
]
keyvalue = ["shipments"]
outbound = ["order"]
messaging = {{ publish = ["shipments.>"], subscribe = [{{ subject = "orders.paid", durable = true }}] }}
config = {{ carrier = "Test Post", tracking_prefix = "TST" }}
limits = {{ memory_mb = 128, reuse = 1000 }}

[components.payment]
source = "{payment}"
routes = [{{ prefix = "/payments", protected = true }}]
keyvalue = ["payments"]
messaging = {{ subscribe = [{{ subject = "payments.charge", queue = "payment" }}] }}

[components.probe]
source = "{probe}"
routes = ["/probe"]
keyvalue = ["default"]
# Publishes events of its own on the shop's subjects (forged ones, in tests).
messaging = {{ publish = ["orders.>"] }}

[components.storefront]
source = "{storefront}"
routes = [{{ prefix = "/orders/{{id}}/summary", methods = ["GET"], protected = true }}]
outbound = ["order", "product", "payment", "shipping"]

# The same summary with a payment part that cannot answer.
[components.storefront-broken]
source = "{storefront}"
routes = [{{ prefix = "/orders/{{id}}/broken-summary", methods = ["GET"], protected = true }}]
outbound = ["order", "product", "probe", "shipping"]
config = {{ payment = "probe" }}

[aggregates.me]
path = "/me/overview"
protected = true
parts = {{ profile = {{ component = "user", path = "/users/me" }}, orders = {{ component = "order", path = "/orders" }}, inbox = {{ component = "notification", path = "/notifications" }} }}
"#,
        user = component("user"),
        product = component("product"),
        order = component("order"),
        payment = component("payment"),
        notification = component("notification"),
        probe = component("probe"),
        storefront = component("storefront"),
        shipping = crate::guest("shipping"),
        openapi = crate::repo().join("openapi.json").display(),
    )
}

/// `manifest` without component `name`: its section gone, and its name gone from every
/// `outbound` list, and no OpenAPI document (it documents every component's routes):
/// the bench's shop without the shipping service.
pub fn without(manifest: &str, name: &str) -> String {
    let section = format!("[components.{name}]");
    let mut out = String::new();
    let mut skipping = false;
    for line in manifest.lines() {
        if line.starts_with('[') {
            skipping = line.trim() == section;
        }
        if !skipping && !line.starts_with("openapi =") {
            let line = line.replace(&format!(", \"{name}\""), "");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

/// The account the operator makes the shop's admin in tests.
pub const ADMIN: &str = "shop-admin";

/// A token of [`ADMIN`], after the operator granted it the `admin` role on `panal`.
pub async fn admin_token(panal: &Panal) -> String {
    panal.grant(ADMIN, "admin").await;
    token_of(ADMIN)
}

/// A token of `account`, signed with the test secret (a role claim would grant nothing).
pub fn token_of(account: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    crate::sign_hs256(SECRET.as_bytes(), &json!({"sub": account, "exp": exp}))
}

/// Start the shop manifest with the test secret.
pub fn start(data: &std::path::Path) -> Panal {
    Panal::with(&manifest(), data)
        .env(&[("PANAL_TEST_JWT_SECRET", SECRET)])
        .start()
}

/// A client of the shop's API.
pub struct Shop<'a> {
    /// The host.
    pub panal: &'a Panal,
    /// The HTTP client.
    pub c: Client,
}

impl Shop<'_> {
    /// Send `req`; the status and the JSON body (null when none).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let body = resp.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POST JSON to `path`, with a bearer token when given.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut req = self.c.post(self.panal.at(path)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// GET `path`, with a bearer token when given.
    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut req = self.c.get(self.panal.at(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        self.send(req).await
    }

    /// Register `email` and log in: (user id, token).
    pub async fn user(&self, email: &str) -> (String, String) {
        let (s, u) = self
            .post(
                "/users",
                None,
                json!({"email": email, "name": "Test", "password": "long enough"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{u}");
        assert!(u.get("password").is_none() && !u.to_string().contains("long enough"));
        let (s, login) = self
            .post(
                "/users/login",
                None,
                json!({"email": email, "password": "long enough"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{login}");
        assert!(login["expires_at"].is_number() || login["expires_at"].is_string());
        (
            u["id"].as_str().expect("id").to_string(),
            login["token"].as_str().expect("token").to_string(),
        )
    }

    /// Create a product (as an admin): its id.
    pub async fn product(&self, name: &str, price: i64, stock: i64) -> String {
        let (s, p) = self
            .post(
                "/products",
                Some(&admin_token(self.panal).await),
                json!({"name": name, "price_cents": price, "stock": stock}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        p["id"].as_str().expect("id").to_string()
    }

    /// The stock of product `id`.
    pub async fn stock(&self, id: &str) -> i64 {
        let (s, p) = self.get(&format!("/products/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{p}");
        p["stock"].as_i64().expect("stock")
    }

    /// Units of all paid orders of the user of `token` (one item per order).
    pub async fn paid_units(&self, token: &str) -> i64 {
        let (_, mine) = self.get("/orders", Some(token)).await;
        mine["items"]
            .as_array()
            .expect("orders")
            .iter()
            .filter(|o| o["status"] == "paid")
            .map(|o| o["items"][0]["quantity"].as_i64().expect("quantity"))
            .sum()
    }

    /// Place an order for `items` paid with `card`.
    pub async fn order(&self, token: &str, items: Value, card: &str) -> (StatusCode, Value) {
        self.post(
            "/orders",
            Some(token),
            json!({"items": items, "card_number": card}),
        )
        .await
    }
}

/// A connection to `component`'s SQLite file in the host's data dir `data` (the embedded
/// storage), to leave in it what a crash or a lost write would.
pub async fn storage_of(data: &std::path::Path, component: &str) -> sqlx::SqliteConnection {
    let path = data.join(format!("kv/{component}.sqlite"));
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .busy_timeout(std::time::Duration::from_secs(10));
    <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Removes payment `id`'s own record from the stopped host's SQLite file, leaving its
/// key's claim: what a charge leaves when its storage fails between the two writes.
pub async fn lose_payment_record(data: &std::path::Path, id: &str) {
    let mut conn = storage_of(data, "payment").await;
    let gone = sqlx::query("DELETE FROM kv WHERE bucket = 'payments' AND key = ?")
        .bind(format!("payment:{id}"))
        .execute(&mut conn)
        .await
        .expect("delete");
    assert_eq!(gone.rows_affected(), 1, "payment:{id} was stored");
}

/// Loses the user record a registration writes after claiming its email, as storage
/// failing between the two writes would (chaos seed 3, 30 minutes: the account's
/// logins failed with 401 for good).
pub async fn lose_user_record(data: &std::path::Path, email: &str) {
    let mut conn = storage_of(data, "user").await;
    let gone = sqlx::query(
        "DELETE FROM kv WHERE bucket = 'users' AND key LIKE 'user:%' AND CAST(value AS TEXT) LIKE ?",
    )
    .bind(format!("%\"{email}\"%"))
    .execute(&mut conn)
    .await
    .expect("delete");
    assert_eq!(gone.rows_affected(), 1, "{email}'s user record was stored");
}
