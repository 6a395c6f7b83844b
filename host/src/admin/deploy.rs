//! `PUT /components/NAME?route=/p&protected_route=/q&keyvalue=b&outbound=c&publish=s`
//! with the `.wasm` as body: deploy (replace, keeping its routes, or add with those
//! routes and grants); `routes=` (`routes = [...]` as in the manifest) gives complete
//! routes, which replace a running component's. A component that runs only on other
//! hosts of the cluster is deployed through the cluster.

use http_body_util::{BodyExt, Limited};
use panal_gateway::Body;

use super::{bad_request, published_elsewhere, Admin, MAX_UPLOAD};
use crate::registry::deploy::DeployRequest;
use crate::registry::store::Grants;

impl Admin {
    /// Deploy `name` from the request's body.
    pub(super) async fn deploy(
        &self,
        name: &str,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Body> {
        let query = req.uri().query().unwrap_or("");
        let (deploy, bare) = match deploy_request(query, name, &self.registry.names()) {
            Ok(d) => d,
            Err(why) => return bad_request(&why),
        };
        if bare && (self.registry.current(name).is_some() || self.elsewhere(name).is_some()) {
            return bad_request(&format!(
                "`{name}` is running, and a redeploy keeps its routes with their roles, \
                 methods, middleware and rate limits; bare prefixes (route, \
                 protected_route) only start a new component. To replace its routes, \
                 give them complete: `panal deploy {name} FILE --routes ROUTES.toml` \
                 (`routes = [...]` as in the manifest)"
            ));
        }
        let bytes = match Limited::new(req.into_body(), MAX_UPLOAD).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return bad_request(&format!("cannot read the upload: {e}")),
        };
        // The routes a deploy sets, which the cluster's other hosts take too.
        let routes = deploy.routes.clone();
        if let Some(cluster) = self.elsewhere(name) {
            let published = cluster
                .publish_elsewhere(&self.registry, name, &bytes, routes.as_deref())
                .await;
            return published_elsewhere(name, published.map(Some));
        }
        let change = self.registry.deploy(name, &bytes, deploy);
        self.changed(name, change, routes.as_deref()).await
    }
}

/// Routes and grants from the query string, and whether the routes were bare prefixes
/// (`route`, `protected_route`: only for a new component) rather than complete ones
/// (`routes`: `routes = [...]` in the manifest's syntax and rules; `names`: the
/// components a middleware may name).
fn deploy_request(
    query: &str,
    name: &str,
    names: &[String],
) -> Result<(DeployRequest, bool), String> {
    let mut routes = Vec::new();
    let mut complete = None;
    let mut grants = Grants::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "routes" if complete.is_none() => {
                let label = std::path::Path::new("routes");
                let parsed = crate::manifest::Manifest::routes(label, &value, name, names)
                    .map_err(|e| e.to_string())?;
                complete = Some(parsed);
            }
            "route" | "protected_route" => routes.push(panal_gateway::Route {
                prefix: value,
                methods: None,
                component: name.to_string(),
                protected: key == "protected_route",
                roles: Vec::new(),
                rate_limit: None,
                middleware: Vec::new(),
            }),
            "keyvalue" => grants.keyvalue.push(value),
            "outbound" => grants.outbound.push(value),
            "publish" => {
                if let Some(why) = crate::manifest::subject::unusable(&value, true) {
                    return Err(format!("publish: {why}"));
                }
                grants.publish.push(value);
            }
            other => return Err(format!("unknown or repeated parameter `{other}`")),
        }
    }
    let bare = !routes.is_empty();
    if bare && complete.is_some() {
        return Err(
            "give either complete routes (routes) or bare prefixes (route), not both".into(),
        );
    }
    let routes = complete.or((!routes.is_empty()).then_some(routes));
    Ok((DeployRequest { routes, grants }, bare))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_parameters_are_read_and_checked() {
        let names = ["c".to_string(), "audit".to_string()];
        let (d, bare) = deploy_request(
            "route=%2Fa&protected_route=/b&keyvalue=kv&publish=x.*",
            "c",
            &names,
        )
        .expect("ok");
        assert!(bare);
        let routes = d.routes.expect("routes");
        assert_eq!(routes[0].prefix, "/a");
        assert!(routes[1].protected);
        assert_eq!(d.grants.keyvalue, ["kv"]);
        assert!(deploy_request("routes=/a", "c", &names).is_err());
        assert!(deploy_request("publish=a..b", "c", &names).is_err());
        let complete = "routes = [{ prefix = \"/p\", methods = [\"POST\"], roles = [\"admin\"], middleware = [\"audit\"] }]";
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("routes", complete)
            .finish();
        let (d, bare) = deploy_request(&query, "c", &names).expect("complete");
        assert!(!bare);
        let route = &d.routes.expect("routes")[0];
        assert!(route.protected && route.roles == ["admin"] && route.middleware == ["audit"]);
        let zero = "routes = [{ prefix = \"/p\", rate_limit = { per_ip = \"0/s\" } }]";
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("routes", zero)
            .finish();
        let err = deploy_request(&query, "c", &names).expect_err("a rate of 0");
        assert!(err.contains("components.c.routes[0].rate_limit"), "{err}");
    }
}
