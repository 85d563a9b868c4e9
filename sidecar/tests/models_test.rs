//! Model provisioning end to end against the mock LLM platform: the CLI creates
//! `examples/model.json` and polls it to ACTIVE, writing the audit lines and a snapshot that
//! `models apply` recreates; a FAILED model reports the platform's errorReason; the sidecar's
//! `/v1/models` API does the same in the background, through 429s with `Retry-After`.

mod common;
use common::*;
use std::process::{Command, Output};

struct Platform {
    _mocks: Service,
    url: String,
    dir: PathBuf,
}

fn platform(name: &str) -> Platform {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "cxgate-models-{name}-{}-{port}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let args: Vec<String> = [
        "--llm",
        &format!("127.0.0.1:{port}"),
        "--llm-provision-ms",
        "1200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut mocks = Service::spawn("mocks", &bin("cxgate-mocks"), &args, &[], &dir).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(
        &mut mocks,
        &format!("{url}/__mock/health"),
        &[],
        Duration::from_secs(20),
    )
    .unwrap();
    Platform {
        _mocks: mocks,
        url,
        dir,
    }
}

const MODEL_KEY: &str = "sk-test-model-key-0123456789";

fn models(p: &Platform, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxgate-sidecar"));
    cmd.arg("models").args(["--deadline-s", "60"]);
    if !args.contains(&"--platform") {
        cmd.args(["--platform", &p.url]);
    }
    cmd.arg("--audit-log")
        .arg(p.dir.join("audit.jsonl"))
        .args(args)
        .env("CXGATE_LLM_ADMIN_KEY", "demo-llm-key")
        .env("OPENAI_API_KEY", MODEL_KEY)
        .current_dir(common_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn common_root() -> PathBuf {
    cxgate_stack::repo_root()
}

fn audit(p: &Platform) -> Vec<Value> {
    std::fs::read_to_string(p.dir.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn actions(lines: &[Value]) -> Vec<&str> {
    lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect()
}

#[test]
fn the_cli_creates_the_example_until_active_and_its_snapshot_applies_elsewhere() {
    let p = platform("cli");
    let snap = p.dir.join("snapshot.json");
    let out = models(
        &p,
        &[
            "create",
            "examples/model.json",
            "--snapshot",
            snap.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(result["status"], "ACTIVE");
    let id = result["id"].as_str().unwrap().to_string();
    assert!(stderr.contains("PROVISIONING"), "progress lines: {stderr}");
    let lines = audit(&p);
    assert_eq!(
        actions(&lines),
        [
            "MODEL_VALIDATED",
            "MODEL_CREATED",
            "MODEL_ACTIVE",
            "MODEL_CONFIG_SYNC"
        ]
    );
    assert!(lines[1..].iter().all(|l| l["modelId"] == id.as_str()));
    let hash = lines[0]["payloadHash"].as_str().unwrap();
    assert!(lines.iter().all(|l| l["payloadHash"] == hash));
    let everything = format!(
        "{}{stdout}{stderr}{}",
        std::fs::read_to_string(p.dir.join("audit.jsonl")).unwrap(),
        std::fs::read_to_string(&snap).unwrap()
    );
    assert!(!everything.contains(MODEL_KEY), "the key leaked");
    // The platform got the key (it calls the provider with it) and shows it to no one.
    let shown: Value = Client::new()
        .get(format!("{}/api/v2/ai/models/{id}", p.url))
        .bearer_auth("demo-llm-key")
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(shown["status"], "ACTIVE");
    assert!(shown["credentials"].get("apiKey").is_none());

    let s: Value = serde_json::from_str(&std::fs::read_to_string(&snap).unwrap()).unwrap();
    assert_eq!(
        s["modelDefinition"]["credentials"]["apiKey"],
        json!({"env": "OPENAI_API_KEY"})
    );
    let out = models(
        &p,
        &["--environment", "staging", "apply", snap.to_str().unwrap()],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["status"], "ACTIVE");
    assert_ne!(
        again["id"], result["id"],
        "a new model in the other environment"
    );
    assert_eq!(again["payloadHash"], hash, "the same definition");
    let staging = audit(&p);
    assert_eq!(staging.last().unwrap()["environment"], "staging");
}

#[test]
fn a_failed_model_reports_the_reason_and_an_invalid_one_is_never_sent() {
    let p = platform("failed");
    let example: Value = serde_json::from_str(
        &std::fs::read_to_string(common_root().join("examples/model.json")).unwrap(),
    )
    .unwrap();
    let literal = p.dir.join("literal.json");
    let mut def = example.clone();
    def["credentials"]["apiKey"] = json!(MODEL_KEY);
    std::fs::write(&literal, def.to_string()).unwrap();
    let out = models(&p, &["create", literal.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"][0]["pointer"], "/credentials/apiKey");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(MODEL_KEY));
    assert!(audit(&p).is_empty(), "nothing validated, nothing created");

    let unknown = p.dir.join("unknown.json");
    let mut def = example.clone();
    def["modelId"] = json!("gpt-9-preview");
    std::fs::write(&unknown, def.to_string()).unwrap();
    let out = models(&p, &["create", unknown.to_str().unwrap()], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["status"], "FAILED");
    assert_eq!(
        v["errorReason"],
        "modelId gpt-9-preview is not available from provider openai"
    );
    let lines = audit(&p);
    assert_eq!(
        actions(&lines),
        ["MODEL_VALIDATED", "MODEL_CREATED", "MODEL_FAILED"]
    );
    assert_eq!(lines[2]["metadata"]["errorReason"], v["errorReason"]);

    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = models(
        &p,
        &["--platform", &closed, "create", "examples/model.json"],
        &[],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no answer from the platform"));
}

#[test]
fn the_sidecar_api_provisions_in_the_background_through_429s() {
    let p = platform("api");
    let port = free_port();
    let config = json!({
        "version": 1,
        "listen": format!("127.0.0.1:{port}"),
        "models": {"platform_url": p.url, "admin_key": {"env": "T_ADMIN_KEY"},
                   "audit_log": p.dir.join("audit.jsonl"), "environment": "dev",
                   "poll_initial_ms": 100, "poll_deadline_s": 60}
    });
    let env = [
        ("T_ADMIN_KEY", "demo-llm-key"),
        ("OPENAI_API_KEY", MODEL_KEY),
    ];
    let (side, base) = spawn_sidecar(&p.dir, &config, &env);
    let http = Client::new();
    // The mock holds one fault at a time: two 429s with Retry-After on the polls (5xx
    // retries are covered under the paused clock).
    let fault = json!({"status": 429, "retry_after": 1, "count": 2, "method": "GET",
                       "path_prefix": "/api/v2/ai/models/", "scope": "all"});
    let r = http
        .post(format!("{}/__mock/faults", p.url))
        .json(&fault)
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let example = std::fs::read_to_string(common_root().join("examples/model.json")).unwrap();
    let no_key = http
        .post(format!("{base}/v1/models"))
        .body(example.clone())
        .send()
        .unwrap();
    assert_eq!(no_key.status(), 401, "key-guarded");
    let mut bad: Value = serde_json::from_str(&example).unwrap();
    bad["configuration"]["temperature"] = json!(7);
    let r = http
        .post(format!("{base}/v1/models"))
        .header("x-cxgate-sidecar-key", KEY)
        .json(&bad)
        .send()
        .unwrap();
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().unwrap();
    assert_eq!(
        problem["errors"][0]["pointer"],
        "/configuration/temperature"
    );

    let r = http
        .post(format!("{base}/v1/models"))
        .header("x-cxgate-sidecar-key", KEY)
        .body(example)
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let created: Value = r.json().unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["status"], "PROVISIONING");
    let deadline = Instant::now() + Duration::from_secs(30);
    let shown = loop {
        let v = get_json(&base, &format!("/v1/models/{id}"));
        if v["status"] == "ACTIVE" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(shown["status"], "ACTIVE", "{shown}");
    assert!(
        shown["attempts"].as_u64().unwrap() >= 3,
        "through the two 429s: {shown}"
    );
    let snap = get_json(&base, &format!("/v1/models/{id}/snapshot"));
    assert_eq!(snap["environment"], "dev");
    assert_eq!(
        snap["modelDefinition"]["credentials"]["apiKey"],
        json!({"env": "OPENAI_API_KEY"})
    );
    let missing = http
        .get(format!("{base}/v1/models/mdl-nope"))
        .header("x-cxgate-sidecar-key", KEY)
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        actions(&audit(&p)),
        [
            "MODEL_VALIDATED",
            "MODEL_CREATED",
            "MODEL_ACTIVE",
            "MODEL_CONFIG_SYNC"
        ]
    );
    let log = std::fs::read_to_string(&side.log).unwrap_or_default();
    assert!(
        !log.contains(MODEL_KEY) && !log.contains("demo-llm-key"),
        "{log}"
    );
}
