//! Redis for shared rate limits and the LLM response cache (needed when several replicas
//! run). Redis is optional: when it cannot be reached, the in-process limiter and cache serve
//! instead, a warning is logged, `redis_fallback_active` turns 1, and a reconnect is tried in
//! the background after a short pause. No user's message waits for Redis to connect; a Redis
//! that stops answering costs a request at most the response timeout (300 ms) once, then the
//! fallbacks serve until it is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use vitte_actors::gateway::{MemoryCache, MemoryRateLimiter};
use vitte_actors::metrics::Metrics;
use vitte_actors::ports::{Clock, Completion, RateLimiter, ResponseCache, SystemClock};
use vitte_actors::resilience::limiter::RateLimit;
use vitte_actors::sync::lock;

/// How long Redis is left alone after it failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// Redis answers in well under a millisecond; anything slower is treated as an outage.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A token bucket per key, the same model as the in-process limiter, shared by replicas.
/// KEYS[1] is the bucket; ARGV: capacity, refill per second, now (ms). Takes a token: returns
/// 0 when one was taken, else the milliseconds until one is available.
const TOKEN_BUCKET: &str = r#"
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or capacity
local at = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity * 1000 / rate) + 60000)
return wait
"#;

/// Rate limits and cache in Redis, with in-process fallbacks. Cheap to clone (shared state).
#[derive(Clone)]
pub struct RedisBackend {
    shared: Arc<Shared>,
}

struct Shared {
    client: redis::Client,
    bucket: redis::Script,
    connection: Mutex<Option<ConnectionManager>>,
    connecting: AtomicBool,
    resting_until: Mutex<Option<Instant>>,
    fallback_limiter: MemoryRateLimiter,
    fallback_cache: MemoryCache,
    metrics: Metrics,
}

/// The buckets' time: the system's clock, shared by every replica (so not the injected one,
/// which may be a test's).
fn unix_millis() -> i64 {
    SystemClock.now_millis()
}

impl RedisBackend {
    /// Prepares the client; nothing is connected until first use, so a Redis that is down at
    /// start-up degrades like one that goes down later.
    pub fn new(
        url: &str,
        cache_entries: usize,
        metrics: Metrics,
    ) -> Result<RedisBackend, redis::RedisError> {
        let shared = Arc::new(Shared {
            client: redis::Client::open(url)?,
            bucket: redis::Script::new(TOKEN_BUCKET),
            connection: Mutex::new(None),
            connecting: AtomicBool::new(false),
            resting_until: Mutex::new(None),
            fallback_limiter: MemoryRateLimiter::default(),
            fallback_cache: MemoryCache::new(cache_entries),
            metrics,
        });
        Ok(RedisBackend { shared })
    }

    /// The connection if there is one. Otherwise a connection attempt starts in the
    /// background (unless Redis is resting after a failure, or one is running) and the
    /// caller uses the fallbacks.
    fn connection(&self) -> Option<ConnectionManager> {
        let shared = &self.shared;
        if let Some(connection) = lock(&shared.connection).clone() {
            return Some(connection);
        }
        let resting = lock(&shared.resting_until).is_some_and(|until| Instant::now() < until);
        if !resting && !shared.connecting.swap(true, Ordering::SeqCst) {
            let shared = shared.clone();
            tokio::spawn(async move { shared.connect().await });
        }
        None
    }

    /// Starts connecting now (in the background), so the first requests can use Redis.
    pub fn connect_in_background(&self) {
        let _ = self.connection();
    }

    /// Whether the fallbacks are serving (for the health report).
    pub fn is_degraded(&self) -> bool {
        self.shared.metrics.redis_fallback_active.get() != 0
    }

    /// Takes a token from the bucket `key` in Redis: `Some(0)` when taken, `Some(ms)` to
    /// wait; `None` if Redis is not connected or failed.
    async fn take_token(&self, key: &str, limit: &RateLimit) -> Option<u64> {
        let mut connection = self.connection()?;
        let result: redis::RedisResult<u64> = self
            .shared
            .bucket
            .key(format!("vitte:rl:{key}"))
            .arg(limit.burst)
            .arg(f64::from(limit.per_minute) / 60.0)
            .arg(unix_millis())
            .invoke_async(&mut connection)
            .await;
        match result {
            Ok(wait_ms) => {
                self.shared.succeeded();
                Some(wait_ms)
            }
            Err(error) => {
                self.shared.failed(&error.to_string());
                None
            }
        }
    }
}

impl Shared {
    async fn connect(&self) {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        match connected {
            Ok(Ok(connection)) => {
                *lock(&self.connection) = Some(connection);
                self.succeeded();
            }
            Ok(Err(error)) => self.failed(&error.to_string()),
            Err(_) => self.failed("no connection within the timeout"),
        }
        self.connecting.store(false, Ordering::SeqCst);
    }

    fn failed(&self, error: &str) {
        if self.metrics.redis_fallback_active.get() == 0 {
            tracing::warn!(%error, "Redis is unreachable: in-process rate limits and cache serve until it is back");
        }
        self.metrics.redis_fallback_active.set(1);
        *lock(&self.resting_until) = Some(Instant::now() + RETRY_AFTER_FAILURE);
        // Start afresh after the pause: the manager's own reconnects could stall a request.
        *lock(&self.connection) = None;
    }

    fn succeeded(&self) {
        if self.metrics.redis_fallback_active.get() != 0 {
            tracing::info!("Redis is reachable again");
            self.metrics.redis_fallback_active.set(0);
        }
    }
}

#[async_trait]
impl RateLimiter for RedisBackend {
    async fn acquire(&self, key: &str, limit: &RateLimit) -> Result<(), Duration> {
        match self.take_token(key, limit).await {
            Some(0) => Ok(()),
            Some(wait_ms) => Err(Duration::from_millis(wait_ms)),
            None => self.shared.fallback_limiter.acquire(key, limit).await,
        }
    }
}

#[async_trait]
impl ResponseCache for RedisBackend {
    async fn get(&self, key: &str) -> Option<Completion> {
        let Some(mut connection) = self.connection() else {
            return self.shared.fallback_cache.get(key).await;
        };
        let found: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(format!("vitte:{key}"))
            .query_async(&mut connection)
            .await;
        match found {
            Ok(value) => {
                self.shared.succeeded();
                value.and_then(|json| serde_json::from_str(&json).ok())
            }
            Err(error) => {
                self.shared.failed(&error.to_string());
                self.shared.fallback_cache.get(key).await
            }
        }
    }

    async fn put(&self, key: &str, completion: &Completion, ttl: Duration) {
        let Ok(json) = serde_json::to_string(completion) else {
            return;
        };
        let Some(mut connection) = self.connection() else {
            return self.shared.fallback_cache.put(key, completion, ttl).await;
        };
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("vitte:{key}"))
            .arg(json)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut connection)
            .await;
        match stored {
            Ok(()) => self.shared.succeeded(),
            Err(error) => {
                self.shared.failed(&error.to_string());
                self.shared.fallback_cache.put(key, completion, ttl).await;
            }
        }
    }
}
