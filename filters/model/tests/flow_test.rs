//! The pipeline's sequencing with recording stages: phases, the platform as soon as known,
//! waits, replies that unwind, and responses in reverse order (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::ConfigError;
use cxgate_kit::host::CasDialect;
use cxgate_kit::problem::{LocalReply, Problem};
use cxgate_model::fakes::TestHost;
use cxgate_model::{
    Build, CallAnswer, Exchange, Flow, Io, Request, Stage, StageKind, StageStream, Step,
};
use serde_json::{Value, json};
use std::cell::RefCell;

thread_local! {
    static SEEN: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

fn seen() -> Vec<String> {
    SEEN.with(|s| s.borrow_mut().drain(..).collect())
}

fn note(what: String) {
    SEEN.with(|s| s.borrow_mut().push(what));
}

/// What a recording stage does, from its config section.
#[derive(Clone, Default)]
struct Plan {
    name: &'static str,
    reply_at: Option<String>,
    wait_at: Option<String>,
    wants_body: bool,
    ignores_response: bool,
}

struct Recorder(Plan);
struct RecorderStream(Plan);

fn plan(name: &'static str, section: Value) -> Plan {
    Plan {
        name,
        reply_at: section["reply_at"].as_str().map(str::to_string),
        wait_at: section["wait_at"].as_str().map(str::to_string),
        wants_body: section["wants_body"].as_bool().unwrap_or(false),
        ignores_response: section["ignores_response"].as_bool().unwrap_or(false),
    }
}

fn build_a(s: Value, _: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    Ok(Box::new(Recorder(plan("a", s))))
}
fn build_b(s: Value, _: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    Ok(Box::new(Recorder(plan("b", s))))
}
fn build_c(s: Value, _: &mut Build<'_>) -> Result<Box<dyn Stage>, ConfigError> {
    Ok(Box::new(Recorder(plan("c", s))))
}

const KINDS: [StageKind; 3] = [
    StageKind {
        name: "a",
        build: build_a,
    },
    StageKind {
        name: "b",
        build: build_b,
    },
    StageKind {
        name: "c",
        build: build_c,
    },
];

impl Stage for Recorder {
    fn name(&self) -> &'static str {
        self.0.name
    }
    fn stream(&self) -> Box<dyn StageStream> {
        Box::new(RecorderStream(self.0.clone()))
    }
}

impl RecorderStream {
    fn hook(&self, hook: &str, x: &Exchange) -> Flow {
        note(format!("{}.{hook}", self.0.name));
        if self.0.reply_at.as_deref() == Some(hook) {
            return Flow::Reply(
                Problem::new(418, "teapot", "Teapot", format!("{} said no", self.0.name))
                    .with_trace_id(x.trace_id.as_deref())
                    .into_reply(),
            );
        }
        if self.0.wait_at.as_deref() == Some(hook) {
            return Flow::Wait(77);
        }
        Flow::Continue
    }
}

impl StageStream for RecorderStream {
    fn on_request(&mut self, x: &mut Exchange, _: &mut Io<'_>) -> Flow {
        self.hook("request", x)
    }
    fn on_platform(&mut self, x: &mut Exchange, _: &mut Io<'_>) -> Flow {
        note(format!(
            "{}.platform={}",
            self.0.name,
            x.platform.as_deref().unwrap_or("?")
        ));
        self.hook("platform", x)
    }
    fn wants_body(&self, _: &Exchange) -> bool {
        self.0.wants_body
    }
    fn on_body(&mut self, x: &mut Exchange, _: &mut Io<'_>) -> Flow {
        self.hook("body", x)
    }
    fn on_call_response(
        &mut self,
        token: u32,
        a: &CallAnswer,
        _: &mut Exchange,
        _: &mut Io<'_>,
    ) -> Flow {
        note(format!("{}.answer{token}={:?}", self.0.name, a.status));
        Flow::Continue
    }
    fn on_reply(&mut self, _: &Exchange, _: &mut Io<'_>, reply: &mut LocalReply) {
        note(format!("{}.reply{}", self.0.name, reply.status));
        reply
            .headers
            .push((format!("x-{}", self.0.name), "seen".into()));
    }
    fn reads_response(&self, _: &Exchange) -> bool {
        !self.0.ignores_response
    }
    fn on_response(&mut self, x: &mut Exchange, _: &mut Io<'_>) -> Option<LocalReply> {
        let gateway = x.response.as_ref().is_some_and(|r| r.gateway);
        note(format!(
            "{}.response{}",
            self.0.name,
            if gateway { "(gateway)" } else { "" }
        ));
        None
    }
    fn on_done(&mut self, _: &Exchange, _: &mut Io<'_>) {
        note(format!("{}.done", self.0.name));
    }
}

