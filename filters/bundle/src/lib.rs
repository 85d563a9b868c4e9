//! One module for the whole chain. Envoy runs one V8 VM per distinct module and worker, and
//! every extra VM a request passes through costs more than the filter's own work (see
//! BENCHMARKS.md). The bundle links every filter's shell and lets each plugin's `root_id`
//! (`cxgate.trace`, `cxgate.token`, ...) pick which one it is, so a chain configured from this
//! module runs in one VM. The filters themselves are unchanged and still ship standalone.

#[cfg(feature = "proxy")]
mod shell;

/// The filters the bundle hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Trace,
    Token,
    Breaker,
    Ratelimit,
    Transform,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Trace,
        Stage::Token,
        Stage::Breaker,
        Stage::Ratelimit,
        Stage::Transform,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Trace => "trace",
            Stage::Token => "token",
            Stage::Breaker => "breaker",
            Stage::Ratelimit => "ratelimit",
            Stage::Transform => "transform",
        }
    }

    /// The stage a plugin root id names: `cxgate.<stage>` exactly.
    pub fn for_root_id(root_id: &str) -> Option<Stage> {
        let name = root_id.strip_prefix("cxgate.")?;
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The configuration error for a root id that names no stage.
pub fn unknown_root_id(root_id: &str) -> String {
    let names: Vec<String> = Stage::ALL
        .iter()
        .map(|s| format!("cxgate.{}", s.name()))
        .collect();
    format!(
        "root_id {root_id:?} names no cxgate filter; use one of {}",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_ids_pick_their_stage_and_nothing_else() {
        for s in Stage::ALL {
            assert_eq!(Stage::for_root_id(&format!("cxgate.{}", s.name())), Some(s));
        }
        for bad in [
            "",
            "trace",
            "cxgate.",
            "cxgate.tokens",
            "xcxgate.trace",
            "cxgate.token.genesys",
        ] {
            assert_eq!(Stage::for_root_id(bad), None, "{bad}");
        }
        let e = unknown_root_id("cxgate.nope");
        assert!(
            e.contains("\"cxgate.nope\"") && e.contains("cxgate.transform"),
            "{e}"
        );
    }
}
