//! `POST /components/NAME/rollback`: back to the version before the current one, here
//! and (published) on the cluster's other hosts. A component that runs only elsewhere
//! is rolled back on one of its own hosts.

use panal_gateway::Body;

use super::{published_elsewhere, Admin};

impl Admin {
    /// Roll `name` back.
    pub(super) async fn rollback(&self, name: &str) -> http::Response<Body> {
        if self.elsewhere(name).is_some() {
            let why = "it runs only on other hosts of the cluster: send the rollback to \
                       one of them (`panal status` lists them)";
            return published_elsewhere(name, Err(why));
        }
        self.changed(name, self.registry.rollback(name), None).await
    }
}