fn pipeline(h: &mut TestHost, sections: Value) -> cxgate_model::Pipeline {
    // Under wasmtime every test runs on one thread: start each with an empty log.
    seen();
    let mut doc = json!({"version": 2, "stages": ["a", "b", "c"], "model": {
    "routes": [
        {"id": "fixed", "prefix": "/genesys/", "platform": "genesys"},
        {"id": "body", "path": "/update", "methods": ["POST"], "platform": {"body": "/target"}},
        {"id": "none", "path": "/whoami"}
    ]}});
    for (k, v) in sections.as_object().unwrap() {
        doc[k] = v.clone();
    }
    h.pipeline(&doc.to_string(), &KINDS).unwrap()
}

fn headers(method: &str, path: &str) -> Vec<(String, String)> {
    vec![
        (":method".into(), method.into()),
        (":path".into(), path.into()),
        ("X-Cxgate-Consumer".into(), "app".into()),
        ("content-type".into(), "application/json".into()),
    ]
}

#[test]
fn stages_meet_a_fixed_platform_at_once_and_the_response_in_reverse() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({}));
    let (mut r, step) = Request::start(&p, headers("GET", "/genesys/users"), &mut h.io());
    assert_eq!(step, Step::Continue);
    assert_eq!(
        r.x.consumer, "app",
        "the consumer header is found whatever its case"
    );
    assert_eq!(
        seen(),
        [
            "a.request",
            "a.platform=genesys",
            "a.platform",
            "b.request",
            "b.platform=genesys",
            "b.platform",
            "c.request",
            "c.platform=genesys",
            "c.platform"
        ]
    );
    assert!(
        r.on_response_headers(|| vec![(":status".into(), "200".into())], &mut h.io())
            .is_none()
    );
    r.on_done(&mut h.io());
    assert_eq!(
        seen(),
        [
            "c.response",
            "b.response",
            "a.response",
            "a.done",
            "b.done",
            "c.done"
        ]
    );
}

#[test]
fn a_platform_from_the_body_is_met_in_the_body_phase_before_the_body_hooks() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({"b": {"wants_body": true}}));
    let (mut r, step) = Request::start(&p, headers("POST", "/update"), &mut h.io());
    assert_eq!(step, Step::Pause);
    assert!(r.awaiting_body());
    assert_eq!(seen(), ["a.request", "b.request", "c.request"]);
    let step = r.on_body(br#"{"target": "CXONE"}"#.to_vec(), &mut h.io());
    assert_eq!(step, Step::Continue);
    assert_eq!(
        seen(),
        [
            "a.platform=cxone",
            "a.platform",
            "b.platform=cxone",
            "b.platform",
            "c.platform=cxone",
            "c.platform",
            "b.body"
        ]
    );
    assert_eq!(
        r.x.parsed_json().unwrap()["target"],
        "CXONE",
        "parsed once, for every stage"
    );
}

#[test]
fn an_unreadable_body_or_an_unknown_platform_is_a_400_and_no_stage_meets_it() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({}));
    for (body, kind, pointer) in [
        (&b"{\"target\": "[..], "malformed-json", None),
        (
            &br#"{"target": "AVAYA"}"#[..],
            "unknown-platform",
            Some("/target"),
        ),
        (&br#"{"other": 1}"#[..], "unknown-platform", Some("/target")),
    ] {
        let (mut r, _) = Request::start(&p, headers("POST", "/update"), &mut h.io());
        seen();
        let Step::Reply(reply) = r.on_body(body.to_vec(), &mut h.io()) else {
            panic!("a reply")
        };
        let doc: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            (reply.status, doc["type"].as_str()),
            (400, Some(&*format!("urn:cxgate:problem:{kind}")))
        );
        if let Some(ptr) = pointer {
            assert_eq!(doc["errors"][0]["pointer"], ptr);
        }
        assert_eq!(
            seen(),
            ["c.reply400", "b.reply400", "a.reply400"],
            "they unwind, nothing more"
        );
        assert!(
            reply
                .headers
                .contains(&("x-cxgate-reply".into(), "model".into()))
        );
    }
}

