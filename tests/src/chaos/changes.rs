//! Deploys and rollbacks of `product` during a chaos run, and the check that after
//! healing every host serves the last one acknowledged (or one sent after it whose
//! answer was lost), and never a version nobody deployed.

use std::time::{Duration, Instant};

use super::check::Verdict;
use super::nemesis::Change;
use super::world::World;
use crate::{sha_prefix, variant};

/// What one change came to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 200, and the version it left (None: the answer did not say).
    Acked(Option<String>),
    /// Refused with a 4xx: nothing changed.
    Refused,
    /// No answer, or a 5xx: it may have taken effect.
    Unknown,
}

/// A change on its way: its answer comes from `task`.
pub struct Sending {
    change: Change,
    deployed: Option<String>,
    task: tokio::task::JoinHandle<Answer>,
}

/// Every change sent, in order.
pub struct Changes {
    original: Vec<u8>,
    initial: String,
    sent: Vec<(Change, Option<String>, Answer)>,
    http: reqwest::Client,
}

impl Changes {
    /// `original`: the product build every host started with.
    pub fn new(original: Vec<u8>) -> Self {
        let initial = sha_prefix(&original);
        Self {
            original,
            initial,
            sent: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
        }
    }

    /// How many were sent and how many acknowledged.
    pub fn counts(&self) -> (usize, usize) {
        let acked = self
            .sent
            .iter()
            .filter(|(_, _, a)| matches!(a, Answer::Acked(_)))
            .count();
        (self.sent.len(), acked)
    }

    /// Send `change` through its host (nothing when that host is down), in a task of
    /// its own: a change sent to a paused or cut-off host may wait for its answer
    /// longer than the fault lasts, and must not hold back the heal. [`Self::answered`]
    /// records what came of it.
    pub fn send(&mut self, world: &World, change: Change) -> Option<Sending> {
        let (h, rollback) = match change {
            Change::Deploy(h) => (h, false),
            Change::Rollback(h) => (h, true),
        };
        let admin = world.admin(h)?;
        let (req, deployed) = if rollback {
            let url = format!("{admin}/components/product/rollback");
            (self.http.post(url), None)
        } else {
            let bytes = variant(&self.original, &format!("chaos-{}", self.sent.len()));
            let version = sha_prefix(&bytes);
            let url = format!("{admin}/components/product");
            (self.http.put(url).body(bytes), Some(version))
        };
        let said_version = deployed.clone();
        let task = tokio::spawn(async move {
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    let said = body["version"]
                        .as_str()
                        .map(|v| v[..v.len().min(12)].to_string());
                    Answer::Acked(said.or(said_version))
                }
                Ok(r) if r.status().is_client_error() => Answer::Refused,
                _ => Answer::Unknown,
            }
        });
        Some(Sending {
            change,
            deployed,
            task,
        })
    }

    /// Record what came of a change sent with [`Self::send`], once it is answered.
    pub async fn answered(&mut self, sending: Sending) {
        let answer = sending.task.await.unwrap_or(Answer::Unknown);
        self.sent.push((sending.change, sending.deployed, answer));
    }

    /// The versions a host may serve after healing: the last acknowledged one (the
    /// initial one when none was), and any sent after it whose answer was lost.
    fn acceptable(&self) -> Vec<String> {
        let last = self
            .sent
            .iter()
            .rposition(|(_, _, a)| matches!(a, Answer::Acked(_)));
        let mut ok = match last.map(|i| &self.sent[i].2) {
            Some(Answer::Acked(Some(v))) => vec![v.clone()],
            Some(_) => self.known(),
            None => vec![self.initial.clone()],
        };
        let after = last.map_or(0, |i| i + 1);
        for (change, deployed, answer) in &self.sent[after..] {
            if *answer == Answer::Unknown {
                match (change, deployed) {
                    (Change::Deploy(_), Some(v)) => ok.push(v.clone()),
                    // A rollback whose answer was lost may have left any earlier version.
                    _ => ok.extend(self.known()),
                }
            }
        }
        ok
    }

    /// Every version anyone deployed.
    fn known(&self) -> Vec<String> {
        let deployed = self.sent.iter().filter_map(|(_, v, _)| v.clone());
        std::iter::once(self.initial.clone())
            .chain(deployed)
            .collect()
    }

    /// After healing: every product host reports one version, every gateway serves it
    /// (within 30 s), and it is one of [`Changes::acceptable`].
    pub async fn check(&self, world: &World, product: &str) -> Verdict {
        let ok = self.acceptable();
        let known = self.known();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut v = Verdict::default();
        loop {
            let seen = self.served(world, product).await;
            let agreed = seen.windows(2).all(|w| w[0] == w[1]);
            let fine = agreed && seen[0].as_ref().is_some_and(|s| ok.contains(s));
            if fine || Instant::now() > deadline {
                v.checked = seen.len() as u64;
                if !fine {
                    v.violations.push(format!(
                        "hosts and gateways serve {seen:?}; acceptable: {ok:?}; deployed at all: {known:?}; changes: {:?}",
                        self.sent
                    ));
                }
                return v;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What each product host says it runs, then what each gateway answers with.
    async fn served(&self, world: &World, product: &str) -> Vec<Option<String>> {
        let mut out = Vec::new();
        if let Some(admin) = world.admin(1) {
            let status: serde_json::Value =
                match self.http.get(format!("{admin}/components")).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
            let hosts = status["hosts"].as_array().cloned().unwrap_or_default();
            for host in hosts {
                for c in host["components"].as_array().into_iter().flatten() {
                    if c["name"] == "product" {
                        out.push(
                            c["version"]
                                .as_str()
                                .map(|v| v[..v.len().min(12)].to_string()),
                        );
                    }
                }
            }
        }
        if out.len() != 2 {
            out.push(None);
        }
        for h in 0..super::world::HOSTS {
            let Some(host) = world.host(h) else {
                out.push(None);
                continue;
            };
            let answer = self
                .http
                .get(host.at(&format!("/products/{product}")))
                .send()
                .await;
            out.push(answer.ok().and_then(|r| {
                r.headers()
                    .get("x-panal-version")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            }));
        }
        out
    }
}
