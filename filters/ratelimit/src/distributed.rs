//! The distributed mode: local buckets hold allotments drawn from a budget all instances
//! share (kept in Redis by the sidecar), topped up by one worker per instance.

use crate::bucket::Bucket;
use crate::config::Config;
use crate::keys;
use cxgate_kit::host::SharedStore;
use cxgate_kit::shared::{Update, UpdateError, update};
use cxgate_model::Limit;
use cxgate_state::AllotItem;

const ATTEMPTS: u32 = cxgate_kit::shared::CAS_BUDGET;

/// The allotment requests for `keys` (their wanted top-up), registering new ones in the index
/// so the periodic sync keeps them topped up.
pub fn allot_items<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &mut S,
    keys_wanted: &[String],
) -> Result<Vec<AllotItem>, UpdateError> {
    update(store, keys::INDEX, ATTEMPTS, |current| {
        let text = current
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or_default();
        let missing: Vec<&String> = keys_wanted
            .iter()
            .filter(|k| !text.lines().any(|l| l == k.as_str()))
            .collect();
        if missing.is_empty() || text.lines().count() >= 10_000 {
            return Update::Keep(());
        }
        let mut next = text.to_string();
        for k in missing {
            next.push_str(k);
            next.push('\n');
        }
        Update::Write(next.into_bytes(), ())
    })?;
    let mut items = Vec::with_capacity(keys_wanted.len());
    for key in keys_wanted {
        if let Some(item) = allot_item(cfg, store, key)? {
            items.push(item);
        }
    }
    Ok(items)
}

/// The limit a bucket key stands for.
fn limit_of(cfg: &Config, key: &str) -> Option<Limit> {
    if let Some(p) = key.strip_prefix("cxgate/rl/platform/") {
        return cfg.platforms.get(p).copied();
    }
    let consumer = key.strip_prefix("cxgate/rl/")?.strip_suffix("/default")?;
    Some(cfg.consumer_limit(consumer))
}

fn allot_item<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &S,
    key: &str,
) -> Result<Option<AllotItem>, UpdateError> {
    let Some(l) = limit_of(cfg, key) else {
        return Ok(None);
    };
    let level = store
        .get(key)?
        .and_then(|v| Bucket::decode(&v.value))
        .map_or(0, |b| b.level);
    let want = cfg.allotment(&l).saturating_sub(level);
    Ok((want > 0).then(|| AllotItem {
        key: key.to_string(),
        capacity: l.capacity,
        rate: l.rate,
        period_ms: l.period_ms,
        want,
    }))
}

/// The periodic sync's request: every registered bucket below its allotment.
pub fn plan_sync<S: SharedStore + ?Sized>(
    cfg: &Config,
    store: &S,
) -> Result<Vec<AllotItem>, UpdateError> {
    let index = store
        .get(keys::INDEX)?
        .map(|v| String::from_utf8_lossy(&v.value).into_owned())
        .unwrap_or_default();
    let mut items = Vec::new();
    for key in index.lines().filter(|l| !l.is_empty()) {
        if let Some(item) = allot_item(cfg, store, key)? {
            items.push(item);
        }
    }
    Ok(items)
}

/// Adds granted units to the local buckets (creating them if needed).
pub fn apply_grants<S: SharedStore + ?Sized>(
    store: &mut S,
    items: &[AllotItem],
    grants: &[u64],
    now: u64,
) -> Result<u64, UpdateError> {
    let mut total = 0;
    for (item, grant) in items.iter().zip(grants) {
        let grant = (*grant).min(item.want);
        if grant == 0 {
            continue;
        }
        update(store, &item.key, ATTEMPTS, |current| {
            let mut b = current.and_then(Bucket::decode).unwrap_or(Bucket {
                at_ms: now,
                ..Bucket::default()
            });
            b.level = b.level.saturating_add(grant);
            Update::Write(b.encode(), ())
        })?;
        total += grant;
    }
    Ok(total)
}
