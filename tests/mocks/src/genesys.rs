//! Mock Genesys Cloud: login (`/oauth/token`) and `/api/v2` on one port.
//! Shapes: the real API's, and the example shape (the `*-seed` profiles).

use crate::Args;
use crate::control::{Mock, basic_auth, form, name_matches};
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Genesys {
    mock: Arc<Mock>,
    client_id: String,
    client_secret: String,
    ttl: u64,
    body_credentials: bool,
    rate_limit: u64,
    queues: Mutex<Vec<Value>>,
    skills: Vec<Value>,
    users: Mutex<Vec<Value>>,
    conversations: Vec<Value>,
    jobs: Mutex<HashMap<String, ()>>,
}

type S = State<Arc<Genesys>>;

/// Stable UUID-shaped ids, so runs are repeatable.
pub fn uuid(kind: u32, n: usize) -> String {
    format!("{kind:08x}-0000-4000-8000-{n:012x}")
}

pub const SEED_SKILLS: [&str; 6] = ["billing", "tier2", "tier1", "spanish", "retention", "sales"];

fn error(status: StatusCode, code: &str, message: &str, mock: &Mock) -> Response {
    let ctx = mock.next_id("ctx-");
    let body = json!({"message": message, "code": code, "status": status.as_u16(), "contextId": ctx, "details": [], "errors": []});
    let mut resp = (status, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&ctx) {
        resp.headers_mut().insert("inin-correlation-id", v);
    }
    resp
}

/// A queue with every part an update must keep: routing rules, bullseye rings, member groups,
/// wrap-up and per-media settings (the real API returns all of them).
fn rich_queue(id: &str, name: &str) -> Value {
    let media = |alert: u64, pct: f64, ms: u64| json!({"alertingTimeoutSeconds": alert, "serviceLevel": {"percentage": pct, "durationMs": ms}});
    json!({"id": id, "name": name, "enabled": true, "version": 1,
           "description": format!("{name} (seeded)"),
           "dateModified": "2026-11-02T09:00:00.000Z",
           "modifiedBy": "00000000-0000-4000-8000-00000000a11e",
           "skillEvaluationMethod": "BEST", "scoringMethod": "TimestampAndPriority",
           "lastAgentRoutingMode": "QueueMembersOnly",
           "acwSettings": {"wrapupPrompt": "MANDATORY_TIMEOUT", "timeoutMs": 30000},
           "mediaSettings": {"call": media(8, 0.8, 20000), "chat": media(30, 0.7, 60000),
                             "email": media(300, 0.9, 86_400_000), "message": media(30, 0.8, 30000),
                             "callback": media(30, 0.8, 20000)},
           "bullseye": {"rings": [
               {"expansionCriteria": [{"type": "TIMEOUT_SECONDS", "threshold": 15}],
                "actions": {"skillsToRemove": []}},
               {"expansionCriteria": [{"type": "TIMEOUT_SECONDS", "threshold": 30}],
                "actions": {"skillsToRemove": [{"name": "tier2"}]}}]},
           "routingRules": [{"operator": "MEETS_THRESHOLD", "threshold": 9, "waitSeconds": 20}],
           "memberGroups": [{"id": "00000000-0000-4000-8000-0000000000a1", "type": "GROUP"}],
           "selfUri": format!("/api/v2/routing/queues/{id}")})
}

