//! Clients looping one request, counting the answers that succeeded (2xx) and keeping
//! when and why each of the others failed, so tests can judge a failover or a swap
//! under load by what the clients saw.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One failed request: when it started, when it ended, and why it failed.
pub type Failure = (Instant, Instant, String);

/// The clients, running until [`Load::stop`].
pub struct Load {
    /// Requests that succeeded.
    pub ok: Arc<AtomicUsize>,
    /// Requests that failed.
    pub failed: Arc<AtomicUsize>,
    /// Every failed request.
    pub failures: Arc<Mutex<Vec<Failure>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `clients` clients looping GETs on `url`.
    pub fn start(url: &str, clients: usize) -> Self {
        let url = url.to_string();
        Self::start_with(clients, move |c| c.get(&url))
    }

    /// `clients` clients looping the request `make` builds.
    pub fn start_with<F>(clients: usize, make: F) -> Self
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
                let (failures, make) = (failures.clone(), make.clone());
                tokio::spawn(async move {
                    let c = crate::client();
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let answer = make(&c).send().await;
                        if answer.as_ref().is_ok_and(|r| r.status().is_success()) {
                            ok.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        failed.fetch_add(1, Ordering::Relaxed);
                        let why = match answer {
                            Ok(r) => {
                                format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                            }
                            Err(e) => e.to_string(),
                        };
                        if let Ok(mut f) = failures.lock() {
                            f.push((started, Instant::now(), why));
                        }
                    }
                })
            })
            .collect();
        Self {
            ok,
            failed,
            failures,
            stop,
            tasks,
        }
    }

    /// Wait until `n` requests have succeeded (60 s at most).
    pub async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.ok.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the load stalled");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Requests that succeeded so far.
    pub fn succeeded(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stop the clients, letting each finish its request; (succeeded, failed).
    pub async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}
