//! Where the rate limiter's buckets, index, mode and sync lease live in shared data.

pub fn consumer(id: &str) -> String {
    format!("cxgate/rl/{id}/default")
}
pub fn platform(p: &str) -> String {
    format!("cxgate/rl/platform/{p}")
}
/// Newline-separated distributed bucket keys (what the sync tops up).
pub const INDEX: &str = "cxgate/rl/index";
/// `distributed` or `fallback`, written by the syncing worker, read by every worker's tick.
pub const MODE: &str = "cxgate/rl/mode";
pub const SYNC_LEASE: &str = "cxgate/lease/rl-sync";
