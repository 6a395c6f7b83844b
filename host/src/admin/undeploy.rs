//! `DELETE /components/NAME`: stop serving it, here and (published) on the cluster's
//! other hosts, or through the cluster when it runs only elsewhere.

use panal_gateway::Body;

use super::{published_elsewhere, Admin};

impl Admin {
    /// Undeploy `name`.
    pub(super) async fn undeploy(&self, name: &str) -> http::Response<Body> {
        if let Some(cluster) = self.elsewhere(name) {
            let published = cluster.publish_undeploy(name).await.map(|()| None);
            return published_elsewhere(name, published);
        }
        self.changed(name, self.registry.undeploy(name), None).await
    }
}
