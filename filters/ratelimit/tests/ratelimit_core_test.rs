//! Pure tests of the rate limiter: bucket math, Retry-After rounding, weighted costs, platform
//! budgets and feedback, the distributed allotments (native and wasmtime).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use cxgate_kit::fakes::FakeStore;
use cxgate_kit::host::{CasDialect, SharedStore};
use cxgate_kit::problem::LocalReply;
use cxgate_model::Model;
use cxgate_model::model::{PlatformSource, Resolved};
use cxgate_ratelimit::bucket::{Bucket, Limit, Take, retry_after_s};
use cxgate_ratelimit::config::Config;
use cxgate_ratelimit::core::{Ask, Feedback, Mode, Verdict, admit, keys, on_response};
use cxgate_ratelimit::distributed::{apply_grants, plan_sync};
use serde_json::{Value, json};

const PER_MIN_20: Limit = Limit {
    capacity: 20,
    rate: 20,
    period_ms: 60_000,
};

/// The request model and the rate limiter's compiled settings.
struct Cfg {
    model: Model,
    rl: Config,
}

impl std::ops::Deref for Cfg {
    type Target = Config;
    fn deref(&self) -> &Config {
        &self.rl
    }
}

fn model(consumer: Value) -> Model {
    Model::compile(json!({
        "default_consumer": {"limit": consumer},
        "routes": [
            {"id": "read", "prefix": "/genesys/", "platform": "genesys", "cost": 1},
            {"id": "write", "prefix": "/genesys/", "methods": ["post", "PUT"], "platform": "genesys", "cost": 5},
            {"id": "bulk", "prefix": "/genesys/bulk", "methods": ["POST"], "platform": "genesys", "cost": 50}
        ]
    }))
    .unwrap()
}

fn cfg_full(consumer: Value, section: Value) -> Cfg {
    let model = model(consumer);
    let rl = Config::compile(section, &model, Some(("sidecar", "sidecar"))).unwrap();
    Cfg { model, rl }
}

fn cfg_with(section: Value) -> Cfg {
    cfg_full(json!({"capacity": 20, "per_minute": 20}), section)
}

fn ask<'a>(c: &'a Cfg, method: &str, path: &str, consumer: &'a str, now_ms: u64) -> Ask<'a> {
    let Resolved::Route(i) = c.model.resolve(method, path) else {
        panic!("no route for {method} {path}");
    };
    let route = &c.model.routes[i];
    Ask {
        consumer,
        cost: route.cost,
        platform: match &route.platform {
            PlatformSource::Fixed(p) => Some(p.as_str()),
            _ => None,
        },
        trace_id: Some("t-1"),
        now_ms,
        mode: Mode::Local,
        may_allot: true,
    }
}

fn header<'a>(r: &'a LocalReply, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn limited(v: Verdict) -> LocalReply {
    match v {
        Verdict::Limited(_, r) => r,
        other => panic!("expected a 429, got {other:?}"),
    }
}

#[test]
fn refill_is_exact_and_capped() {
    let mut b = Bucket::full(&PER_MIN_20, 0);
    assert_eq!(
        b.take(&PER_MIN_20, 0, 20, true),
        Take::Admitted { level: 0 }
    );
    // 20 units per minute: one unit per 3 s, to the millisecond.
    assert_eq!(
        b.take(&PER_MIN_20, 2_999, 1, true),
        Take::Denied { wait_ms: 1 }
    );
    assert_eq!(
        b.take(&PER_MIN_20, 3_000, 1, true),
        Take::Admitted { level: 0 }
    );
    b.refill(&PER_MIN_20, 10_000_000);
    assert_eq!(b.level, PER_MIN_20.full(), "never past full");
    assert_eq!(b.remaining(&PER_MIN_20), 20);
    // Time running backwards changes nothing.
    let before = b;
    b.refill(&PER_MIN_20, 5);
    assert_eq!(b, before);
    assert_eq!(Bucket::decode(&b.encode()), Some(b));
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    assert_eq!(retry_after_s(1), 1);
    assert_eq!(retry_after_s(1_000), 1);
    assert_eq!(retry_after_s(1_001), 2);
    assert_eq!(retry_after_s(14_999), 15);
    assert_eq!(retry_after_s(0), 1, "never 0: a client would retry at once");
    // 3 units short at 20/min: exactly 9 s.
    let b = Bucket {
        level: PER_MIN_20.scaled(2),
        at_ms: 0,
        blocked_until_ms: 0,
    };
    let mut b2 = b;
    assert_eq!(
        b2.take(&PER_MIN_20, 0, 5, true),
        Take::Denied { wait_ms: 9_000 }
    );
}