#[test]
fn a_stage_that_answers_stops_the_request_and_the_others_unwind() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({"b": {"reply_at": "request"}}));
    let (mut r, step) = Request::start(&p, headers("GET", "/genesys/users"), &mut h.io());
    let Step::Reply(reply) = step else {
        panic!("{step:?}")
    };
    assert_eq!(reply.status, 418);
    assert_eq!(
        seen(),
        [
            "a.request",
            "a.platform=genesys",
            "a.platform",
            "b.request",
            "a.reply418"
        ]
    );
    assert!(
        reply.headers.contains(&("x-a".into(), "seen".into())),
        "earlier stages add to it"
    );
    assert!(
        reply
            .headers
            .contains(&("x-cxgate-reply".into(), "b".into()))
    );
    assert!(r.x.replied);
    // The gateway's own reply passes every stage unchanged on the way out.
    assert!(
        r.on_response_headers(|| vec![(":status".into(), "418".into())], &mut h.io())
            .is_none()
    );
    assert!(!r.wants_response_body());
    r.on_done(&mut h.io());
    assert_eq!(seen(), ["a.done", "b.done"], "c never ran");
}

#[test]
fn a_stage_waits_for_its_callout_and_the_request_resumes_after_it() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({"a": {"wait_at": "platform"}}));
    let (mut r, step) = Request::start(&p, headers("GET", "/genesys/users"), &mut h.io());
    assert_eq!(step, Step::Pause);
    assert!(r.in_header_phase());
    assert_eq!(seen(), ["a.request", "a.platform=genesys", "a.platform"]);
    let answer = CallAnswer {
        status: Some(200),
        ..CallAnswer::default()
    };
    assert_eq!(
        r.on_call_response(5, &answer, &mut h.io()),
        None,
        "not its callout"
    );
    assert_eq!(
        r.on_call_response(77, &answer, &mut h.io()),
        Some(Step::Continue)
    );
    assert_eq!(seen()[0], "a.answer77=Some(200)");
    assert_eq!(
        r.on_call_response(77, &answer, &mut h.io()),
        None,
        "answered once"
    );
}

#[test]
fn unmatched_requests_are_refused_with_the_trace_stage_still_tagging_or_passed_by_choice() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({}));
    let (_, step) = Request::start(&p, headers("GET", "/admin"), &mut h.io());
    let Step::Reply(reply) = step else { panic!() };
    assert_eq!(reply.status, 404);
    assert!(seen().is_empty(), "no stage asked to see unrouted requests");
    let mut pass = TestHost::new(CasDialect::Envoy, 1_000);
    let doc = json!({"version": 2, "stages": ["a"], "model": {"unmatched": "pass", "routes": [{"id": "x", "path": "/x"}]}});
    let p = pass.pipeline(&doc.to_string(), &KINDS).unwrap();
    let (mut r, step) = Request::start(&p, headers("GET", "/admin"), &mut pass.io());
    assert_eq!(step, Step::Continue);
    assert!(
        r.on_response_headers(|| vec![(":status".into(), "200".into())], &mut pass.io())
            .is_none()
    );
    r.on_done(&mut pass.io());
    assert!(seen().is_empty(), "passed through untouched");
}

#[test]
fn a_response_another_cxgate_filter_made_is_marked_as_the_gateways() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_000);
    let p = pipeline(&mut h, json!({}));
    let (mut r, _) = Request::start(&p, headers("GET", "/whoami"), &mut h.io());
    assert_eq!(
        seen(),
        ["a.request", "b.request", "c.request"],
        "no platform, no platform hook"
    );
    let marked = vec![
        (":status".into(), "503".into()),
        ("x-cxgate-problem".into(), "token-unavailable".into()),
    ];
    r.on_response_headers(|| marked, &mut h.io());
    assert_eq!(
        seen(),
        [
            "c.response(gateway)",
            "b.response(gateway)",
            "a.response(gateway)"
        ]
    );
}

/// Whether the response headers were fetched for a GET through `p`.
fn response_fetched(h: &mut TestHost, p: &cxgate_model::Pipeline) -> bool {
    let (mut r, _) = Request::start(p, headers("GET", "/genesys/x"), &mut h.io());
    let mut loaded = false;
    let load = || {
        loaded = true;
        vec![(":status".to_string(), "503".to_string())]
    };
    assert!(r.on_response_headers(load, &mut h.io()).is_none());
    loaded
}

#[test]
fn response_headers_are_read_only_when_a_stage_that_ran_needs_them() {
    let mut h = TestHost::new(CasDialect::Envoy, 1_700_000_000_000);
    let none = json!({"ignores_response": true});
    let p = pipeline(&mut h, json!({"a": none, "b": none, "c": none}));
    assert!(
        !response_fetched(&mut h, &p),
        "no stage reads the response: the map is never fetched"
    );
    let p = pipeline(&mut h, json!({"a": none, "c": none}));
    assert!(response_fetched(&mut h, &p), "stage b reads the response");
}
