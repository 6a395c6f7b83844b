//! The clients of a chaos run: each registers users and places orders through a random
//! gateway, every order with an `Idempotency-Key` that its retries repeat (through any
//! gateway) until the shop gives a final answer, and sometimes reads an acknowledged
//! order back. Everything they saw goes into the [`History`] the checker reads.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::nemesis::Rng;
use super::world::Gateways;

/// Orders one user places before its client registers the next (an inbox keeps 1000).
const ORDERS_PER_USER: u32 = 40;
/// How long a client repeats one order after the run stopped asking for new ones.
pub const SETTLE: Duration = Duration::from_secs(45);
/// The card payment declines.
pub const DECLINED: &str = "4000000000000002";
const CARD: &str = "4242424242424242";

/// How one order ended for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 201 or 200 with the order: its id and status then.
    Acked {
        /// The order's id.
        id: String,
        /// Its status in the answer.
        status: String,
    },
    /// 409: not enough stock; nothing was placed.
    Rejected,
    /// No final answer before the client gave up: it may or may not exist.
    Unknown,
}

/// One order a client tried to place.
#[derive(Debug, Clone)]
pub struct Placed {
    /// Its Idempotency-Key.
    pub key: String,
    /// The one product it ordered.
    pub product: String,
    /// How many.
    pub quantity: u64,
    /// Paid with the card payment declines.
    pub declined: bool,
    /// How it ended.
    pub outcome: Outcome,
}

/// What every client saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every order tried.
    pub orders: Vec<Placed>,
    /// Requests sent, answered or not.
    pub requests: u64,
    /// Errors by kind (`503`, `504`, `timeout`, `connect`, ...), allowed ones.
    pub errors: BTreeMap<String, u64>,
    /// 503s without `Retry-After`, by their `error` text.
    pub no_retry_after: BTreeMap<String, u64>,
    /// Answers the shop must never give (a 500, a lost acknowledged order, ...).
    pub wrong: Vec<String>,
}

/// Shared by the clients.
pub type History = Arc<Mutex<Seen>>;

/// The products and what the clients need to order them.
#[derive(Clone)]
pub struct Shop {
    /// Where to send requests.
    pub gateways: Gateways,
    /// What to order.
    pub products: Vec<String>,
    /// Draws each client's choices.
    pub seed: u64,
}

/// Run `clients` clients until `stop` is set, then let each finish its order (up to
/// [`SETTLE`]). Returns when all are done.
pub async fn run(shop: Shop, clients: usize, stop: tokio::sync::watch::Receiver<bool>) -> History {
    let history = History::default();
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let (shop, history, stop) = (shop.clone(), history.clone(), stop.clone());
            tokio::spawn(async move { client(i, shop, history, stop).await })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    history
}

struct Client {
    id: usize,
    http: reqwest::Client,
    rng: Rng,
    shop: Shop,
    history: History,
    stop: tokio::sync::watch::Receiver<bool>,
}

async fn client(id: usize, shop: Shop, history: History, stop: tokio::sync::watch::Receiver<bool>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let rng = Rng::new(shop.seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9));
    let mut me = Client {
        id,
        http,
        rng,
        shop,
        history,
        stop,
    };
    let mut user = 0;
    while !me.stopped() {
        user += 1;
        let Some(token) = me.register(user).await else {
            break;
        };
        for n in 0..ORDERS_PER_USER {
            if me.stopped() {
                break;
            }
            me.place(&token, user, n).await;
        }
    }
}

/// An answer's status, or the kind of failure.
enum Answer {
    Status(u16, Option<String>, Value),
    Failed(&'static str),
}

impl Client {
    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    fn gateway(&mut self) -> (usize, String) {
        let gateways = self.shop.gateways.read().expect("gateways").clone();
        let h = self.rng.below(gateways.len());
        (h, gateways[h].clone())
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Answer {
        self.history.lock().expect("history").requests += 1;
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = resp.json().await.unwrap_or(Value::Null);
                if status == 503 && retry_after.is_none() {
                    let why = body["error"].as_str().unwrap_or("(no error text)");
                    let mut seen = self.history.lock().expect("history");
                    *seen.no_retry_after.entry(why.to_string()).or_default() += 1;
                }
                Answer::Status(status, retry_after, body)
            }
            Err(e) if e.is_timeout() => Answer::Failed("timeout"),
            Err(e) if e.is_connect() => Answer::Failed("connect"),
            Err(_) => Answer::Failed("connection lost"),
        }
    }

    /// Counts an allowed error; a pause before trying again (Retry-After, capped).
    fn error(&mut self, kind: String, retry_after: Option<&str>) -> Duration {
        let mut seen = self.history.lock().expect("history");
        *seen.errors.entry(kind).or_default() += 1;
        let asked = retry_after.and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        Duration::from_millis((asked * 1000).clamp(100, 1000))
    }

