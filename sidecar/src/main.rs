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
    if args.check {
        println!("cxgate-sidecar: config ok");
        return;
    }
    if let Some(path) = args.key_file {
        config.key = SecretSource::File(path);
    }
    let key = config
        .key
        .resolve("key")
        .unwrap_or_else(|e| fail(&format!("{e} (the shared key for x-cxgate-sidecar-key)")));
    if key.expose().len() < 16 {
        fail("the shared key must be at least 16 characters");
    }

    let hub = Arc::new(hub::Hub::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let http = config
        .tls
        .client_builder()
        .unwrap_or_else(|e| fail(&e))
        .timeout(Duration::from_millis(config.refresh.request_timeout_ms))
        .build()
        .unwrap_or_else(|e| fail(&format!("http client: {e}")));
    let mut managers: HashMap<&'static str, Arc<TokenManager>> = HashMap::new();
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
        let m = TokenManager::new(
            "genesys",
            grantor,
            g.max_grants_per_second,
            config.refresh.clone(),
            hub.clone(),
            metrics.clone(),
            http.clone(),
        );
        managers.insert("genesys", Arc::new(m));
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
        let m = TokenManager::new(
            "cxone",
            grantor,
            c.max_grants_per_second,
            config.refresh.clone(),
            hub.clone(),
            metrics.clone(),
            http.clone(),
        );
        managers.insert("cxone", Arc::new(m));
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
        let m = TokenManager::new(
            platform,
            grantor,
            1.0,
            config.refresh.clone(),
            hub.clone(),
            metrics.clone(),
            http.clone(),
        );
        managers.insert(platform, Arc::new(m));
    }
    for m in managers.values() {
        tokio::spawn(m.clone().run());
    }
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
            hub: hub.clone(),
            metrics: metrics.clone(),
            http: http.clone(),
            interval: Duration::from_secs(config.metadata.interval_s),
            page_size: config.metadata.page_size,
        };
        tokio::spawn(task.run());
    }

    let roster = match (&config.coexistence, managers.get("genesys"), &genesys_api) {
        (Some(c), Some(tokens), Some(api_base)) => {
            let trigger = Arc::new(roster::Trigger::default());
            let task = roster::RosterSync {
                config: c.clone(),
                api_base: api_base.clone(),
                page_size: config.metadata.page_size,
                tokens: tokens.clone(),
                hub: hub.clone(),
                metrics: metrics.clone(),
                http: http.clone(),
                trigger: trigger.clone(),
            };
            tokio::spawn(task.run());
            Some(trigger)
        }
        _ => None,
    };
    let budget = config.redis.as_ref().map(|r| {
        Arc::new(
            budget::Budget::new(&r.url, &r.key_prefix, Duration::from_millis(r.timeout_ms))
                .unwrap_or_else(|e| fail(&e)),
        )
    });
    let redis_probe = budget.as_ref().map(|b| {
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
            http.clone(),
            every,
            probe.clone(),
        ));
        Some(probe)
    });
    let models = config.models.as_ref().map(|m| {
        let key = m
            .admin_key
            .resolve("models.admin_key")
            .unwrap_or_else(|e| fail(&e));
        Arc::new(models::admin::Registry::new(models::Provisioner {
            platform: models::provision::HttpPlatform {
                base: m.platform_url.trim_end_matches('/').to_string(),
                key,
                http: http.clone(),
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
    });
    let api = Arc::new(api::Api {
        models,
        llm_probe,
        redis_probe,
        sync_bound_ms: config.metadata.interval_s.saturating_mul(3000).max(60_000),
        budget,
        key: key.expose().to_string(),
        hub,
        metrics,
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
