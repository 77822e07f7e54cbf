//! Redis for shared rate limits and the LLM response cache (needed when several replicas
//! run). Redis is optional and never on the critical path: when it cannot be reached, the
//! in-process limiter and cache serve instead, a warning is logged, `redis_fallback_active`
//! turns 1, and Redis is tried again after a short pause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use vitte_actors::gateway::{MemoryCache, MemoryRateLimiter};
use vitte_actors::metrics::Metrics;
use vitte_actors::ports::{Completion, RateLimiter, ResponseCache};
use vitte_actors::resilience::limiter::RateLimit;

/// How long Redis is left alone after it failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(2);
/// Redis answers in well under a millisecond; anything slower is treated as an outage.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(300);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Rate limits and cache in Redis, with in-process fallbacks.
pub struct RedisBackend {
    client: redis::Client,
    connection: Mutex<Option<ConnectionManager>>,
    connecting: AtomicBool,
    resting_until: Mutex<Option<Instant>>,
    fallback_limiter: MemoryRateLimiter,
    fallback_cache: MemoryCache,
    metrics: Metrics,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisBackend {
    /// Prepares the client; nothing is connected until first use, so a Redis that is down at
    /// start-up degrades like one that goes down later.
    pub fn new(
        url: &str,
        cache_entries: usize,
        metrics: Metrics,
    ) -> Result<RedisBackend, redis::RedisError> {
        Ok(RedisBackend {
            client: redis::Client::open(url)?,
            connection: Mutex::new(None),
            connecting: AtomicBool::new(false),
            resting_until: Mutex::new(None),
            fallback_limiter: MemoryRateLimiter::default(),
            fallback_cache: MemoryCache::new(cache_entries),
            metrics,
        })
    }

    /// A connection, or `None` while Redis is resting after a failure.
    async fn connection(&self) -> Option<ConnectionManager> {
        if lock(&self.resting_until).is_some_and(|until| Instant::now() < until) {
            return None;
        }
        if let Some(connection) = lock(&self.connection).clone() {
            return Some(connection);
        }
        // One caller connects; the others use the fallbacks meanwhile.
        if self.connecting.swap(true, Ordering::SeqCst) {
            return None;
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT)
            .set_number_of_retries(1);
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await;
        self.connecting.store(false, Ordering::SeqCst);
        match connected {
            Ok(Ok(connection)) => {
                *lock(&self.connection) = Some(connection.clone());
                Some(connection)
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                None
            }
            Err(_) => {
                self.failed("no connection within the timeout");
                None
            }
        }
    }

    fn failed(&self, error: &str) {
        if self.metrics.redis_fallback_active.get() == 0 {
            tracing::warn!(%error, "Redis is unreachable: in-process rate limits and cache serve until it is back");
        }
        self.metrics.redis_fallback_active.set(1);
        *lock(&self.resting_until) = Some(Instant::now() + RETRY_AFTER_FAILURE);
        // Start afresh next time: the manager's own reconnects could stall a request.
        *lock(&self.connection) = None;
    }

    fn succeeded(&self) {
        if self.metrics.redis_fallback_active.get() != 0 {
            tracing::info!("Redis is reachable again");
            self.metrics.redis_fallback_active.set(0);
        }
    }

    /// Whether Redis answered the last time it was asked (for the health report).
    pub fn is_degraded(&self) -> bool {
        self.metrics.redis_fallback_active.get() != 0
    }
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[async_trait]
impl RateLimiter for RedisBackend {
    /// A fixed one-minute window per key in Redis (shared by every replica): at most
    /// `per_minute` requests per window; `burst` applies only to the in-process fallback.
    async fn acquire(&self, key: &str, limit: &RateLimit) -> Result<(), Duration> {
        let Some(mut connection) = self.connection().await else {
            return self.fallback_limiter.acquire(key, limit).await;
        };
        let now = unix_seconds();
        let window_key = format!("vitte:rl:{key}:{}", now / 60);
        let counted: redis::RedisResult<(u64, u64)> = redis::pipe()
            .atomic()
            .incr(&window_key, 1)
            .expire(&window_key, 120)
            .query_async(&mut connection)
            .await;
        match counted {
            Ok((count, _)) => {
                self.succeeded();
                if count <= u64::from(limit.per_minute) {
                    Ok(())
                } else {
                    Err(Duration::from_secs(60 - now % 60))
                }
            }
            Err(error) => {
                self.failed(&error.to_string());
                self.fallback_limiter.acquire(key, limit).await
            }
        }
    }
}

#[async_trait]
impl ResponseCache for RedisBackend {
    async fn get(&self, key: &str) -> Option<Completion> {
        let Some(mut connection) = self.connection().await else {
            return self.fallback_cache.get(key).await;
        };
        let found: redis::RedisResult<Option<String>> = redis::cmd("GET")
            .arg(format!("vitte:{key}"))
            .query_async(&mut connection)
            .await;
        match found {
            Ok(value) => {
                self.succeeded();
                value.and_then(|json| serde_json::from_str(&json).ok())
            }
            Err(error) => {
                self.failed(&error.to_string());
                self.fallback_cache.get(key).await
            }
        }
    }

    async fn put(&self, key: &str, completion: &Completion, ttl: Duration) {
        let Ok(json) = serde_json::to_string(completion) else {
            return;
        };
        let Some(mut connection) = self.connection().await else {
            return self.fallback_cache.put(key, completion, ttl).await;
        };
        let stored: redis::RedisResult<()> = redis::cmd("SET")
            .arg(format!("vitte:{key}"))
            .arg(json)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut connection)
            .await;
        match stored {
            Ok(()) => self.succeeded(),
            Err(error) => {
                self.failed(&error.to_string());
                self.fallback_cache.put(key, completion, ttl).await;
            }
        }
    }
}
