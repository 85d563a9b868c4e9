//! The authorization stage: a consumer may use a route only with every scope it requires.

use crate::exchange::Exchange;
use crate::stage::{Build, Flow, Io, Stage, StageKind, StageStream};
use cxgate_kit::ConfigError;
use cxgate_kit::log::{Event, Level};
use serde_json::{Value, json};
use std::rc::Rc;

pub const KIND: StageKind = StageKind {
    name: "authz",
    build,
};

struct Shared {
    model: Rc<crate::Model>,
    denied: u32,
}

struct Authz(Rc<Shared>);

fn build(section: Value, b: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    if !section.is_null() && section != json!({}) {
        return Err(ConfigError::at(
            "/authz",
            "the authz stage has no settings: scopes live in /model",
        ));
    }
    let denied = b.metrics.counter("cxgate_authz.denied").unwrap_or_default();
    Ok(Box::new(Authz(Rc::new(Shared {
        model: b.model.clone(),
        denied,
    }))))
}

impl Stage for Authz {
    fn name(&self) -> &'static str {
        "authz"
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(AuthzStream(self.0.clone()))
    }
}

struct AuthzStream(Rc<Shared>);

impl StageStream for AuthzStream {
    fn on_request(&mut self, x: &mut Exchange, io: &mut Io<'_>) -> Flow {
        let model = &self.0.model;
        let Some(route) = x.route(model) else {
            return Flow::Continue;
        };
        let consumer = x.consumer(model);
        let missing: Vec<&str> = route
            .scopes
            .iter()
            .filter(|s| !consumer.has_scope(s))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            return Flow::Continue;
        }
        let _ = io.metrics.increment(self.0.denied, 1);
        io.log.event(
            Level::Info,
            &Event::new("AUTHZ_DENIED")
                .str("consumer", &x.consumer)
                .str("route", &route.id)
                .str("missing", &missing.join(" ")),
        );
        let p = x
            .problem(
                403,
                "forbidden",
                "Forbidden",
                format!(
                    "{} may not use route {}: it lacks the scope {}. Nothing was forwarded.",
                    x.consumer,
                    route.id,
                    missing.join(", ")
                ),
            )
            .with_extra("route", json!(route.id))
            .with_extra("missing_scopes", json!(missing));
        Flow::Reply(p.into_reply())
    }
}
