//! Model provisioning: validation with pointers, the poll loop under a paused tokio clock,
//! create's retry rule, the audit hash and the snapshot round trip.

use super::audit::{self, Audit};
use super::definition::{self, check};
use super::provision::{self, Outcome, Platform, Policy, Reply};
use super::{Provisioner, validate};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../../examples/model.json");

fn example() -> Value {
    serde_json::from_str(EXAMPLE).unwrap()
}

/// Sets (or adds) the member at `pointer`.
fn set(v: &mut Value, pointer: &str, to: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = v.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    parent.insert(key.to_string(), to);
}

#[test]
fn the_example_is_valid_and_a_hot_long_model_only_warns() {
    let c = check(&example()).unwrap();
    assert!(c.warnings.is_empty());
    let mut hot = example();
    set(&mut hot, "/configuration/temperature", json!(0.9));
    set(&mut hot, "/configuration/maxTokens", json!(8000));
    let c = check(&hot).unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].pointer, "/configuration");
}

type Patch = Box<dyn Fn(&mut Value)>;

#[test]
fn bad_definitions_are_refused_with_the_pointer_of_each_error() {
    let cases: Vec<(&str, Patch)> = vec![
        ("/name", Box::new(|d| set(d, "/name", json!("ab")))),
        (
            "/provider",
            Box::new(|d| set(d, "/provider", json!("cohere"))),
        ),
        (
            "/configuration/temperature",
            Box::new(|d| set(d, "/configuration/temperature", json!(2.5))),
        ),
        (
            "/configuration/maxTokens",
            Box::new(|d| set(d, "/configuration/maxTokens", json!(0))),
        ),
        (
            "/configuration/topP",
            Box::new(|d| set(d, "/configuration/topP", json!(1.5))),
        ),
        (
            "/promptTemplate",
            Box::new(|d| set(d, "/promptTemplate", json!("Classify this ticket"))),
        ),
        (
            "/promptTemplate",
            Box::new(|d| set(d, "/promptTemplate", json!("{input} for {customer}"))),
        ),
        (
            "/promptTemplate",
            Box::new(|d| set(d, "/promptTemplate", json!("{input"))),
        ),
        // The seed's own example: property types as strings are not schemas.
        (
            "/responseSchema/properties/category",
            Box::new(|d| set(d, "/responseSchema/properties/category", json!("string"))),
        ),
        (
            "/responseSchema/type",
            Box::new(|d| set(d, "/responseSchema/type", json!("array"))),
        ),
        (
            "",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("modelId");
            }),
        ),
        (
            "/credentials/apiKey",
            Box::new(|d| set(d, "/credentials/apiKey", json!({"vault": "x"}))),
        ),
        (
            "/configuration",
            Box::new(|d| {
                d["configuration"]["seed"] = json!(1);
            }),
        ),
    ];
    assert!(cases.len() >= 10);
    for (pointer, patch) in cases {
        let mut d = example();
        patch(&mut d);
        let errors = check(&d).unwrap_err();
        assert!(
            errors.iter().any(|e| e.pointer == pointer),
            "{pointer}: {errors:?}"
        );
    }
}

#[test]
fn a_literal_key_is_refused_and_never_echoed() {
    let mut d = example();
    let key = "sk-prod-0123456789abcdefghij";
    set(&mut d, "/credentials/apiKey", json!(key));
    let errors = check(&d).unwrap_err();
    assert!(errors.iter().any(|e| e.pointer == "/credentials/apiKey"));
    let all = serde_json::to_string(&errors).unwrap();
    assert!(!all.contains(key), "{all}");
    assert!(!all.contains("sk-prod"), "{all}");
}