#[test]
fn weighted_costs_admit_exactly_what_the_budget_holds() {
    let c = cfg_with(json!({}));
    let mut store = FakeStore::new(CasDialect::Envoy);
    // 4 writes of 5 units spend the 20-unit budget.
    for i in 0..4 {
        let v = admit(&c, &mut store, &ask(&c, "POST", "/genesys/q", "app", 0)).unwrap();
        let Verdict::Admitted(q) = v else {
            panic!("write {i}: {v:?}")
        };
        assert_eq!((q.limit, q.remaining), (20, 15 - 5 * i));
    }
    // The 5th write is 5 units short: 15 s. A read is 1 unit short: 3 s.
    let r = limited(admit(&c, &mut store, &ask(&c, "PUT", "/genesys/q", "app", 0)).unwrap());
    assert_eq!(r.status, 429);
    assert_eq!(header(&r, "retry-after"), Some("15"));
    assert_eq!(header(&r, "ratelimit-remaining"), Some("0"));
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:rate-limited");
    assert_eq!(p["trace_id"], "t-1");
    let r = limited(admit(&c, &mut store, &ask(&c, "GET", "/genesys/q", "app", 0)).unwrap());
    assert_eq!(header(&r, "retry-after"), Some("3"));
    // 2.5 s later the read still waits (0.5 s, rounded up to 1); at 3 s it is admitted.
    let r = limited(admit(&c, &mut store, &ask(&c, "GET", "/genesys/q", "app", 2_500)).unwrap());
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert!(matches!(
        admit(&c, &mut store, &ask(&c, "GET", "/genesys/q", "app", 3_000)).unwrap(),
        Verdict::Admitted(_)
    ));
    // Another consumer is untouched.
    let v = admit(
        &c,
        &mut store,
        &ask(&c, "POST", "/genesys/q", "other", 3_000),
    )
    .unwrap();
    assert!(matches!(v, Verdict::Admitted(q) if q.remaining == 15));
}

#[test]
fn a_cost_above_the_capacity_is_a_clear_429_that_never_says_retry() {
    let c = cfg_with(json!({}));
    let mut store = FakeStore::new(CasDialect::Kong);
    let r = limited(
        admit(
            &c,
            &mut store,
            &ask(&c, "POST", "/genesys/bulk/x", "app", 0),
        )
        .unwrap(),
    );
    assert_eq!(r.status, 429);
    assert_eq!(header(&r, "retry-after"), None);
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:cost-exceeds-capacity");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("can never be admitted")
    );
    // Nothing was spent.
    let v = admit(&c, &mut store, &ask(&c, "GET", "/genesys/x", "app", 0)).unwrap();
    assert!(matches!(v, Verdict::Admitted(q) if q.remaining == 19));
}

#[test]
fn a_platform_budget_refuses_and_refunds_the_consumer() {
    // The platform counts requests (it knows nothing of our weights): 2 per minute.
    let c = cfg_with(json!({"platforms": {"genesys": {"capacity": 2, "per_minute": 2}}}));
    let mut store = FakeStore::new(CasDialect::Envoy);
    for consumer in ["a", "a"] {
        assert!(matches!(
            admit(&c, &mut store, &ask(&c, "POST", "/genesys/q", consumer, 0)).unwrap(),
            Verdict::Admitted(_)
        ));
    }
    // b's write would fit b's budget, but the platform's is spent: refused, b refunded.
    let r = limited(admit(&c, &mut store, &ask(&c, "POST", "/genesys/q", "b", 0)).unwrap());
    let p: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["type"], "urn:cxgate:problem:platform-rate-limited");
    assert_eq!(
        header(&r, "retry-after"),
        Some("30"),
        "one request at 2/min"
    );
    assert_eq!(header(&r, "ratelimit-remaining"), Some("20"));
    let b = Bucket::decode(&store.get(&keys::consumer("b")).unwrap().unwrap().value).unwrap();
    assert_eq!(b.remaining(&PER_MIN_20), 20, "b was refunded");
}

#[test]
fn the_platforms_429_holds_its_traffic_for_retry_after() {
    let c = cfg_with(json!({}));
    let mut store = FakeStore::new(CasDialect::Envoy);
    let fb = Feedback {
        status: 429,
        retry_after: Some("3"),
        inin: Some((301, 300, 40)),
    };
    let ev = on_response(&c, &mut store, "genesys", &fb, 1_000)
        .unwrap()
        .unwrap();
    assert!(ev.render().contains("PLATFORM_RATE_LIMITED"));
    let r = limited(admit(&c, &mut store, &ask(&c, "GET", "/genesys/x", "a", 1_000)).unwrap());
    assert_eq!(header(&r, "retry-after"), Some("3"));
    let r = limited(admit(&c, &mut store, &ask(&c, "GET", "/genesys/x", "a", 3_500)).unwrap());
    assert_eq!(header(&r, "retry-after"), Some("1"));
    assert!(
        matches!(
            admit(&c, &mut store, &ask(&c, "GET", "/genesys/x", "a", 4_000)).unwrap(),
            Verdict::Admitted(q) if q.remaining == 19
        ),
        "the refused requests were refunded"
    );
    // Without Retry-After, Genesys' reset header says how long.
    let fb = Feedback {
        status: 429,
        retry_after: None,
        inin: Some((10, 10, 7)),
    };
    on_response(&c, &mut store, "genesys", &fb, 10_000).unwrap();
    let r = limited(admit(&c, &mut store, &ask(&c, "GET", "/genesys/x", "a", 10_000)).unwrap());
    assert_eq!(header(&r, "retry-after"), Some("7"));
}