pub fn router(mock: Arc<Mock>, args: &Args) -> Router {
    let n = args.dataset_size.max(SEED_SKILLS.len());
    let mut queues: Vec<Value> = (0..n)
        .map(|i| {
            let name = if i == 0 {
                "Premium_Support".to_string()
            } else {
                format!("Queue_{i:03}")
            };
            rich_queue(&uuid(0x9e0e, i), &name)
        })
        .collect();
    queues.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    let skills = (0..n)
        .map(|i| {
            let name = SEED_SKILLS
                .get(i)
                .map(|s| s.to_string())
                .unwrap_or_else(|| format!("skill_{i:03}"));
            json!({"id": uuid(0x5c11, i), "name": name, "state": "active", "version": "1",
                   "selfUri": format!("/api/v2/routing/skills/{}", uuid(0x5c11, i))})
        })
        .collect();
    let users = (0..n)
        .map(|i| json!({"id": uuid(0x05e5, i), "name": format!("Agent {i:03}"), "state": "active",
                         "email": format!("agent{i:03}@example.com"), "username": format!("agent{i:03}@example.com"),
                         "selfUri": format!("/api/v2/users/{}", uuid(0x05e5, i)),
                         "_routingStatus": ROUTING_STATUSES[i % ROUTING_STATUSES.len()]}))
        .collect();
    let conversations = (0..120)
        .map(|i| json!({"conversationId": uuid(0xc0de, i), "originatingDirection": "inbound", "participants": []}))
        .collect();
    let state = Arc::new(Genesys {
        mock,
        client_id: args.genesys_client_id.clone(),
        client_secret: args.genesys_client_secret.clone(),
        ttl: args.genesys_token_ttl,
        body_credentials: args.genesys_body_credentials,
        rate_limit: args.genesys_rate_limit,
        queues: Mutex::new(queues),
        skills,
        users: Mutex::new(users),
        conversations,
        jobs: Mutex::new(HashMap::new()),
    });
    let api = Router::new()
        .route(
            "/api/v2/routing/queues",
            get(list_queues).post(create_queue),
        )
        .route(
            "/api/v2/routing/queues/{id}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
        .route("/api/v2/routing/skills", get(list_skills))
        .route("/api/v2/users", get(list_users))
        .route(
            "/api/v2/users/{id}/routingstatus",
            get(get_routing_status).put(put_routing_status),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs",
            post(create_job),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs/{id}",
            get(job_status),
        )
        .route(
            "/api/v2/analytics/conversations/details/jobs/{id}/results",
            get(job_results),
        )
        .layer(middleware::from_fn_with_state(state.clone(), api_guard))
        .with_state(state.clone());
    Router::new()
        .route("/oauth/token", post(token))
        .route("/api/v2/oauth/token", post(seed_token))
        .with_state(state)
        .merge(api)
}

/// Every API call: bearer token check, per-token rate limit, Genesys response headers.
async fn api_guard(State(g): S, req: Request, next: Next) -> Response {
    let token = match g.mock.check_bearer(req.headers()) {
        Ok(t) => t,
        Err(why) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "bad.credentials",
                &format!("Invalid login credentials: {why}"),
                &g.mock,
            );
        }
    };
    let (count, allowed, reset, over) = g.mock.rate(&token, g.rate_limit);
    let mut resp = if over {
        let mut r = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too.many.requests",
            "Rate limit exceeded the maximum",
            &g.mock,
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(reset));
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert("inin-ratelimit-count", HeaderValue::from(count));
    h.insert("inin-ratelimit-allowed", HeaderValue::from(allowed));
    h.insert("inin-ratelimit-reset", HeaderValue::from(reset));
    if !h.contains_key("inin-correlation-id")
        && let Ok(v) = HeaderValue::from_str(&g.mock.next_id("corr-"))
    {
        h.insert("inin-correlation-id", v);
    }
    resp
}

fn token_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "description": description, "error_description": description})),
    )
        .into_response()
}

/// `POST /oauth/token`: client credentials with HTTP Basic, form body.
async fn token(State(g): S, headers: HeaderMap, body: Bytes) -> Response {
    let from_body = || {
        let f = form(&body);
        Some((f.get("client_id")?.clone(), f.get("client_secret")?.clone()))
    };
    let creds = basic_auth(&headers).or_else(|| g.body_credentials.then(from_body).flatten());
    let Some((id, secret)) = creds else {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    };
    if id != g.client_id || secret != g.client_secret {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    if form(&body).get("grant_type").map(String::as_str) != Some("client_credentials") {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    let access_token = g.mock.issue_token(g.ttl);
    Json(json!({"access_token": access_token, "token_type": "bearer", "expires_in": g.ttl}))
        .into_response()
}

/// Seed 000's shape: JSON body with client id and secret.
async fn seed_token(State(g): S, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if v["grant_type"] != "client_credentials" {
        return token_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "grant_type must be client_credentials",
        );
    }
    if v["client_id"] != g.client_id.as_str() || v["client_secret"] != g.client_secret.as_str() {
        return token_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        );
    }
    let access_token = g.mock.issue_token(g.ttl);
    Json(json!({"access_token": access_token, "token_type": "bearer", "expires_in": g.ttl}))
        .into_response()
}

