//! Usage metering: the upstream's `usage` when it sent one, otherwise an estimate, and cost
//! from the configured price table.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// Counted by the gateway (no `usage` arrived: an aborted stream, an upstream without it).
    pub estimated: bool,
}

impl Usage {
    /// A `usage` object with its two counts, in OpenAI's chat names (`prompt_tokens`,
    /// `completion_tokens`) or the Responses and Messages APIs' (`input_tokens`,
    /// `output_tokens`).
    pub fn from_json(v: &Value) -> Option<Usage> {
        let count = |a: &str, b: &str| v.get(a).or_else(|| v.get(b))?.as_u64();
        Some(Usage {
            prompt: count("prompt_tokens", "input_tokens")?,
            completion: count("completion_tokens", "output_tokens")?,
            estimated: false,
        })
    }

    /// The documented estimator: one token per 4 characters, rounded up (OpenAI's rule of
    /// thumb for English), from the characters of every message sent and of the text returned.
    pub fn estimate(prompt_chars: u64, completion_chars: u64) -> Usage {
        Usage {
            prompt: prompt_chars.div_ceil(4),
            completion: completion_chars.div_ceil(4),
            estimated: true,
        }
    }

    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// Micro-dollars per 1,000 tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub prompt_micros_per_1k: u64,
    pub completion_micros_per_1k: u64,
}

impl Price {
    /// Cost in micro-dollars, rounded to the nearest.
    pub fn cost_micros(&self, u: &Usage) -> u64 {
        let p = u128::from(u.prompt) * u128::from(self.prompt_micros_per_1k);
        let c = u128::from(u.completion) * u128::from(self.completion_micros_per_1k);
        u64::try_from((p + c + 500) / 1000).unwrap_or(u64::MAX)
    }
}
