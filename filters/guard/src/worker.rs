//! What the guard keeps per worker, beside its compiled config: the request model, the
//! sidecar key for the calls that need it, metric ids by name and the model labels given out;
//! and the metering every route does through it.

use crate::config::Config;
use crate::meter::Usage;
use cxgate_model::{Io, Model};
use std::cell::RefCell;
use std::rc::Rc;

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) model: Rc<Model>,
    /// For calls to the sidecar (`sidecar_key` endpoints), from the VM environment.
    pub(crate) sidecar_key: Option<String>,
    /// Metric ids by name, defined on first use (names carry model and consumer). A few
    /// dozen names per worker, so a vector is enough.
    metrics: RefCell<Vec<(String, u32)>>,
    /// Unpriced model labels given out so far (see [`Shared::model_label`]).
    models: RefCell<Vec<String>>,
}

/// Unpriced model names labelled as they are, per worker; later ones are `other`.
pub const MODEL_LABELS: usize = 16;

/// A metric name part: letters, digits, `-` and `_` only (Envoy splits names at dots).
pub(crate) fn part(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".into()
    } else {
        cleaned
    }
}

impl Shared {
    pub(crate) fn new(config: Config, model: Rc<Model>, sidecar_key: Option<String>) -> Shared {
        Shared {
            config,
            model,
            sidecar_key,
            metrics: RefCell::new(Vec::new()),
            models: RefCell::new(Vec::new()),
        }
    }

    /// The model comes from the request body and each label makes stats the proxy keeps for
    /// good, so only priced models and the first [`MODEL_LABELS`] others get their own.
    fn model_label(&self, model: &str) -> String {
        let label = part(model);
        if self.config.price(model).is_some() {
            return label;
        }
        let mut seen = self.models.borrow_mut();
        if seen.contains(&label) {
            return label;
        }
        if seen.len() < MODEL_LABELS {
            seen.push(label.clone());
            return label;
        }
        "other".into()
    }

    pub(crate) fn count(&self, io: &mut Io<'_>, name: &str, by: u64) {
        let id = self.id(io, name, false);
        if let Some(id) = id {
            let _ = io
                .metrics
                .increment(id, i64::try_from(by).unwrap_or(i64::MAX));
        }
    }
    pub(crate) fn observe(&self, io: &mut Io<'_>, name: &str, value: u64) {
        if let Some(id) = self.id(io, name, true) {
            let _ = io.metrics.record(id, value);
        }
    }
    fn id(&self, io: &mut Io<'_>, name: &str, histogram: bool) -> Option<u32> {
        let mut ids = self.metrics.borrow_mut();
        if let Some((_, id)) = ids.iter().find(|(n, _)| n == name) {
            return Some(*id);
        }
        let id = if histogram {
            io.metrics.histogram(name)
        } else {
            io.metrics.counter(name)
        }
        .ok()?;
        ids.push((name.to_string(), id));
        Some(id)
    }

    /// Counts one model call's tokens and cost under its model and consumer labels, and
    /// returns the cost in micro-dollars.
    pub(crate) fn meter(&self, io: &mut Io<'_>, model: &str, consumer: &str, usage: &Usage) -> u64 {
        let price = self.config.price(model).unwrap_or_default();
        let cost = price.cost_micros(usage);
        let labels = format!(
            "model_{}.consumer_{}",
            self.model_label(model),
            part(consumer)
        );
        self.count(
            io,
            &format!("cxgate_llm.tokens.kind_prompt.{labels}"),
            usage.prompt,
        );
        self.count(
            io,
            &format!("cxgate_llm.tokens.kind_completion.{labels}"),
            usage.completion,
        );
        self.count(io, &format!("cxgate_llm.cost_micros.{labels}"), cost);
        if usage.estimated {
            self.count(io, "cxgate_llm.estimated_usage", 1);
        }
        cost
    }

    /// The cost of a call without counting it (the reply reports it; `meter` counts it).
    pub(crate) fn cost(&self, model: &str, usage: &Usage) -> u64 {
        self.config
            .price(model)
            .unwrap_or_default()
            .cost_micros(usage)
    }
}