    fn wrong(&self, what: String) {
        self.history.lock().expect("history").wrong.push(what);
    }

    /// Register user `n` of this client and log in: its token (None once stopped).
    async fn register(&mut self, n: u32) -> Option<String> {
        let email = format!("c{}-{n}-{}@example.com", self.id, self.shop.seed);
        let user = json!({"email": email, "name": "Chaos", "password": "long enough"});
        let login = json!({"email": email, "password": "long enough"});
        let mut registered = false;
        while !self.stopped() {
            let (h, url) = self.gateway();
            let (path, body) = if registered {
                ("/users/login", &login)
            } else {
                ("/users", &user)
            };
            let req = self.http.post(format!("{url}{path}")).json(body);
            let pause = match self.send(req).await {
                Answer::Status(201 | 409, ..) if !registered => {
                    registered = true;
                    continue;
                }
                Answer::Status(200, _, body) if registered => {
                    return body["token"].as_str().map(str::to_string);
                }
                Answer::Status(s @ (502..=504), ra, _) => self.error(s.to_string(), ra.as_deref()),
                Answer::Failed(kind) => self.error(kind.to_string(), None),
                Answer::Status(s, _, body) => {
                    self.wrong(format!("POST {path} via host {h}: {s} {body}"));
                    Duration::from_millis(500)
                }
            };
            tokio::time::sleep(pause).await;
        }
        None
    }

    /// Place order `n` of user `user` until it has a final answer (or gives up).
    async fn place(&mut self, token: &str, user: u32, n: u32) {
        let product = self.shop.products[self.rng.below(self.shop.products.len())].clone();
        let quantity = 1 + self.rng.below(3) as u64;
        let declined = self.rng.below(10) == 0;
        let card = if declined { DECLINED } else { CARD };
        let key = format!("c{}-u{user}-o{n}", self.id);
        let body =
            json!({"items": [{"product_id": product, "quantity": quantity}], "card_number": card});
        let mut outcome = Outcome::Unknown;
        let mut given_up: Option<Instant> = None;
        loop {
            let (h, url) = self.gateway();
            let req = self
                .http
                .post(format!("{url}/orders"))
                .bearer_auth(token)
                .header("idempotency-key", &key)
                .json(&body);
            let pause = match self.send(req).await {
                Answer::Status(200 | 201, _, order) => {
                    outcome = self.acked(h, &order, &product, quantity, declined);
                    break;
                }
                Answer::Status(409, _, _) => {
                    outcome = Outcome::Rejected;
                    break;
                }
                Answer::Status(s @ (502..=504), ra, _) => self.error(s.to_string(), ra.as_deref()),
                Answer::Failed(kind) => self.error(kind.to_string(), None),
                Answer::Status(s, _, body) => {
                    self.wrong(format!("POST /orders ({key}) via host {h}: {s} {body}"));
                    Duration::from_millis(500)
                }
            };
            if self.stopped() {
                let since = *given_up.get_or_insert_with(Instant::now);
                if since.elapsed() > SETTLE {
                    break;
                }
            }
            tokio::time::sleep(pause).await;
        }
        if let Outcome::Acked { id, .. } = &outcome {
            if self.rng.below(3) == 0 {
                self.follow(token, id).await;
            }
        }
        let placed = Placed {
            key,
            product,
            quantity,
            declined,
            outcome,
        };
        self.history.lock().expect("history").orders.push(placed);
    }

    /// Checks an acknowledged order's answer; what the client keeps of it.
    fn acked(
        &self,
        h: usize,
        order: &Value,
        product: &str,
        quantity: u64,
        declined: bool,
    ) -> Outcome {
        let id = order["id"].as_str().unwrap_or_default().to_string();
        let status = order["status"].as_str().unwrap_or_default().to_string();
        let line = &order["items"][0];
        let same = line["product_id"] == product && line["quantity"] == quantity;
        let plausible = match status.as_str() {
            "paid" => !declined,
            "payment_failed" => true,
            "pending" => true,
            _ => false,
        };
        if id.is_empty() || !same || !plausible {
            self.wrong(format!(
                "POST /orders via host {h} answered {order} (declined card: {declined})"
            ));
        }
        Outcome::Acked { id, status }
    }

    /// Read acknowledged order `id` back through a random gateway.
    async fn follow(&mut self, token: &str, id: &str) {
        let (h, url) = self.gateway();
        let req = self
            .http
            .get(format!("{url}/orders/{id}"))
            .bearer_auth(token);
        match self.send(req).await {
            Answer::Status(200, _, order) if order["id"] == id => {}
            Answer::Status(s @ (502..=504), ra, _) => {
                self.error(s.to_string(), ra.as_deref());
            }
            Answer::Failed(kind) => {
                self.error(kind.to_string(), None);
            }
            Answer::Status(s, _, body) => {
                self.wrong(format!("GET /orders/{id} via host {h}: {s} {body}"));
            }
        }
    }
}
