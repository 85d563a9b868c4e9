//! Mock NICE CXone: OIDC + CXone discovery, password-grant tokens, and the admin API under
//! `/incontactapi/services/v30.0` (skills, agents; skip/top paging). Also the seed's queue
//! shape under `/api/v2/routing/queues` (reference profile), and the seed's bot session
//! history ([`crate::bots`]).

use crate::Args;
use crate::control::{Mock, basic_auth, form, name_matches};
use crate::genesys::SEED_SKILLS;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub const API: &str = "/incontactapi/services/v30.0";

struct Cxone {
    mock: Arc<Mock>,
    base: String,
    client_id: String,
    client_secret: String,
    access_key_id: String,
    access_key_secret: String,
    ttl: u64,
    skills: Vec<Value>,
    agents: Vec<Value>,
    /// skill id -> agent ids
    skill_agents: HashMap<i64, Vec<i64>>,
    queues: Mutex<Vec<Value>>,
}

type S = State<Arc<Cxone>>;

fn api_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

pub fn router(mock: Arc<Mock>, args: &Args, base: &str) -> Router {
    let n = args.dataset_size.max(SEED_SKILLS.len());
    let skills: Vec<Value> = (0..n)
        .map(|i| {
            let name = SEED_SKILLS.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("skill_{i:03}"));
            json!({"skillId": 11_000 + i as i64, "skillName": name, "mediaTypeId": 4, "mediaTypeName": "Phone Call",
                   "isActive": true, "isOutbound": false, "campaignId": 1, "campaignName": "Default"})
        })
        .collect();
    let agents: Vec<Value> = (0..n)
        .map(|i| json!({"agentId": 5_000 + i as i64, "firstName": "Agent", "lastName": format!("{i:03}"),
                        "userName": format!("agent{i:03}@example.com"), "isActive": true, "teamId": 1}))
        .collect();
    let skill_agents = skills
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            Some((
                s["skillId"].as_i64()?,
                vec![5_000 + i as i64, 5_000 + ((i + 1) % n) as i64],
            ))
        })
        .collect();
    let queues = (0..n)
        .map(|i| {
            let name = if i == 0 {
                "Premium_Support".to_string()
            } else {
                format!("Queue_{i:03}")
            };
            json!({"id": format!("cxq-{:04}", i + 1), "name": name, "enabled": true})
        })
        .collect();
    let bots = crate::bots::router(mock.clone());
    let state = Arc::new(Cxone {
        mock,
        base: base.to_string(),
        client_id: args.cxone_client_id.clone(),
        client_secret: args.cxone_client_secret.clone(),
        access_key_id: args.cxone_access_key_id.clone(),
        access_key_secret: args.cxone_access_key_secret.clone(),
        ttl: args.cxone_token_ttl,
        skills,
        agents,
        skill_agents,
        queues: Mutex::new(queues),
    });
    let api = Router::new()
        .route(&format!("{API}/skills"), get(list_skills))
        .route(&format!("{API}/skills/{{id}}"), get(get_skill))
        .route(
            &format!("{API}/skills/{{id}}/agents"),
            get(skill_agents_list),
        )
        .route(&format!("{API}/agents"), get(list_agents))
        .route(&format!("{API}/agents/{{id}}/skills"), get(agent_skills))
        .route("/api/v2/routing/queues", get(seed_list_queues))
        .route(
            "/api/v2/routing/queues/{id}",
            get(seed_get_queue).put(seed_put_queue),
        )
        .layer(middleware::from_fn_with_state(state.clone(), api_guard))
        .with_state(state.clone());
    Router::new()
        .route("/.well-known/openid-configuration", get(openid))
        .route("/.well-known/cxone-configuration", get(cxone_configuration))
        .route("/auth/token", post(token))
        .route("/oauth/token", post(seed_token))
        .with_state(state)
        .merge(api)
        .merge(bots)
}

async fn api_guard(State(c): S, req: Request, next: Next) -> Response {
    match c.mock.check_bearer(req.headers()) {
        Ok(_) => next.run(req).await,
        Err(why) => api_error(StatusCode::UNAUTHORIZED, "invalid_token", why),
    }
}

async fn openid(State(c): S) -> Json<Value> {
    Json(json!({
        "issuer": c.base,
        "token_endpoint": format!("{}/auth/token", c.base),
        "authorization_endpoint": format!("{}/auth/authorize", c.base),
        "jwks_uri": format!("{}/auth/jwks", c.base),
        "grant_types_supported": ["password", "authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"]
    }))
}

async fn cxone_configuration(State(c): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(tenant) = q.get("tenantId").filter(|t| !t.is_empty()) else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "tenantId is required",
        );
    };
    Json(json!({"tenantId": tenant, "area": "na1", "api_endpoint": c.base, "ui_endpoint": c.base, "auth_endpoint": c.base}))
        .into_response()
}

