//! `GET /components`: every component with its version, routes and counters, and in a
//! cluster the hosts and what each runs (`panal status`).

use http::StatusCode;
use panal_gateway::{json_response, Body};
use serde_json::json;

use super::Admin;

impl Admin {
    /// What runs here (and in the cluster).
    pub(super) async fn status(&self) -> http::Response<Body> {
        let mut status = self.registry.status();
        if let Some(cluster) = &self.cluster {
            status["hosts"] = json!(cluster.hosts().await);
        }
        json_response(StatusCode::OK, &status)
    }
}