#[test]
fn nearly_spent_platform_headers_drain_the_platform_bucket() {
    let c = cfg_with(json!({"platforms": {"genesys": {"capacity": 300, "per_minute": 300}}}));
    let mut store = FakeStore::new(CasDialect::Envoy);
    // 280 of 300 used at the platform (another gateway, a script...): 20 left here too.
    let fb = Feedback {
        status: 200,
        retry_after: None,
        inin: Some((280, 300, 30)),
    };
    assert!(
        on_response(&c, &mut store, "genesys", &fb, 0)
            .unwrap()
            .is_none()
    );
    let b = Bucket::decode(
        &store
            .get(&keys::platform("genesys"))
            .unwrap()
            .unwrap()
            .value,
    )
    .unwrap();
    assert_eq!(b.level, 20 * 60_000);
    // Below the threshold nothing changes.
    let fb = Feedback {
        status: 200,
        retry_after: None,
        inin: Some((100, 300, 30)),
    };
    on_response(&c, &mut store, "cxone", &fb, 0).unwrap();
    assert!(store.get(&keys::platform("cxone")).unwrap().is_none());
}

#[test]
fn rate_limit_headers_and_the_legacy_option() {
    let c = cfg_with(json!({"legacy_headers": true}));
    let mut store = FakeStore::new(CasDialect::Envoy);
    let Verdict::Admitted(q) =
        admit(&c, &mut store, &ask(&c, "POST", "/genesys/q", "a", 0)).unwrap()
    else {
        panic!()
    };
    let h = q.headers(true);
    for (k, v) in [
        ("ratelimit-limit", "20"),
        ("ratelimit-remaining", "15"),
        ("ratelimit-reset", "15"),
        ("x-ratelimit-limit", "20"),
        ("x-ratelimit-remaining", "15"),
        ("x-ratelimit-reset", "15"),
    ] {
        assert!(h.contains(&(k.into(), v.into())), "{k}: {h:?}");
    }
    assert_eq!(q.headers(false).len(), 3);
}

fn distributed() -> Cfg {
    cfg_full(
        json!({"capacity": 600, "per_minute": 600}),
        json!({"distributed": {"sync_ms": 200, "instances": 2}}),
    )
}

#[test]
fn distributed_buckets_start_with_an_allotment_and_only_grow_by_grants() {
    let c = distributed();
    let mut store = FakeStore::new(CasDialect::Kong);
    let mut a = ask(&c, "GET", "/genesys/x", "app", 0);
    a.mode = Mode::Distributed;
    let Verdict::Allot(items) = admit(&c, &mut store, &a).unwrap() else {
        panic!("a new bucket asks for its first allotment")
    };
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].key, keys::consumer("app"));
    // Two sync periods of refill (600/min × 0.4 s = 4 units), at least the largest cost (50).
    assert_eq!(items[0].want, 50 * 60_000);
    assert_eq!(
        plan_sync(&c, &store).unwrap().len(),
        1,
        "registered for the sync"
    );
    apply_grants(&mut store, &items, &[10 * 60_000], 0).unwrap();
    a.may_allot = false;
    for _ in 0..10 {
        assert!(matches!(
            admit(&c, &mut store, &a).unwrap(),
            Verdict::Admitted(_)
        ));
    }
    // No local refill, however long: only the next grant helps.
    a.now_ms = 3_600_000;
    let r = limited(admit(&c, &mut store, &a).unwrap());
    assert_eq!(header(&r, "retry-after"), Some("1"));
    let plan = plan_sync(&c, &store).unwrap();
    assert_eq!(plan[0].want, 50 * 60_000);
    // Redis down: the fallback refills locally at half the budget (2 instances).
    a.mode = Mode::Fallback;
    let v = admit(&c, &mut store, &a).unwrap();
    assert!(
        matches!(v, Verdict::Admitted(q) if q.remaining == 299),
        "{v:?}"
    );
}

#[test]
fn bad_config_names_the_field() {
    let m = model(json!({"capacity": 20, "per_minute": 20}));
    for (section, field) in [
        (
            json!({"platforms": {"genesys": {"capacity": 5}}}),
            "/ratelimit/platforms/genesys",
        ),
        (
            json!({"platforms": {"avaya": {"capacity": 5, "per_minute": 5}}}),
            "/ratelimit/platforms/avaya",
        ),
        (json!({"fail_mode": "maybe"}), "/ratelimit/fail_mode"),
        (json!({"nearly_spent": 2.0}), "/ratelimit/nearly_spent"),
        (
            json!({"distributed": {"instances": 0}}),
            "/ratelimit/distributed/instances",
        ),
    ] {
        let e = Config::compile(section.clone(), &m, Some(("s", "s"))).unwrap_err();
        assert_eq!(e.field, field, "{section}: {e:?}");
    }
    let e = Config::compile(json!({"distributed": {"instances": 2}}), &m, None).unwrap_err();
    assert_eq!(
        e.field, "/ratelimit/distributed",
        "the distributed mode needs /sync: {e:?}"
    );
}
