//! cxgate sidecar: the slow and secret work, off the request path.
//!
//! Token managers (one per configured platform) keep a valid token in the published state;
//! the filters pull that state into the proxy's shared data (see `cxgate_kit::sync`). Loopback
//! only; every call needs the shared key header. Secrets come from env or files, never from
//! the config itself, and never reach a log.

mod api;
mod budget;
mod config;
mod health;
mod hub;
mod metrics;
mod models;
mod problem;
mod roster;
mod sync;
mod tokens;

use clap::Parser;
use config::{Config, SecretSource};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokens::{Grantor, TokenManager};

#[derive(Parser, Debug)]
#[command(about = "cxgate sidecar: tokens, metadata sync, state API; model provisioning")]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (JSON, schema: schemas/sidecar.config.schema.json). Without it: no platforms.
    #[arg(long, env = "CXGATE_SIDECAR_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides the config's listen address (must be loopback).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Check the config (schema-level and the sidecar's own rules) and exit: 0 when it loads.
    #[arg(long)]
    check: bool,
    /// File holding the shared key (overrides the config's key source).
    #[arg(long, env = "CXGATE_SIDECAR_KEY_FILE")]
    key_file: Option<PathBuf>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// LLM model endpoints: validate, create (poll until ACTIVE), apply a snapshot.
    Models(models::cli::ModelsArgs),
}

fn fail(message: &str) -> ! {
    eprintln!("cxgate-sidecar: {message}");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(Command::Models(m)) = args.command {
        std::process::exit(models::cli::run(m).await);
    }
    tracing_subscriber::fmt().json().with_target(false).init();
    let check = args.check;
    let config = load(args);
    if check {
        println!("cxgate-sidecar: config ok");
        return;
    }
    let key = shared_key(&config);
    let http = config
        .tls
        .client_builder()
        .unwrap_or_else(|e| fail(&e))
        .timeout(Duration::from_millis(config.refresh.request_timeout_ms))
        .build()
        .unwrap_or_else(|e| fail(&format!("http client: {e}")));
    let shared = Shared {
        hub: Arc::new(hub::Hub::default()),
        metrics: Arc::new(metrics::Metrics::default()),
        http,
    };
    let (managers, genesys_api) = token_managers(&config, &shared);
    for m in managers.values() {
        tokio::spawn(m.clone().run());
    }
    spawn_map_syncs(&config, &shared, &managers, &genesys_api);
    let roster = spawn_roster(&config, &shared, &managers, &genesys_api);
    let budget = config.redis.as_ref().map(|r| {
        Arc::new(
            budget::Budget::new(&r.url, &r.key_prefix, Duration::from_millis(r.timeout_ms))
                .unwrap_or_else(|e| fail(&e)),
        )
    });
    let (redis_probe, llm_probe) = spawn_probes(&config, &shared, budget.as_ref());
    let api = Arc::new(api::Api {
        models: model_registry(&config, &shared),
        llm_probe,
        redis_probe,
        sync_bound_ms: config.metadata.interval_s.saturating_mul(3000).max(60_000),
        budget,
        key: key.expose().to_string(),
        hub: shared.hub,
        metrics: shared.metrics,
        managers,
        long_poll_max: Duration::from_millis(config.long_poll_max_ms),
        roster,
        cxone_rendered: config
            .cxone
            .as_ref()
            .and_then(|c| c.gateway_api_endpoint.clone()),
    });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot bind {}: {e}", config.listen)));
    tracing::info!(event = "SIDECAR_READY", listen = %config.listen, platforms = ?api.managers.keys().collect::<Vec<_>>());
    if let Err(e) = axum::serve(listener, api::router(api)).await {
        eprintln!("cxgate-sidecar: {e}");
        std::process::exit(1);
    }
}

/// What every background task gets: the published state, the metrics, one HTTP client.
struct Shared {
    hub: Arc<hub::Hub>,
    metrics: Arc<metrics::Metrics>,
    http: reqwest::Client,
}

type Managers = HashMap<&'static str, Arc<TokenManager>>;