/// Page-based listing: `pageNumber` (from 1), `pageSize` (default 25, max 500).
fn page(items: &[Value], q: &HashMap<String, String>, base: &str) -> Response {
    let size: usize = q
        .get("pageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(25)
        .clamp(1, 500);
    let number: usize = q
        .get("pageNumber")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = items.len();
    let page_count = total.div_ceil(size).max(1);
    let start = (number - 1) * size;
    let entities: Vec<Value> = items.iter().skip(start).take(size).cloned().collect();
    let uri = |n: usize| format!("{base}?pageSize={size}&pageNumber={n}");
    let mut body = json!({"entities": entities, "pageSize": size, "pageNumber": number, "total": total,
                          "firstUri": uri(1), "lastUri": uri(page_count), "selfUri": uri(number), "pageCount": page_count});
    if number < page_count {
        body["nextUri"] = json!(uri(number + 1));
    }
    if number > 1 {
        body["previousUri"] = json!(uri(number - 1));
    }
    Json(body).into_response()
}

fn filtered(items: &[Value], q: &HashMap<String, String>) -> Vec<Value> {
    match q.get("name") {
        Some(pattern) => items
            .iter()
            .filter(|v| v["name"].as_str().is_some_and(|n| name_matches(pattern, n)))
            .cloned()
            .collect(),
        None => items.to_vec(),
    }
}

async fn list_queues(State(g): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let queues = g.queues.lock().unwrap_or_else(|e| e.into_inner()).clone();
    page(&filtered(&queues, &q), &q, "/api/v2/routing/queues")
}

async fn get_queue(State(g): S, Path(id): Path<String>) -> Response {
    let queues = g.queues.lock().unwrap_or_else(|e| e.into_inner());
    match queues.iter().find(|q| q["id"] == id.as_str()) {
        Some(q) => Json(q.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not.found",
            &format!("queue {id} not found"),
            &g.mock,
        ),
    }
}

/// A queue body as Genesys checks it: a JSON object with a non-empty name.
fn queue_body(body: &Bytes, mock: &Mock) -> Result<serde_json::Map<String, Value>, Box<Response>> {
    let Some(obj) = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.as_object().cloned())
    else {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "body must be a JSON object",
            mock,
        )));
    };
    if obj
        .get("name")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "invalid.value",
            "name is required",
            mock,
        )));
    }
    Ok(obj)
}

/// Whole-object update (Genesys has no PATCH for queues), checked against the version sent.
async fn put_queue(State(g): S, Path(id): Path<String>, body: Bytes) -> Response {
    let mut obj = match queue_body(&body, &g.mock) {
        Ok(obj) => obj,
        Err(resp) => return *resp,
    };
    let mut queues = g.queues.lock().unwrap_or_else(|e| e.into_inner());
    let Some(q) = queues.iter_mut().find(|q| q["id"] == id.as_str()) else {
        return error(
            StatusCode::NOT_FOUND,
            "not.found",
            &format!("queue {id} not found"),
            &g.mock,
        );
    };
    let current = q["version"].as_u64().unwrap_or(1);
    match obj.get("version") {
        // The real API: the version read must come back, or someone changed the queue since.
        Some(v) if v.as_u64() != Some(current) => {
            return error(
                StatusCode::CONFLICT,
                "version.mismatch",
                &format!("queue {id} is at version {current}, not {v}; read it again"),
                &g.mock,
            );
        }
        // Without one (the seed's shape), the body still replaces the whole queue.
        _ => {}
    }
    obj.insert("id".into(), json!(id));
    obj.insert("version".into(), json!(current + 1));
    obj.insert(
        "selfUri".into(),
        json!(format!("/api/v2/routing/queues/{id}")),
    );
    *q = Value::Object(obj);
    Json(q.clone()).into_response()
}

async fn create_queue(State(g): S, body: Bytes) -> Response {
    let mut obj = match queue_body(&body, &g.mock) {
        Ok(obj) => obj,
        Err(resp) => return *resp,
    };
    let mut queues = g.queues.lock().unwrap_or_else(|e| e.into_inner());
    let id = uuid(0x9e0f, queues.len());
    obj.insert("id".into(), json!(id));
    obj.insert("version".into(), json!(1));
    obj.insert(
        "selfUri".into(),
        json!(format!("/api/v2/routing/queues/{id}")),
    );
    queues.push(Value::Object(obj.clone()));
    (StatusCode::OK, Json(Value::Object(obj))).into_response()
}