/// Password grant: Basic client credentials + access key id/secret as username/password.
async fn token(State(c): S, headers: HeaderMap, body: Bytes) -> Response {
    match basic_auth(&headers) {
        Some((id, secret)) if id == c.client_id && secret == c.client_secret => {}
        _ => {
            return api_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            );
        }
    }
    let f = form(&body);
    if f.get("grant_type").map(String::as_str) != Some("password") {
        return api_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "use grant_type=password with access keys",
        );
    }
    if f.get("username") != Some(&c.access_key_id)
        || f.get("password") != Some(&c.access_key_secret)
    {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "invalid access key",
        );
    }
    let access_token = c.mock.issue_token(c.ttl);
    Json(json!({"access_token": access_token, "token_type": "Bearer", "expires_in": c.ttl,
                "refresh_token": c.mock.next_id("refresh-"), "scope": "RealTimeApi AdminApi", "id_token": ""}))
    .into_response()
}

/// Seed 000's shape: JSON client credentials.
async fn seed_token(State(c): S, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["client_id"] != c.client_id.as_str() || v["client_secret"] != c.client_secret.as_str() {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let access_token = c.mock.issue_token(c.ttl);
    Json(json!({"access_token": access_token, "token_type": "Bearer", "expires_in": c.ttl}))
        .into_response()
}

/// skip/top paging with `totalRecords`.
fn skip_top(items: &[Value], q: &HashMap<String, String>, key: &str) -> Response {
    let skip: usize = q.get("skip").and_then(|s| s.parse().ok()).unwrap_or(0);
    let top: usize = q
        .get("top")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
        .clamp(1, 10_000);
    let page: Vec<Value> = items.iter().skip(skip).take(top).cloned().collect();
    Json(json!({"businessUnitId": 4_600_001, "lastPollTime": "2026-01-01T00:00:00.000Z", "totalRecords": items.len(), key: page}))
        .into_response()
}

async fn list_skills(State(c): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let items: Vec<Value> = match q.get("searchString") {
        Some(s) => c
            .skills
            .iter()
            .filter(|v| {
                v["skillName"]
                    .as_str()
                    .is_some_and(|n| name_matches(&format!("*{s}*"), n))
            })
            .cloned()
            .collect(),
        None => c.skills.clone(),
    };
    skip_top(&items, &q, "skills")
}

async fn get_skill(State(c): S, Path(id): Path<i64>) -> Response {
    match c.skills.iter().find(|s| s["skillId"] == id) {
        Some(s) => Json(json!({"skills": [s]})).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "not_found", "skill not found"),
    }
}

async fn skill_agents_list(
    State(c): S,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(ids) = c.skill_agents.get(&id) else {
        return api_error(StatusCode::NOT_FOUND, "not_found", "skill not found");
    };
    let items: Vec<Value> = c
        .agents
        .iter()
        .filter(|a| a["agentId"].as_i64().is_some_and(|x| ids.contains(&x)))
        .cloned()
        .collect();
    skip_top(&items, &q, "agents")
}

async fn list_agents(State(c): S, Query(q): Query<HashMap<String, String>>) -> Response {
    skip_top(&c.agents, &q, "agents")
}

async fn agent_skills(
    State(c): S,
    Path(id): Path<i64>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !c.agents.iter().any(|a| a["agentId"] == id) {
        return api_error(StatusCode::NOT_FOUND, "not_found", "agent not found");
    }
    let items: Vec<Value> = c
        .skills
        .iter()
        .filter(|s| {
            s["skillId"]
                .as_i64()
                .and_then(|sid| c.skill_agents.get(&sid))
                .is_some_and(|a| a.contains(&id))
        })
        .cloned()
        .collect();
    skip_top(&items, &q, "skills")
}

async fn seed_list_queues(State(c): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let queues = c.queues.lock().unwrap_or_else(|e| e.into_inner()).clone();
    skip_top(&queues, &q, "queues")
}

async fn seed_get_queue(State(c): S, Path(id): Path<String>) -> Response {
    let queues = c.queues.lock().unwrap_or_else(|e| e.into_inner());
    match queues.iter().find(|q| q["id"] == id.as_str()) {
        Some(q) => Json(q.clone()).into_response(),
        None => api_error(StatusCode::NOT_FOUND, "not_found", "queue not found"),
    }
}

async fn seed_put_queue(State(c): S, Path(id): Path<String>, body: Bytes) -> Response {
    let Some(mut obj) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.as_object().cloned())
    else {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "body must be a JSON object",
        );
    };
    let mut queues = c.queues.lock().unwrap_or_else(|e| e.into_inner());
    let Some(q) = queues.iter_mut().find(|q| q["id"] == id.as_str()) else {
        return api_error(StatusCode::NOT_FOUND, "not_found", "queue not found");
    };
    obj.insert("id".into(), json!(id));
    *q = Value::Object(obj);
    Json(q.clone()).into_response()
}