/// The config, checked (loopback only, TLS settings usable). Any failure ends the process with
/// exit code 2 and what is wrong.
fn load(args: Args) -> Config {
    let text = match &args.config {
        Some(path) => std::fs::read_to_string(path)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", path.display()))),
        None => "{}".to_string(),
    };
    let mut config = Config::parse(&text).unwrap_or_else(|e| fail(&e));
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if !config.listen.ip().is_loopback() {
        fail(&format!(
            "refusing to listen on non-loopback address {}",
            config.listen
        ));
    }
    if let Err(e) = config.tls.client_builder() {
        fail(&e);
    }
    if let Some(path) = args.key_file {
        config.key = SecretSource::File(path);
    }
    config
}

/// The shared key callers send in `x-cxgate-sidecar-key` (16+ characters), or exit code 2.
fn shared_key(config: &Config) -> config::Secret {
    let key = config
        .key
        .resolve("key")
        .unwrap_or_else(|e| fail(&format!("{e} (the shared key for x-cxgate-sidecar-key)")));
    if key.expose().len() < 16 {
        fail("the shared key must be at least 16 characters");
    }
    key
}

/// One token manager per configured platform, and Genesys Cloud's API base when configured.
fn token_managers(config: &Config, sh: &Shared) -> (Managers, Option<String>) {
    let manager = |platform, grantor, per_second| {
        Arc::new(TokenManager::new(
            platform,
            grantor,
            per_second,
            config.refresh.clone(),
            sh.hub.clone(),
            sh.metrics.clone(),
            sh.http.clone(),
        ))
    };
    let mut managers: Managers = HashMap::new();
    let mut genesys_api = None;
    if let Some(g) = &config.genesys {
        let (login, api) = g.urls().unwrap_or_else(|e| fail(&e));
        genesys_api = Some(api);
        let grantor = Grantor::Genesys {
            login,
            client_id: g
                .client_id
                .resolve("genesys.client_id")
                .unwrap_or_else(|e| fail(&e)),
            client_secret: g
                .client_secret
                .resolve("genesys.client_secret")
                .unwrap_or_else(|e| fail(&e)),
        };
        managers.insert(
            "genesys",
            manager("genesys", grantor, g.max_grants_per_second),
        );
    }
    if let Some(c) = &config.cxone {
        let grantor = Grantor::Cxone {
            issuer: c.issuer.trim_end_matches('/').to_string(),
            tenant_id: c.tenant_id.clone(),
            client_id: c
                .client_id
                .resolve("cxone.client_id")
                .unwrap_or_else(|e| fail(&e)),
            client_secret: c
                .client_secret
                .resolve("cxone.client_secret")
                .unwrap_or_else(|e| fail(&e)),
            access_key_id: c
                .access_key_id
                .resolve("cxone.access_key_id")
                .unwrap_or_else(|e| fail(&e)),
            access_key_secret: c
                .access_key_secret
                .resolve("cxone.access_key_secret")
                .unwrap_or_else(|e| fail(&e)),
            discovered: Default::default(),
        };
        managers.insert("cxone", manager("cxone", grantor, c.max_grants_per_second));
    }
    for (platform, key, l) in [
        ("llm", "llm.api_key", &config.llm),
        ("anthropic", "anthropic.api_key", &config.anthropic),
    ] {
        let Some(l) = l else {
            continue;
        };
        // Fail at start on a missing key, like the other platforms' secrets.
        l.api_key.resolve(key).unwrap_or_else(|e| fail(&e));
        let grantor = Grantor::StaticKey {
            source: l.api_key.clone(),
            field: key,
            lifetime_s: l.reread_s,
        };
        managers.insert(platform, manager(platform, grantor, 1.0));
    }
    (managers, genesys_api)
}

