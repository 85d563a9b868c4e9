//! The transform section as written: serde reads it into these, then `Config::compile` checks
//! and compiles it (a bad field is named by its JSON pointer).

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "d_metadata_header")]
    pub(super) metadata_header: String,
    /// VM environment variable holding the key that signs pagination cursors.
    #[serde(default = "d_cursor_key_env")]
    pub(super) cursor_key_env: String,
    /// How long a cursor stays valid, from the page that handed it out.
    #[serde(default = "d_cursor_ttl_s")]
    pub(super) cursor_ttl_s: u64,
    #[serde(default)]
    pub(super) idempotency: RawIdempotency,
    #[serde(default)]
    pub(super) schemas: BTreeMap<String, Value>,
    pub(super) profiles: BTreeMap<String, RawProfile>,
    /// Model route id → how the route is transformed.
    pub(super) routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdempotency {
    pub(super) ttl_s: u64,
    pub(super) max_entries: usize,
    pub(super) max_bytes: usize,
    pub(super) max_response_bytes: usize,
}

impl Default for RawIdempotency {
    fn default() -> Self {
        RawIdempotency {
            ttl_s: 900,
            max_entries: 10_000,
            max_bytes: 8 << 20,
            max_response_bytes: 64 << 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    /// The gateway's route prefix of the platform (`genesys` → `/genesys/...`).
    pub(super) platform: String,
    pub(super) method: String,
    pub(super) path: String,
    #[serde(default)]
    pub(super) params: BTreeMap<String, Value>,
    #[serde(default)]
    pub(super) body: Option<Value>,
    #[serde(default)]
    pub(super) defaults: BTreeMap<String, Value>,
    #[serde(default)]
    pub(super) platform_schema: Option<String>,
    #[serde(default)]
    pub(super) response: Option<Value>,
    #[serde(default)]
    pub(super) metadata: Vec<String>,
    #[serde(default)]
    pub(super) paging: Option<RawPaging>,
    #[serde(default)]
    pub(super) merge: Option<RawMerge>,
    /// Send the mapped request by a call from the filter, not by rewriting the proxied one:
    /// for a proxy that does not route again after `:path` changes (Kong).
    #[serde(default)]
    pub(super) call: Option<RawCall>,
}

/// Read, merge, write: for a platform whose update replaces the whole object (Genesys queues).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMerge {
    pub(super) upstream: String,
    pub(super) authority: String,
    #[serde(default = "d_scheme")]
    pub(super) scheme: String,
    #[serde(default = "d_merge_timeout_ms")]
    pub(super) timeout_ms: u32,
    #[serde(default)]
    pub(super) credential: Option<RawCredential>,
    /// Where the object carries its version; the PUT sends back the one read.
    #[serde(default = "d_version")]
    pub(super) version: String,
}

/// Where the filter's own calls to the platform go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCall {
    /// Envoy: the platform's cluster (its token filter authenticates the calls). Kong: `host:port`.
    pub(super) upstream: String,
    pub(super) authority: String,
    /// `https` (Kong: it turns TLS on); Envoy's cluster decides TLS itself.
    #[serde(default = "d_scheme")]
    pub(super) scheme: String,
    /// Each call's timeout when the route sets none.
    #[serde(default = "d_merge_timeout_ms")]
    pub(super) timeout_ms: u32,
    /// Kong: the filter adds the platform's synced token itself (nothing under the call does).
    #[serde(default)]
    pub(super) credential: Option<RawCredential>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) platform: String,
    #[serde(default)]
    pub(super) header: Option<String>,
    #[serde(default)]
    pub(super) scheme: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields, tag = "style", rename_all = "snake_case")]
pub(super) enum RawPaging {
    /// Genesys: `pageNumber`/`pageSize`, `{entities, total, pageCount}`.
    PageNumber {
        items: String,
        total: String,
        #[serde(default = "d_page_param")]
        page_param: String,
        #[serde(default = "d_size_param")]
        size_param: String,
        #[serde(default = "d_page_size")]
        default_size: u32,
        #[serde(default = "d_max_size")]
        max_size: u32,
    },
    /// CXone: `skip`/`top`, `{<list>, totalRecords}`.
    SkipTop {
        items: String,
        total: String,
        #[serde(default = "d_skip_param")]
        skip_param: String,
        #[serde(default = "d_top_param")]
        top_param: String,
        #[serde(default = "d_page_size")]
        default_size: u32,
        #[serde(default = "d_max_size")]
        max_size: u32,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    #[serde(default)]
    pub(super) request_schema: Option<String>,
    /// Platform id (as the model names it) → profile.
    pub(super) platforms: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) idempotent: bool,
    /// Envoy: sent as `x-envoy-upstream-rq-timeout-ms`.
    #[serde(default)]
    pub(super) timeout_ms: Option<u64>,
    /// Envoy: sent as `x-envoy-retry-on` / `x-envoy-max-retries`.
    #[serde(default)]
    pub(super) retry_policy: Option<RawRetry>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetry {
    pub(super) retry_on: String,
    pub(super) num_retries: u32,
}

pub(super) fn d_scheme() -> String {
    "https".into()
}
pub(super) fn d_version() -> String {
    "/version".into()
}
pub(super) fn d_merge_timeout_ms() -> u32 {
    10_000
}
pub(super) fn d_metadata_header() -> String {
    "x-gateway-platform-metadata".into()
}
pub(super) fn d_cursor_key_env() -> String {
    "CXGATE_CURSOR_KEY".into()
}
pub(super) fn d_cursor_ttl_s() -> u64 {
    3600
}
pub(super) fn d_page_param() -> String {
    "pageNumber".into()
}
pub(super) fn d_size_param() -> String {
    "pageSize".into()
}
pub(super) fn d_skip_param() -> String {
    "skip".into()
}
pub(super) fn d_top_param() -> String {
    "top".into()
}
pub(super) fn d_page_size() -> u32 {
    25
}
pub(super) fn d_max_size() -> u32 {
    100
}