#[test]
fn the_audit_hash_ignores_key_order_and_credentials() {
    let a = example();
    let reordered: Value = serde_json::from_str(
        r#"{"responseSchema": {"properties": {"confidence": {"maximum": 1, "minimum": 0, "type": "number"},
              "urgency": {"enum": ["low", "medium", "high"], "type": "string"},
              "category": {"type": "string"}}, "required": ["category", "urgency", "confidence"], "type": "object"},
            "promptTemplate": "Classify the following support ticket: {input}",
            "configuration": {"maxTokens": 1500, "temperature": 0.1},
            "credentials": {"apiKey": {"file": "/run/secrets/other"}},
            "modelId": "gpt-4o-mini", "provider": "openai", "name": "support-classifier-v2"}"#,
    )
    .unwrap();
    let h = definition::payload_hash(&a);
    assert_eq!(h, definition::payload_hash(&reordered));
    assert_eq!(h.len(), 64);
    assert!(
        h.chars().all(|c| c.is_ascii_hexdigit()),
        "hex sha256, not base64"
    );
    let mut changed = example();
    set(&mut changed, "/configuration/maxTokens", json!(1501));
    assert_ne!(h, definition::payload_hash(&changed));
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cxgate-models-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_snapshot_round_trips_and_audit_lines_hold_no_secret() {
    let dir = scratch("snapshot");
    let audit = Audit {
        path: dir.join("audit.jsonl"),
        environment: "staging".into(),
    };
    let _ = std::fs::remove_file(&audit.path);
    let def = example();
    validate(&audit, &def).unwrap();
    let s = audit::snapshot("staging", &def);
    let text = serde_json::to_string(&s).unwrap();
    let back: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(audit::from_snapshot(&back).unwrap(), &def);
    assert_eq!(back["apiVersion"], "v2");
    assert_eq!(back["environment"], "staging");
    check(audit::from_snapshot(&back).unwrap()).unwrap();
    assert!(audit::from_snapshot(&json!({"version": "9"})).is_err());
    let line: Value =
        serde_json::from_str(std::fs::read_to_string(&audit.path).unwrap().trim()).unwrap();
    assert_eq!(line["action"], "MODEL_VALIDATED");
    assert_eq!(line["payloadHash"], definition::payload_hash(&def));
    let id = line["auditId"].as_str().unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().get_version_num(), 4);
}

/// Answers from a script, recording when each look came (tokio's clock).
struct Script {
    replies: Mutex<VecDeque<Reply>>,
    looks: Mutex<Vec<tokio::time::Instant>>,
    creates: Mutex<u32>,
}

fn script(replies: Vec<Reply>) -> Script {
    Script {
        replies: Mutex::new(replies.into()),
        looks: Mutex::new(Vec::new()),
        creates: Mutex::new(0),
    }
}

fn status(s: &str) -> Reply {
    Reply::Answer {
        status: 200,
        retry_after: None,
        body: json!({"id": "m1", "status": s, "errorReason": "quota exceeded for gpt-4o-mini"}),
    }
}

fn code(status: u16, retry_after: Option<u64>) -> Reply {
    Reply::Answer {
        status,
        retry_after: retry_after.map(Duration::from_secs),
        body: json!({"message": "busy"}),
    }
}

impl Platform for Script {
    async fn create(&self, _body: &Value) -> Reply {
        *self.creates.lock().unwrap() += 1;
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Answer {
                status: 202,
                retry_after: None,
                body: json!({"id": "m1", "status": "PROVISIONING"}),
            })
    }
    async fn get(&self, _id: &str) -> Reply {
        self.looks.lock().unwrap().push(tokio::time::Instant::now());
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| status("PROVISIONING"))
    }
}

fn gaps(s: &Script) -> Vec<u64> {
    let looks = s.looks.lock().unwrap();
    looks.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect()
}

async fn run(s: &Script, policy: Policy) -> Outcome {
    let mut high = || 0.99;
    provision::poll(s, "m1", &policy, &mut high, &mut |_| {}).await
}

#[tokio::test(start_paused = true)]
async fn backoff_doubles_and_caps_at_60_s() {
    let mut replies: Vec<Reply> = (0..9).map(|_| status("PROVISIONING")).collect();
    replies.push(status("ACTIVE"));
    let s = script(replies);
    let out = run(&s, Policy::default()).await;
    assert!(matches!(out, Outcome::Active(_)), "{out:?}");
    // Jitter at its top: 1, 2, 4, ... s, never above the cap.
    assert_eq!(gaps(&s), [0, 1, 3, 7, 15, 31, 59, 59, 59]);
    let low = provision::backoff(&Policy::default(), 10, 0.0);
    assert_eq!(low, Duration::from_secs(30), "jitter keeps the upper half");
}

#[tokio::test(start_paused = true)]
async fn a_429_retry_after_is_honoured_and_5xx_and_lost_answers_are_retried() {
    let s = script(vec![
        code(429, Some(120)),
        code(503, None),
        Reply::Unreachable("connection reset".into()),
        status("ACTIVE"),
    ]);
    let out = run(&s, Policy::default()).await;
    assert!(matches!(out, Outcome::Active(_)), "{out:?}");
    assert_eq!(gaps(&s), [120, 1, 3]);
    assert_eq!(
        provision::retry_after("Wed, 21 Oct 2015 07:28:30 GMT", {
            std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480)
        }),
        Some(Duration::from_secs(30)),
        "an HTTP date"
    );
}

