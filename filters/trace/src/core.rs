//! The trace filter's pure core.

use cxgate_kit::HostError;
use cxgate_kit::config;
use cxgate_kit::host::{Entropy, Headers};
use cxgate_kit::ids::{TraceParent, is_valid_gateway_trace_id, random_hex};
use serde::Deserialize;
use serde_json::{Value, json};

pub const TRACEPARENT: &str = "traceparent";

/// The stage's settings (`trace` in the config document; the header name is the model's).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_true")]
    echo_in_response: bool,
}

fn default_true() -> bool {
    true
}

/// The compiled, immutable config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Lowercase header name carrying the gateway trace id (the model's `trace_header`).
    pub trace_header: String,
    /// Also return the trace id on the response, so consumers can quote it.
    pub echo_in_response: bool,
}

impl Config {
    /// `section` is the document's `trace` object (`Null`: all defaults).
    pub fn compile(trace_header: &str, section: Value) -> Result<Config, cxgate_kit::ConfigError> {
        let section = if section.is_null() {
            json!({})
        } else {
            section
        };
        let raw: RawConfig = config::from_value(section, "/trace")?;
        Ok(Config {
            trace_header: trace_header.to_ascii_lowercase(),
            echo_in_response: raw.echo_in_response,
        })
    }
}

/// What the filter decided for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub trace_id: String,
    pub traceparent: String,
    /// The gateway trace id was made here (absent or invalid on arrival).
    pub generated_id: bool,
    /// The traceparent was made here (absent or invalid on arrival).
    pub generated_traceparent: bool,
}

/// Ensures both headers on the request. A valid consumer trace id wins; otherwise a valid
/// traceparent's trace id is reused, so both headers name one trace.
pub fn on_request<H, E>(
    cfg: &Config,
    headers: &mut H,
    entropy: &mut E,
) -> Result<Decision, HostError>
where
    H: Headers + ?Sized,
    E: Entropy + ?Sized,
{
    let inbound_id = headers
        .get(&cfg.trace_header)?
        .filter(|id| is_valid_gateway_trace_id(id));
    let inbound_tp = headers
        .get(TRACEPARENT)?
        .and_then(|v| TraceParent::parse(&v));

    let (trace_id, generated_id) = match (&inbound_id, &inbound_tp) {
        (Some(id), _) => (id.clone(), false),
        (None, Some(tp)) => (tp.trace_id.clone(), true),
        (None, None) => (random_hex(entropy, 16)?, true),
    };
    let (traceparent, generated_traceparent) = match inbound_tp {
        Some(tp) => (tp.render(), false),
        None => {
            // Reuse the gateway id as the W3C trace id when it has that shape.
            let w3c_id = if TraceParent::is_trace_id(&trace_id) {
                trace_id.clone()
            } else {
                random_hex(entropy, 16)?
            };
            let tp = TraceParent {
                trace_id: w3c_id,
                parent_id: random_hex(entropy, 8)?,
                flags: "01".into(),
            };
            (tp.render(), true)
        }
    };
    if generated_id {
        headers.set(&cfg.trace_header, &trace_id)?;
    }
    if generated_traceparent {
        headers.set(TRACEPARENT, &traceparent)?;
    }
    Ok(Decision {
        trace_id,
        traceparent,
        generated_id,
        generated_traceparent,
    })
}

/// Echoes the trace id on the response when configured.
pub fn on_response<H: Headers + ?Sized>(
    cfg: &Config,
    headers: &mut H,
    trace_id: &str,
) -> Result<(), HostError> {
    if cfg.echo_in_response {
        headers.set(&cfg.trace_header, trace_id)?;
    }
    Ok(())
}
