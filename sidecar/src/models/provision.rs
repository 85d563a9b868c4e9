//! Creating a model on the LLM platform and polling it until ACTIVE or FAILED: exponential
//! backoff with jitter, capped, honouring `Retry-After` on 429, retrying 5xx and transport
//! errors, within a maximum attempt count and a total deadline. Time is tokio's, so tests run
//! the whole loop under a paused clock.

use serde_json::Value;
use std::time::{Duration, SystemTime};

/// What the platform answered (or that it did not).
#[derive(Debug, Clone)]
pub enum Reply {
    Answer {
        status: u16,
        retry_after: Option<Duration>,
        body: Value,
    },
    Unreachable(String),
}

/// The platform's admin API, behind a trait so the poll loop can be driven by a script.
pub trait Platform {
    fn create(&self, body: &Value) -> impl Future<Output = Reply> + Send;
    fn get(&self, id: &str) -> impl Future<Output = Reply> + Send;
}

/// `Retry-After`: delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The platform over HTTP: `{base}/api/v2/ai/models`, bearer key.
pub struct HttpPlatform {
    pub base: String,
    pub key: crate::config::Secret,
    pub http: reqwest::Client,
}

impl HttpPlatform {
    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = match req.bearer_auth(self.key.expose()).send().await {
            Ok(r) => r,
            Err(e) => return Reply::Unreachable(e.without_url().to_string()),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, SystemTime::now()));
        let body = match resp.bytes().await {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return Reply::Unreachable(e.without_url().to_string()),
        };
        Reply::Answer {
            status,
            retry_after,
            body,
        }
    }
}

impl Platform for HttpPlatform {
    async fn create(&self, body: &Value) -> Reply {
        let url = format!("{}/api/v2/ai/models", self.base);
        self.send(self.http.post(url).json(body)).await
    }
    async fn get(&self, id: &str) -> Reply {
        let url = format!("{}/api/v2/ai/models/{id}", self.base);
        self.send(self.http.get(url)).await
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// First wait; doubles after each poll.
    pub initial: Duration,
    /// No backoff wait is longer (a `Retry-After` may be, within the deadline).
    pub cap: Duration,
    pub max_attempts: u32,
    /// From the first poll: past it, the loop gives up rather than wait.
    pub deadline: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_attempts: 60,
            deadline: Duration::from_secs(15 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Active(Value),
    Failed {
        reason: String,
        body: Value,
    },
    /// A 4xx other than 429: asking again will not help.
    Rejected {
        status: u16,
        message: String,
    },
    GaveUp {
        attempts: u32,
        last: String,
    },
    Deadline {
        attempts: u32,
        last: String,
    },
}

/// One line of progress: attempt, what was seen, how long until the next look.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub attempt: u32,
    pub seen: String,
    pub next_in: Duration,
}

/// The platform's message in an error body (`message`, or OpenAI's `error.message`).
pub fn message_of(body: &Value) -> String {
    body.get("message")
        .or_else(|| body.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or("no message")
        .chars()
        .take(300)
        .collect()
}

/// Full backoff for attempt `n` (0-based): `initial·2ⁿ`, capped, then jittered into its upper
/// half (`jitter` in [0, 1)), so waits never collapse to zero and clients spread out.
pub fn backoff(p: &Policy, n: u32, jitter: f64) -> Duration {
    let base = p
        .initial
        .saturating_mul(2u32.saturating_pow(n.min(20)))
        .min(p.cap);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Polls until ACTIVE or FAILED. `jitter` gives numbers in [0, 1).
pub async fn poll<P: Platform>(
    platform: &P,
    id: &str,
    policy: &Policy,
    jitter: &mut impl FnMut() -> f64,
    progress: &mut impl FnMut(&Progress),
) -> Outcome {
    let start = tokio::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (seen, asked_wait) = match platform.get(id).await {
            Reply::Answer {
                status: 200, body, ..
            } => match body.get("status").and_then(Value::as_str) {
                Some("ACTIVE") => return Outcome::Active(body),
                Some("FAILED") => {
                    let reason = body
                        .get("errorReason")
                        .and_then(Value::as_str)
                        .unwrap_or("the platform gave no errorReason")
                        .to_string();
                    return Outcome::Failed { reason, body };
                }
                Some(s) => (s.to_string(), None),
                None => ("an answer without a status".to_string(), None),
            },
            Reply::Answer {
                status: 429,
                retry_after,
                ..
            } => ("429 Too Many Requests".to_string(), retry_after),
            Reply::Answer { status, body, .. } if status >= 500 => {
                (format!("{status}: {}", message_of(&body)), None)
            }
            Reply::Answer { status, body, .. } => {
                return Outcome::Rejected {
                    status,
                    message: message_of(&body),
                };
            }
            Reply::Unreachable(e) => (format!("unreachable: {e}"), None),
        };
        if attempt >= policy.max_attempts {
            return Outcome::GaveUp {
                attempts: attempt,
                last: seen,
            };
        }
        let wait = asked_wait.unwrap_or_else(|| backoff(policy, attempt - 1, jitter()));
        if start.elapsed() + wait > policy.deadline {
            return Outcome::Deadline {
                attempts: attempt,
                last: seen,
            };
        }
        progress(&Progress {
            attempt,
            seen,
            next_in: wait,
        });
        tokio::time::sleep(wait).await;
    }
}

/// Creates the model: 202 (or 201) with an `id`. Only a 429 is retried (the platform did not
/// take the request); a 5xx or a lost answer may have created it, so those are reported.
pub async fn create<P: Platform>(
    platform: &P,
    body: &Value,
    policy: &Policy,
) -> Result<(String, Value), String> {
    for _ in 0..policy.max_attempts.max(1) {
        match platform.create(body).await {
            Reply::Answer {
                status: 201 | 202,
                body,
                ..
            } => {
                return match body.get("id").and_then(Value::as_str) {
                    Some(id) => Ok((id.to_string(), body.clone())),
                    None => Err("the platform accepted the model but sent no id".into()),
                };
            }
            Reply::Answer {
                status: 429,
                retry_after,
                ..
            } => {
                let wait = retry_after.unwrap_or(policy.initial).min(policy.deadline);
                tokio::time::sleep(wait).await;
            }
            Reply::Answer { status, body, .. } if status >= 500 => {
                return Err(format!(
                    "the platform answered {status} ({}); the model may or may not exist: list the models before creating it again",
                    message_of(&body)
                ));
            }
            Reply::Answer { status, body, .. } => {
                return Err(format!(
                    "the platform refused the model: {status} {}",
                    message_of(&body)
                ));
            }
            Reply::Unreachable(e) => {
                return Err(format!(
                    "no answer from the platform ({e}); the model may or may not exist"
                ));
            }
        }
    }
    Err("the platform kept answering 429".into())
}