/// The ID maps (queues, skills) each platform with a token manager syncs.
fn spawn_map_syncs(
    config: &Config,
    sh: &Shared,
    managers: &Managers,
    genesys_api: &Option<String>,
) {
    let mut maps: Vec<(&'static str, &'static str, sync::Source)> = vec![
        (
            "genesys",
            "genesys/queues",
            sync::Source::GenesysPaged {
                path: "/api/v2/routing/queues",
            },
        ),
        (
            "genesys",
            "genesys/skills",
            sync::Source::GenesysPaged {
                path: "/api/v2/routing/skills",
            },
        ),
        (
            "cxone",
            "cxone/skills",
            sync::Source::CxoneSkipTop {
                path: "/incontactapi/services/v30.0/skills",
                list: "skills",
                name: "skillName",
                id: "skillId",
            },
        ),
    ];
    if config.metadata.seed_queues {
        // The seed documents' CXone queue entity (the mock speaks it; real CXone has none).
        maps.push((
            "cxone",
            "cxone/queues",
            sync::Source::CxoneSkipTop {
                path: "/api/v2/routing/queues",
                list: "queues",
                name: "name",
                id: "id",
            },
        ));
    }
    for (platform, name, source) in maps {
        let Some(tokens) = managers.get(platform) else {
            continue;
        };
        let task = sync::MapSync {
            name,
            source,
            api_base: genesys_api.clone(),
            tokens: tokens.clone(),
            hub: sh.hub.clone(),
            metrics: sh.metrics.clone(),
            http: sh.http.clone(),
            interval: Duration::from_secs(config.metadata.interval_s),
            page_size: config.metadata.page_size,
        };
        tokio::spawn(task.run());
    }
}

/// The coexistence roster sync, with Genesys Cloud configured; its trigger for the API.
fn spawn_roster(
    config: &Config,
    sh: &Shared,
    managers: &Managers,
    genesys_api: &Option<String>,
) -> Option<Arc<roster::Trigger>> {
    match (&config.coexistence, managers.get("genesys"), genesys_api) {
        (Some(c), Some(tokens), Some(api_base)) => {
            let trigger = Arc::new(roster::Trigger::default());
            let task = roster::RosterSync {
                config: c.clone(),
                api_base: api_base.clone(),
                page_size: config.metadata.page_size,
                tokens: tokens.clone(),
                hub: sh.hub.clone(),
                metrics: sh.metrics.clone(),
                http: sh.http.clone(),
                trigger: trigger.clone(),
            };
            tokio::spawn(task.run());
            Some(trigger)
        }
        _ => None,
    }
}

/// The health probes of Redis (with a shared budget) and of the LLM (with a health URL).
fn spawn_probes(
    config: &Config,
    sh: &Shared,
    budget: Option<&Arc<budget::Budget>>,
) -> (Option<health::Shared>, Option<health::Shared>) {
    let redis_probe = budget.map(|b| {
        let probe = health::Shared::default();
        tokio::spawn(health::probe_redis(
            b.clone(),
            Duration::from_secs(10),
            probe.clone(),
        ));
        probe
    });
    let llm_probe = config.llm.as_ref().and_then(|l| {
        let url = l.health_url.clone()?;
        let probe = health::Shared::default();
        let every = Duration::from_secs(l.health_interval_s.max(1));
        tokio::spawn(health::probe_llm(
            url,
            l.api_key.clone(),
            sh.http.clone(),
            every,
            probe.clone(),
        ));
        Some(probe)
    });
    (redis_probe, llm_probe)
}

/// The LLM model registry, when the config has a `models` section.
fn model_registry(config: &Config, sh: &Shared) -> Option<Arc<models::admin::Registry>> {
    config.models.as_ref().map(|m| {
        let key = m
            .admin_key
            .resolve("models.admin_key")
            .unwrap_or_else(|e| fail(&e));
        Arc::new(models::admin::Registry::new(models::Provisioner {
            platform: models::provision::HttpPlatform {
                base: m.platform_url.trim_end_matches('/').to_string(),
                key,
                http: sh.http.clone(),
            },
            audit: models::audit::Audit {
                path: m.audit_log.clone(),
                environment: m.environment.clone(),
            },
            policy: models::provision::Policy {
                initial: Duration::from_millis(m.poll_initial_ms),
                max_attempts: m.poll_max_attempts,
                deadline: Duration::from_secs(m.poll_deadline_s),
                ..Default::default()
            },
        }))
    })
}
