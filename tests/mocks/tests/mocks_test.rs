//! The mocks must behave like the platforms they stand for, faults included.

mod common;

use common::{Mocks, start};
use serde_json::{Value, json};
use std::time::Duration;

fn genesys_token(m: &Mocks) -> String {
    let v: Value = m
        .http
        .post(format!("{}/oauth/token", m.genesys))
        .basic_auth("demo-genesys-client", Some("demo-genesys-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["access_token"].as_str().unwrap().to_string()
}

#[test]
fn genesys_tokens_expire_by_expires_in_and_can_be_revoked() {
    let m = start(&["--genesys-token-ttl", "1"]);
    let bad = m
        .http
        .post(format!("{}/oauth/token", m.genesys))
        .basic_auth("demo-genesys-client", Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    assert_eq!(bad.status(), 401);
    let body: Value = bad.json().unwrap();
    assert_eq!(body["error"], "invalid_client");
    let token = genesys_token(&m);
    let get = |t: &str| {
        m.http
            .get(format!("{}/api/v2/users", m.genesys))
            .bearer_auth(t)
            .send()
            .unwrap()
    };
    assert_eq!(get(&token).status(), 200);
    std::thread::sleep(Duration::from_millis(1100));
    let expired = get(&token);
    assert_eq!(expired.status(), 401);
    let body: Value = expired.json().unwrap();
    assert_eq!(body["code"], "bad.credentials");
    assert!(body["contextId"].is_string());
    let fresh = genesys_token(&m);
    assert_eq!(get(&fresh).status(), 200);
    m.http
        .post(format!("{}/__mock/tokens/revoke", m.genesys))
        .send()
        .unwrap();
    assert_eq!(get(&fresh).status(), 401);
    let stats: Value = m
        .http
        .get(format!("{}/__mock/stats", m.genesys))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(stats["grants"], 2);
}

#[test]
fn genesys_pages_queues_completely_and_reports_rate_limits() {
    let m = start(&["--genesys-rate-limit", "5"]);
    let token = genesys_token(&m);
    let mut names = Vec::new();
    let mut next = Some("/api/v2/routing/queues?pageSize=25&pageNumber=1".to_string());
    let mut pages = 0;
    while let Some(uri) = next {
        let resp = m
            .http
            .get(format!("{}{uri}", m.genesys))
            .bearer_auth(&token)
            .send()
            .unwrap();
        assert_eq!(resp.headers()["inin-ratelimit-allowed"], "5");
        assert!(resp.headers().contains_key("inin-correlation-id"));
        let v: Value = resp.json().unwrap();
        assert_eq!(v["total"], 60);
        names.extend(
            v["entities"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| q["name"].as_str().unwrap().to_string()),
        );
        next = v["nextUri"].as_str().map(str::to_string);
        pages += 1;
    }
    assert_eq!(pages, 3);
    assert_eq!(names.len(), 60);
    assert!(names.contains(&"Premium_Support".to_string()));
    let found: Value = m
        .http
        .get(format!("{}/api/v2/routing/queues?name=Premium*", m.genesys))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(found["entities"][0]["name"], "Premium_Support");
    // 5 per minute: 4 calls so far, the 5th passes, the 6th is limited.
    let fifth = m
        .http
        .get(format!("{}/api/v2/users", m.genesys))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        (
            fifth.status().as_u16(),
            fifth.headers()["inin-ratelimit-count"].to_str().unwrap()
        ),
        (200, "5")
    );
    let limited = m
        .http
        .get(format!("{}/api/v2/users", m.genesys))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
}

#[test]
fn genesys_queue_update_is_a_whole_object_put() {
    let m = start(&[]);
    let token = genesys_token(&m);
    let list: Value = m
        .http
        .get(format!(
            "{}/api/v2/routing/queues?name=Premium_Support",
            m.genesys
        ))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = list["entities"][0]["id"].as_str().unwrap().to_string();
    let put = m
        .http
        .put(format!("{}/api/v2/routing/queues/{id}", m.genesys))
        .bearer_auth(&token)
        .json(&json!({"name": "Premium_Support", "enabled": true, "routingConfig": {"strategy": "LONGESTIDLEAGENT"}}))
        .send()
        .unwrap();
    assert_eq!(put.status(), 200);
    let q: Value = m
        .http
        .get(format!("{}/api/v2/routing/queues/{id}", m.genesys))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(q["routingConfig"]["strategy"], "LONGESTIDLEAGENT");
    assert!(
        q.get("skillEvaluationMethod").is_none(),
        "PUT replaces the whole object"
    );
    assert_eq!(q["version"], 2);
    let missing = m
        .http
        .put(format!("{}/api/v2/routing/queues/nope", m.genesys))
        .bearer_auth(&token)
        .json(&json!({"name": "x"}))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[test]
fn genesys_queue_put_checks_the_version_and_keeps_what_it_is_sent() {
    let m = start(&[]);
    let token = genesys_token(&m);
    let url = |id: &str| format!("{}/api/v2/routing/queues/{id}", m.genesys);
    let list: Value = m
        .http
        .get(format!(
            "{}/api/v2/routing/queues?name=Premium_Support",
            m.genesys
        ))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = list["entities"][0]["id"].as_str().unwrap().to_string();
    let get = || -> Value {
        m.http
            .get(url(&id))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let read = get();
    for part in [
        "routingRules",
        "bullseye",
        "memberGroups",
        "acwSettings",
        "mediaSettings",
    ] {
        let filled = match &read[part] {
            Value::Object(o) => !o.is_empty(),
            Value::Array(a) => !a.is_empty(),
            _ => false,
        };
        assert!(filled, "a rich queue: {part}");
    }
    let mut edited = read.clone();
    edited["description"] = json!("edited");
    let ok = m
        .http
        .put(url(&id))
        .bearer_auth(&token)
        .json(&edited)
        .send()
        .unwrap();
    assert_eq!(ok.status(), 200);
    let now = get();
    let mut expected = edited.clone();
    expected["version"] = json!(read["version"].as_u64().unwrap() + 1);
    assert_eq!(now, expected, "every field sent is kept");
    // The version read before that write is stale now.
    let mut stale = read.clone();
    stale["description"] = json!("lost update");
    let conflict = m
        .http
        .put(url(&id))
        .bearer_auth(&token)
        .json(&stale)
        .send()
        .unwrap();
    assert_eq!(conflict.status(), 409);
    assert!(conflict.headers().contains_key("inin-correlation-id"));
    let body: Value = conflict.json().unwrap();
    assert_eq!(body["code"], "version.mismatch");
    assert_eq!(body["status"], 409);
    assert_eq!(get(), expected, "a refused write changes nothing");
}

#[test]
fn genesys_analytics_jobs_page_by_cursor() {
    let m = start(&[]);
    let token = genesys_token(&m);
    let job: Value = m
        .http
        .post(format!(
            "{}/api/v2/analytics/conversations/details/jobs",
            m.genesys
        ))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = job["jobId"].as_str().unwrap();
    let (mut seen, mut cursor, mut pages) = (0, None::<String>, 0);
    loop {
        let mut url = format!(
            "{}/api/v2/analytics/conversations/details/jobs/{id}/results",
            m.genesys
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("?cursor={c}"));
        }
        let v: Value = m
            .http
            .get(url)
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        seen += v["conversations"].as_array().unwrap().len();
        pages += 1;
        match v["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!((seen, pages), (120, 3));
}

#[test]
fn cxone_discovers_endpoints_and_uses_the_password_grant() {
    let m = start(&[]);
    let oidc: Value = m
        .http
        .get(format!("{}/.well-known/openid-configuration", m.cxone))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token_endpoint = oidc["token_endpoint"].as_str().unwrap();
    let conf: Value = m
        .http
        .get(format!(
            "{}/.well-known/cxone-configuration?tenantId=t-1",
            m.cxone
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let api = conf["api_endpoint"].as_str().unwrap();
    let wrong_grant = m
        .http
        .post(token_endpoint)
        .basic_auth("demo-cxone-client", Some("demo-cxone-secret"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .unwrap();
    assert_eq!(wrong_grant.status(), 400);
    let tok: Value = m
        .http
        .post(token_endpoint)
        .basic_auth("demo-cxone-client", Some("demo-cxone-secret"))
        .form(&[
            ("grant_type", "password"),
            ("username", "demo-access-key"),
            ("password", "demo-access-key-secret"),
        ])
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(tok["expires_in"], 3600);
    let token = tok["access_token"].as_str().unwrap();
    let mut skills = Vec::new();
    let mut skip = 0;
    loop {
        let v: Value = m
            .http
            .get(format!(
                "{api}/incontactapi/services/v30.0/skills?skip={skip}&top=25"
            ))
            .bearer_auth(token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        let page = v["skills"].as_array().unwrap().clone();
        assert_eq!(v["totalRecords"], 60);
        if page.is_empty() {
            break;
        }
        skip += page.len();
        skills.extend(page);
    }
    assert_eq!(skills.len(), 60);
    assert_eq!(skills[0]["skillName"], "billing");
    let unauth = m
        .http
        .get(format!("{api}/incontactapi/services/v30.0/agents"))
        .send()
        .unwrap();
    assert_eq!(unauth.status(), 401);
}

#[test]
fn llm_answers_plain_and_streamed_with_usage() {
    let m = start(&[]);
    let req = json!({"model": "m", "messages": [{"role": "user", "content": "route me"}]});
    let denied = m
        .http
        .post(format!("{}/v1/chat/completions", m.llm))
        .json(&req)
        .send()
        .unwrap();
    assert_eq!(denied.status(), 401);
    let plain: Value = m
        .http
        .post(format!("{}/v1/chat/completions", m.llm))
        .bearer_auth("demo-llm-key")
        .json(&req)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        plain["choices"][0]["message"]["content"],
        "Mock reply to: route me"
    );
    assert!(plain["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let stream_req = json!({"model": "m", "stream": true, "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "route me"}]});
    let resp = m
        .http
        .post(format!("{}/v1/chat/completions", m.llm))
        .header("api-key", "demo-llm-key")
        .json(&stream_req)
        .send()
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let text = resp.text().unwrap();
    let events: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Mock reply to: route me");
    let usage = chunks.last().unwrap();
    assert!(
        usage["choices"].as_array().unwrap().is_empty(),
        "usage chunk has empty choices"
    );
    assert!(usage["usage"]["completion_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn faults_follow_status_ratio_count_and_retry_after_and_requests_are_recorded() {
    let m = start(&[]);
    let token = genesys_token(&m);
    let set = m
        .http
        .post(format!("{}/__mock/faults", m.genesys))
        .json(&json!({"status": 503, "ratio": 0.5, "count": 2, "retry_after": 3}))
        .send()
        .unwrap();
    assert_eq!(set.status(), 201);
    let statuses: Vec<u16> = (0..6)
        .map(|_| {
            m.http
                .get(format!("{}/api/v2/users", m.genesys))
                .bearer_auth(&token)
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert_eq!(
        statuses,
        vec![200, 503, 200, 503, 200, 200],
        "every 2nd faulted, then cleared after 2"
    );
    let bad = m
        .http
        .post(format!("{}/__mock/faults", m.genesys))
        .json(&json!({"ratio": 3}))
        .send()
        .unwrap();
    assert_eq!(bad.status(), 400);
    m.http
        .post(format!("{}/__mock/faults", m.genesys))
        .json(&json!({"status": 429, "retry_after": 7, "path_prefix": "/api/v2/users"}))
        .send()
        .unwrap();
    let limited = m
        .http
        .get(format!("{}/api/v2/users", m.genesys))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(
        (
            limited.status().as_u16(),
            limited.headers()["retry-after"].to_str().unwrap()
        ),
        (429, "7")
    );
    assert_eq!(
        m.http
            .get(format!("{}/api/v2/routing/skills", m.genesys))
            .bearer_auth(&token)
            .send()
            .unwrap()
            .status(),
        200
    );
    m.http
        .delete(format!("{}/__mock/faults", m.genesys))
        .send()
        .unwrap();
    let recorded: Vec<Value> = m
        .http
        .get(format!("{}/__mock/requests", m.genesys))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        recorded.len(),
        1 + 6 + 2,
        "token grant + 6 + 2 API calls; control calls are not recorded"
    );
    assert_eq!(recorded[0]["path"], "/oauth/token");
    m.http
        .delete(format!("{}/__mock/requests", m.genesys))
        .send()
        .unwrap();
    let recorded: Vec<Value> = m
        .http
        .get(format!("{}/__mock/requests", m.genesys))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(recorded.is_empty());
}