#[tokio::test(start_paused = true)]
async fn polling_gives_up_at_the_deadline_or_the_attempt_limit() {
    let s = script(vec![]);
    let policy = Policy {
        deadline: Duration::from_secs(100),
        ..Policy::default()
    };
    let start = tokio::time::Instant::now();
    let out = run(&s, policy).await;
    assert!(matches!(out, Outcome::Deadline { .. }), "{out:?}");
    assert!(start.elapsed() <= Duration::from_secs(100));
    let s = script(vec![]);
    let policy = Policy {
        max_attempts: 3,
        ..Policy::default()
    };
    let out = run(&s, policy).await;
    assert!(
        matches!(out, Outcome::GaveUp { attempts: 3, .. }),
        "{out:?}"
    );
    assert_eq!(s.looks.lock().unwrap().len(), 3);
    let s = script(vec![code(404, None)]);
    let out = run(&s, Policy::default()).await;
    assert!(
        matches!(out, Outcome::Rejected { status: 404, .. }),
        "{out:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_surfaces_the_error_reason_and_is_audited() {
    let dir = scratch("failed");
    let key_file = dir.join("model-key");
    std::fs::write(&key_file, "sk-test-0123456789abcdef\n").unwrap();
    let mut def = example();
    set(&mut def, "/credentials/apiKey", json!({"file": key_file}));
    let p = Provisioner {
        platform: script(vec![
            Reply::Answer {
                status: 202,
                retry_after: None,
                body: json!({"id": "m1", "status": "PROVISIONING"}),
            },
            status("PROVISIONING"),
            status("FAILED"),
        ]),
        audit: Audit {
            path: dir.join("audit.jsonl"),
            environment: "dev".into(),
        },
        policy: Policy::default(),
    };
    let _ = std::fs::remove_file(&p.audit.path);
    let checked = p.validate(&def).unwrap();
    let created = p.create(&checked).await.unwrap();
    let out = p.settle(&created, &mut |_| {}).await.unwrap();
    match out {
        Outcome::Failed { reason, .. } => assert_eq!(reason, "quota exceeded for gpt-4o-mini"),
        other => panic!("{other:?}"),
    }
    let log = std::fs::read_to_string(&p.audit.path).unwrap();
    let actions: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        actions,
        ["MODEL_VALIDATED", "MODEL_CREATED", "MODEL_FAILED"]
    );
    assert!(log.contains("quota exceeded"));
    assert!(!log.contains("sk-test-0123456789abcdef"), "{log}");
}

#[tokio::test(start_paused = true)]
async fn create_retries_a_429_but_never_a_5xx() {
    let body = json!({});
    let s = script(vec![code(429, Some(2))]);
    let (id, _) = provision::create(&s, &body, &Policy::default())
        .await
        .unwrap();
    assert_eq!(id, "m1");
    assert_eq!(*s.creates.lock().unwrap(), 2);
    let s = script(vec![code(500, None)]);
    let e = provision::create(&s, &body, &Policy::default())
        .await
        .unwrap_err();
    assert!(e.contains("may or may not exist"), "{e}");
    assert_eq!(
        *s.creates.lock().unwrap(),
        1,
        "a write that may have happened is not repeated"
    );
}

#[test]
fn deployment_checks_read_the_key_format_and_never_print_the_key() {
    let dir = scratch("deploy");
    let key_file = dir.join("key");
    let mut def = example();
    set(&mut def, "/credentials/apiKey", json!({"file": key_file}));
    std::fs::write(&key_file, "sk-proj-0123456789abcdefghij\n").unwrap();
    let (errors, warnings) = definition::deployment(&def);
    assert!(
        errors.is_empty() && warnings.is_empty(),
        "{errors:?} {warnings:?}"
    );
    std::fs::write(&key_file, "pk-live-0123456789abcdefghij").unwrap();
    let (errors, _) = definition::deployment(&def);
    assert_eq!(errors[0].pointer, "/credentials/apiKey");
    assert!(
        !errors[0].message.contains("pk-live"),
        "{}",
        errors[0].message
    );
    std::fs::remove_file(&key_file).unwrap();
    let (errors, warnings) = definition::deployment(&def);
    assert!(errors.is_empty());
    assert!(
        warnings[0].message.contains("cannot check the key"),
        "{warnings:?}"
    );
    set(&mut def, "/modelId", json!("llama-3-70b"));
    let (_, warnings) = definition::deployment(&def);
    assert!(
        warnings.iter().any(|w| w.pointer == "/modelId"),
        "{warnings:?}"
    );
    assert!(definition::model_id_looks_right(
        "bedrock",
        "anthropic.claude-3-5-sonnet-20240620-v1:0"
    ));
    assert!(definition::model_id_looks_right(
        "anthropic",
        "claude-sonnet-4"
    ));
    assert!(!definition::model_id_looks_right("anthropic", "gpt-4o"));
    assert!(definition::key_format("azure", "0123456789abcdef0123456789ABCDEF").is_ok());
    assert!(definition::key_format("azure", "short").is_err());
}