async fn delete_queue(State(g): S, Path(id): Path<String>) -> Response {
    let mut queues = g.queues.lock().unwrap_or_else(|e| e.into_inner());
    let before = queues.len();
    queues.retain(|q| q["id"] != id.as_str());
    if queues.len() == before {
        return error(
            StatusCode::NOT_FOUND,
            "not.found",
            &format!("queue {id} not found"),
            &g.mock,
        );
    }
    StatusCode::OK.into_response()
}

async fn list_skills(State(g): S, Query(q): Query<HashMap<String, String>>) -> Response {
    page(&filtered(&g.skills, &q), &q, "/api/v2/routing/skills")
}

/// Routing statuses the mock's agents start in, by index (real Genesys values).
const ROUTING_STATUSES: [&str; 5] = [
    "IDLE",
    "INTERACTING",
    "OFF_QUEUE",
    "COMMUNICATING",
    "NOT_RESPONDING",
];

fn routing_status(user: &Value) -> Value {
    json!({"userId": user["id"], "status": user["_routingStatus"], "startTime": "2026-01-01T00:00:00.000Z"})
}

/// `expand=routingStatus` adds each user's routing status, as the real API does.
async fn list_users(State(g): S, Query(q): Query<HashMap<String, String>>) -> Response {
    let expand = q
        .get("expand")
        .is_some_and(|e| e.split(',').any(|x| x == "routingStatus"));
    let users: Vec<Value> = g
        .users
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|u| {
            let mut v = u.clone();
            if expand {
                v["routingStatus"] = routing_status(u);
            }
            if let Some(o) = v.as_object_mut() {
                o.remove("_routingStatus");
            }
            v
        })
        .collect();
    page(&users, &q, "/api/v2/users")
}

async fn get_routing_status(State(g): S, Path(id): Path<String>) -> Response {
    let users = g.users.lock().unwrap_or_else(|e| e.into_inner());
    match users.iter().find(|u| u["id"] == id.as_str()) {
        Some(u) => Json(routing_status(u)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "not.found",
            "user not found",
            &g.mock,
        ),
    }
}

/// `PUT /api/v2/users/{id}/routingstatus` with `{"status": "OFF_QUEUE"}`.
async fn put_routing_status(
    State(g): S,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(status) = body["status"]
        .as_str()
        .filter(|s| ROUTING_STATUSES.contains(s))
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "status must be a routing status",
            &g.mock,
        );
    };
    let mut users = g.users.lock().unwrap_or_else(|e| e.into_inner());
    match users.iter_mut().find(|u| u["id"] == id.as_str()) {
        Some(u) => {
            u["_routingStatus"] = json!(status);
            Json(routing_status(u)).into_response()
        }
        None => error(
            StatusCode::NOT_FOUND,
            "not.found",
            "user not found",
            &g.mock,
        ),
    }
}

async fn create_job(State(g): S) -> Response {
    let id = g.mock.next_id("job-");
    g.jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), ());
    (StatusCode::ACCEPTED, Json(json!({"jobId": id}))).into_response()
}

async fn job_status(State(g): S, Path(id): Path<String>) -> Response {
    if !g
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&id)
    {
        return error(StatusCode::NOT_FOUND, "not.found", "job not found", &g.mock);
    }
    Json(json!({"state": "FULFILLED", "expirationDate": "2099-01-01T00:00:00Z"})).into_response()
}

/// Cursor-based results: 50 per page; the cursor is opaque (here: the next offset, encoded).
async fn job_results(
    State(g): S,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    use base64::Engine;
    if !g
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains_key(&id)
    {
        return error(StatusCode::NOT_FOUND, "not.found", "job not found", &g.mock);
    }
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start: usize = match q.get("cursor") {
        None => 0,
        Some(c) => match engine
            .decode(c)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("off:").and_then(|n| n.parse().ok()))
        {
            Some(n) => n,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad.request",
                    "invalid cursor",
                    &g.mock,
                );
            }
        },
    };
    let items: Vec<Value> = g
        .conversations
        .iter()
        .skip(start)
        .take(50)
        .cloned()
        .collect();
    let mut body = json!({"conversations": items, "dataAvailabilityDate": "2099-01-01T00:00:00Z"});
    if start + 50 < g.conversations.len() {
        body["cursor"] = json!(engine.encode(format!("off:{}", start + 50)));
    }
    Json(body).into_response()
}
