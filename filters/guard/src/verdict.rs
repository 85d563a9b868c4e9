//! One prompt text through both screens: the deny phrases (the seed's floor, `screen.mode`
//! decides filter or block) and the scored detector (its thresholds decide). Proxied prompts,
//! the chain's input and a bot caller's words all go through [`judge`], and what it decided
//! is logged and counted by [`record`], with rule and feature names and the score only.

use crate::config::{Config, Mode};
use crate::detect::{self, Thresholds};
use crate::worker::{Shared, part};
use cxgate_kit::log::{Event, Level};
use cxgate_model::Io;

/// What the screens decided about one text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// Forward `text` (each match replaced by the marker).
    Filtered {
        text: String,
        /// Deny rule ids, one per match, then the detector's features.
        rules: Vec<String>,
        score: u32,
    },
    /// Refuse: the rule (a deny rule's id, or `detector`) and the detector's finding.
    Blocked {
        rule: String,
        score: u32,
        features: Vec<&'static str>,
    },
}

/// Both screens over `text`; `detector` is the route's thresholds (`None`: off).
pub fn judge(cfg: &Config, detector: Option<Thresholds>, text: &str) -> Verdict {
    let hits = cfg.screen.hits(text);
    let finding = detector.map(|th| (th, detect::scan(text, th)));
    if let Some(first) = hits.first()
        && cfg.mode == Mode::Block
    {
        let (score, features) = finding.map_or((0, Vec::new()), |(_, f)| (f.score, f.features));
        let rule = cfg.screen.rule_id(first).to_string();
        return Verdict::Blocked {
            rule,
            score,
            features,
        };
    }
    let mut spans: Vec<(usize, usize)> = hits.iter().map(|h| (h.start, h.end)).collect();
    let mut rules: Vec<String> = hits
        .iter()
        .map(|h| cfg.screen.rule_id(h).to_string())
        .collect();
    let mut score = 0;
    if let Some((th, f)) = finding {
        score = f.score;
        if f.score >= th.block_at {
            return Verdict::Blocked {
                rule: "detector".into(),
                score: f.score,
                features: f.features,
            };
        }
        if f.score >= th.filter_at {
            spans.extend(f.spans);
            rules.extend(f.features.iter().map(|s| s.to_string()));
        }
    }
    if spans.is_empty() {
        return Verdict::Clean;
    }
    Verdict::Filtered {
        text: cfg.screen.filter_spans(text, spans),
        rules,
        score,
    }
}

/// Logs and counts a verdict (never the text).
pub(crate) fn record(s: &Shared, v: &Verdict, consumer: &str, io: &mut Io<'_>) {
    match v {
        Verdict::Clean => {}
        Verdict::Filtered { rules, score, .. } => {
            let event = Event::new("PROMPT_INJECTION_FILTERED")
                .str("rules", &rules.join(","))
                .num("matches", rules.len() as u64)
                .num("score", u64::from(*score))
                .str("consumer", consumer);
            io.log.event(Level::Warn, &event);
            for r in rules {
                let name = format!("cxgate_llm.injections.rule_{}.mode_filter", part(r));
                s.count(io, &name, 1);
            }
            if *score > 0 {
                s.observe(io, "cxgate_llm.injection_score", u64::from(*score));
            }
        }
        Verdict::Blocked {
            rule,
            score,
            features,
        } => {
            let event = Event::new("PROMPT_INJECTION_BLOCKED")
                .str("rule", rule)
                .num("score", u64::from(*score))
                .str("features", &features.join(","))
                .str("consumer", consumer);
            io.log.event(Level::Warn, &event);
            let name = format!("cxgate_llm.injections.rule_{}.mode_block", part(rule));
            s.count(io, &name, 1);
            for f in features {
                let name = format!("cxgate_llm.injections.rule_{}.mode_block", part(f));
                s.count(io, &name, 1);
            }
            if *score > 0 {
                s.observe(io, "cxgate_llm.injection_score", u64::from(*score));
            }
        }
    }
}
