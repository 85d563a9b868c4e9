//! `cxgate-sidecar models validate|create|apply FILE`. The result goes to stdout as JSON,
//! progress to stderr (a status line on a terminal, plain lines otherwise). Exit status: 0 done,
//! 1 refused (invalid definition, FAILED model), 2 usage or setup error, 3 platform error.

use super::audit::{self, Audit};
use super::definition::Finding;
use super::provision::{HttpPlatform, Outcome, Policy, Progress};
use super::{Created, Provisioner};
use crate::config::SecretSource;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    #[command(subcommand)]
    pub action: Action,
    /// The LLM platform's admin API base URL (e.g. http://127.0.0.1:9003).
    #[arg(long, env = "CXGATE_LLM_ADMIN_URL", global = true)]
    pub platform: Option<String>,
    /// Environment variable holding the platform's admin key.
    #[arg(long, default_value = "CXGATE_LLM_ADMIN_KEY", global = true)]
    pub platform_key_env: String,
    /// File holding the platform's admin key (instead of the environment variable).
    #[arg(long, env = "CXGATE_LLM_ADMIN_KEY_FILE", global = true)]
    pub platform_key_file: Option<PathBuf>,
    /// The append-only audit log (JSON lines).
    #[arg(
        long,
        env = "CXGATE_MODELS_AUDIT_LOG",
        default_value = "cxgate-models-audit.jsonl",
        global = true
    )]
    pub audit_log: PathBuf,
    /// The environment named in audit lines and snapshots.
    #[arg(
        long,
        env = "CXGATE_ENVIRONMENT",
        default_value = "production",
        global = true
    )]
    pub environment: String,
    /// Give up polling after this many seconds.
    #[arg(long, default_value_t = 900, global = true)]
    pub deadline_s: u64,
    /// Give up polling after this many looks.
    #[arg(long, default_value_t = 60, global = true)]
    pub max_attempts: u32,
}

#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Check a definition: every error with its JSON pointer, and warnings. `--deployment`
    /// also checks the model id's format and the key behind the reference (its format only).
    Validate {
        file: PathBuf,
        #[arg(long)]
        deployment: bool,
    },
    /// Validate, create on the platform, poll until ACTIVE or FAILED.
    Create {
        file: PathBuf,
        /// Write the model's snapshot here once it is ACTIVE.
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
    /// Recreate a model from a snapshot, in this `--environment`.
    Apply {
        file: PathBuf,
        #[arg(long)]
        snapshot: Option<PathBuf>,
    },
}

fn read_json(path: &PathBuf) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}

fn print(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    println!("{text}");
}

fn invalid(errors: &[Finding]) -> i32 {
    print(&json!({"valid": false, "errors": errors}));
    1
}

/// Progress on stderr: one rewritten status line on a terminal, plain lines otherwise.
fn reporter() -> impl FnMut(&Progress) {
    let tty = std::io::stderr().is_terminal();
    move |p: &Progress| {
        let line = format!(
            "model: attempt {}: {}; next look in {:.1} s",
            p.attempt,
            p.seen,
            p.next_in.as_secs_f64()
        );
        let mut err = std::io::stderr();
        let _ = if tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
}

pub async fn run(args: ModelsArgs) -> i32 {
    let audit = Audit {
        path: args.audit_log.clone(),
        environment: args.environment.clone(),
    };
    let (file, snapshot_out, from_snapshot) = match &args.action {
        Action::Validate { file, deployment } => {
            let def = match read_json(file) {
                Ok(v) => v,
                Err(e) => return usage(&e),
            };
            let (mut errors, mut warnings) = match super::definition::check(&def) {
                Ok(c) => (Vec::new(), c.warnings),
                Err(errors) => (errors, Vec::new()),
            };
            if *deployment {
                let (e, w) = super::definition::deployment(&def);
                errors.extend(e);
                warnings.extend(w);
            }
            if !errors.is_empty() {
                return invalid(&errors);
            }
            return match super::validate(&audit, &def) {
                Ok(_) => {
                    print(&json!({"valid": true, "warnings": warnings}));
                    0
                }
                Err(errors) => invalid(&errors),
            };
        }
        Action::Create { file, snapshot } => (file, snapshot, false),
        Action::Apply { file, snapshot } => (file, snapshot, true),
    };
    let doc = match read_json(file) {
        Ok(v) => v,
        Err(e) => return usage(&e),
    };
    let def = if from_snapshot {
        match audit::from_snapshot(&doc) {
            Ok(d) => d.clone(),
            Err(e) => return usage(&e),
        }
    } else {
        doc
    };
    let Some(base) = args.platform.clone() else {
        return usage("give --platform (or CXGATE_LLM_ADMIN_URL): the LLM platform's admin API");
    };
    let source = match &args.platform_key_file {
        Some(p) => SecretSource::File(p.clone()),
        None => SecretSource::Env(args.platform_key_env.clone()),
    };
    let key = match source.resolve("platform admin key") {
        Ok(k) => k,
        Err(e) => return usage(&e),
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
    {
        Ok(h) => h,
        Err(e) => return usage(&format!("http client: {e}")),
    };
    let p = Provisioner {
        platform: HttpPlatform {
            base: base.trim_end_matches('/').to_string(),
            key,
            http,
        },
        audit,
        policy: Policy {
            max_attempts: args.max_attempts.max(1),
            deadline: Duration::from_secs(args.deadline_s),
            ..Policy::default()
        },
    };
    let checked = match p.validate(&def) {
        Ok(c) => c,
        Err(errors) => return invalid(&errors),
    };
    for w in &checked.warnings {
        eprintln!("warning: {}: {}", w.pointer, w.message);
    }
    let created = match p.create(&checked).await {
        Ok(c) => c,
        Err(e) => return platform_error(&e),
    };
    eprintln!("model: created {} (PROVISIONING)", created.id);
    let outcome = match p.settle(&created, &mut reporter()).await {
        Ok(o) => o,
        Err(e) => return platform_error(&e),
    };
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    finish(&p, &created, outcome, snapshot_out.as_ref())
}

fn finish(
    p: &Provisioner<HttpPlatform>,
    created: &Created,
    outcome: Outcome,
    snapshot_out: Option<&PathBuf>,
) -> i32 {
    match outcome {
        Outcome::Active(_) => {
            if let Some(path) = snapshot_out {
                let written = p.snapshot(created).and_then(|s| {
                    let text = serde_json::to_string_pretty(&s).unwrap_or_default();
                    std::fs::write(path, text + "\n")
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))
                });
                if let Err(e) = written {
                    return usage(&e);
                }
            }
            print(&json!({"id": created.id, "status": "ACTIVE", "payloadHash": created.hash}));
            0
        }
        Outcome::Failed { reason, .. } => {
            print(&json!({"id": created.id, "status": "FAILED", "errorReason": reason}));
            1
        }
        other => platform_error(&format!("model {}: {other:?}", created.id)),
    }
}

fn usage(message: &str) -> i32 {
    eprintln!("cxgate-sidecar models: {message}");
    2
}

fn platform_error(message: &str) -> i32 {
    eprintln!("cxgate-sidecar models: {message}");
    3
}
