//! The rate-limit budget all gateway instances share (the filters' distributed mode). Each
//! bucket lives in Redis and is refilled and drawn from by one Lua script, so concurrent
//! instances can never both take the same units; instances hold what they draw as local
//! allotments, and only ever under-use the budget, never exceed it.

use cxgate_state::{AllotAnswer, AllotRequest};
use redis::aio::ConnectionManager;
use std::time::Duration;
use tokio::sync::Mutex;

/// Refill by Redis' own clock (one clock for every instance), then grant what is there.
/// Levels are in scaled units (1 unit = period_ms), so a millisecond adds `rate`.
const ALLOT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
for i, key in ipairs(KEYS) do
  local full = tonumber(ARGV[3 * i - 2])
  local rate = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local b = redis.call('HMGET', key, 'level', 'at')
  local level = tonumber(b[1]) or full
  local at = tonumber(b[2]) or now
  if now > at then
    level = math.min(full, level + (now - at) * rate)
    at = now
  end
  local grant = math.min(level, want)
  redis.call('HSET', key, 'level', string.format('%.0f', level - grant), 'at', string.format('%.0f', at))
  redis.call('PEXPIRE', key, math.ceil(full / rate) + 60000)
  out[i] = grant
end
return out
";

pub struct Budget {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    conn: Mutex<Option<ConnectionManager>>,
    script: redis::Script,
}

impl Budget {
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Budget, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis url: {e}"))?;
        Ok(Budget {
            client,
            prefix: prefix.to_string(),
            timeout,
            conn: Mutex::new(None),
            script: redis::Script::new(ALLOT),
        })
    }

    /// A connection, made on first use and again after Redis went away.
    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout, ConnectionManager::new(self.client.clone()))
            .await
            .map_err(|_| "redis: connect timed out".to_string())?
            .map_err(|e| format!("redis: {e}"))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// `PING`, for the health check.
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let cmd = redis::cmd("PING");
        match tokio::time::timeout(self.timeout, cmd.query_async::<String>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                *self.conn.lock().await = None;
                Err(format!("redis: {e}"))
            }
            Err(_) => {
                *self.conn.lock().await = None;
                Err("redis: timed out".into())
            }
        }
    }

    pub async fn allot(&self, req: &AllotRequest) -> Result<AllotAnswer, String> {
        if req.buckets.is_empty() {
            return Ok(AllotAnswer::default());
        }
        let mut conn = self.connection().await?;
        let mut call = self.script.prepare_invoke();
        for b in &req.buckets {
            let full = b.capacity.saturating_mul(b.period_ms);
            call.key(format!("{}{}", self.prefix, b.key))
                .arg(full)
                .arg(b.rate)
                .arg(b.want.min(full));
        }
        let grants: Vec<u64> =
            match tokio::time::timeout(self.timeout, call.invoke_async(&mut conn)).await {
                Ok(Ok(g)) => g,
                Ok(Err(e)) => {
                    // Drop the connection so the next call reconnects.
                    *self.conn.lock().await = None;
                    return Err(format!("redis: {e}"));
                }
                Err(_) => {
                    *self.conn.lock().await = None;
                    return Err("redis: timed out".into());
                }
            };
        Ok(AllotAnswer { grants })
    }
}
