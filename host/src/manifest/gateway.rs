//! Validation of the manifest's gateway-level sections: `[auth]` (bearer tokens) and
//! `[aggregates.NAME]` (composite routes).

use std::collections::BTreeMap;

use toml::Spanned;

use super::raw::{RawAggregate, RawAuth};
use super::validate::{substitute_env, Checker};
use super::{AggregateSpec, Auth, ComponentSpec};

pub(super) fn auth(
    c: &mut Checker,
    raw: Option<RawAuth>,
    components: &[ComponentSpec],
    env: &dyn Fn(&str) -> Option<String>,
) -> Auth {
    let Some(raw) = raw else {
        return Auth::default();
    };
    let jwt_secret = raw
        .jwt_secret
        .and_then(|s| match substitute_env(s.get_ref(), env) {
            // Empty (e.g. `${PANAL_JWT_SECRET:-}` with the variable unset): generate one.
            Ok(v) if v.is_empty() => None,
            Ok(v) if v.len() < 16 => {
                c.problem(
                    Some(s.span()),
                    "auth.jwt_secret".into(),
                    "is too short: use at least 16 bytes (32 random bytes recommended)".into(),
                );
                None
            }
            Ok(v) => Some(v),
            Err(why) => {
                c.problem(Some(s.span()), "auth.jwt_secret".into(), why);
                None
            }
        });
    let mut issuers = Vec::new();
    for (i, name) in raw.issuers.iter().enumerate() {
        let field = format!("auth.issuers[{i}]");
        match components.iter().find(|comp| comp.name == *name.get_ref()) {
            None => c.problem(
                Some(name.span()),
                field,
                format!("`{}` is not a component of this manifest", name.get_ref()),
            ),
            Some(comp) if comp.config.iter().any(|(k, _)| k == "jwt_secret") => c.problem(
                Some(name.span()),
                field,
                format!(
                    "component `{}` already sets config `jwt_secret`; an issuer gets it from [auth]",
                    comp.name
                ),
            ),
            Some(comp) => issuers.push(comp.name.clone()),
        }
    }
    Auth {
        jwt_secret,
        issuers,
    }
}

pub(super) fn aggregates(
    c: &mut Checker,
    raw: BTreeMap<String, Spanned<RawAggregate>>,
    names: &[String],
) -> Vec<AggregateSpec> {
    let mut out = Vec::new();
    for (name, agg) in raw {
        let agg = agg.into_inner();
        let field = |f: &str| format!("aggregates.{name}.{f}");
        if agg.kind.get_ref() != "order-summary" {
            c.problem(
                Some(agg.kind.span()),
                field("kind"),
                format!(
                    "unknown aggregate kind `{}`; expected `order-summary`",
                    agg.kind.get_ref()
                ),
            );
            continue;
        }
        let mut part = |f: &str, v: &Spanned<String>| {
            if !names.contains(v.get_ref()) {
                c.problem(
                    Some(v.span()),
                    field(f),
                    format!("`{}` is not a component of this manifest", v.get_ref()),
                );
            }
            v.get_ref().clone()
        };
        let kind = panal_gateway::aggregate::Kind::OrderSummary {
            order: part("order", &agg.order),
            product: part("product", &agg.product),
            payment: part("payment", &agg.payment),
        };
        match panal_gateway::aggregate::Aggregate::new(
            agg.path.get_ref(),
            agg.protected,
            kind.clone(),
        ) {
            Ok(_) => out.push(AggregateSpec {
                name: name.clone(),
                path: agg.path.get_ref().clone(),
                protected: agg.protected,
                kind,
            }),
            Err(why) => c.problem(Some(agg.path.span()), field("path"), why),
        }
    }
    out
}
