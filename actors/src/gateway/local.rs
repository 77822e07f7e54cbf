//! The gateway's limits and cache in this process: what serves without Redis, and what
//! serves while Redis is down.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::ports::{Completion, RateLimiter, ResponseCache};
use crate::resilience::limiter::{RateLimit, TokenBucket};
use crate::sync::lock;

/// Token buckets in this process.
#[derive(Default)]
pub struct MemoryRateLimiter {
    buckets: Mutex<HashMap<String, TokenBucket>>,
}

/// Buckets kept before idle ones are forgotten (a full bucket carries no information).
const MAX_BUCKETS: usize = 100_000;

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn acquire(&self, key: &str, limit: &RateLimit) -> Result<(), Duration> {
        let now = Instant::now().into_std();
        let mut buckets = lock(&self.buckets);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(key) {
            // Forget only full buckets: they hold no information.
            buckets.retain(|_, bucket| {
                let capacity = f64::from(bucket.limit().burst);
                bucket.available(now) < capacity
            });
        }
        let bucket = buckets
            .entry(key.to_owned())
            .or_insert_with(|| TokenBucket::new(limit.clone(), now));
        bucket.reconfigure(limit.clone(), now);
        bucket.try_take(now)
    }
}

/// A bounded in-process cache with expiry.
pub struct MemoryCache {
    entries: Mutex<HashMap<String, (Instant, Completion)>>,
    max_entries: usize,
}

impl MemoryCache {
    pub fn new(max_entries: usize) -> MemoryCache {
        MemoryCache {
            entries: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }
}

#[async_trait]
impl ResponseCache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Completion> {
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some((expires, completion)) if *expires > Instant::now() => Some(completion.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    async fn put(&self, key: &str, completion: &Completion, ttl: Duration) {
        let now = Instant::now();
        let mut entries = lock(&self.entries);
        if entries.len() >= self.max_entries {
            entries.retain(|_, (expires, _)| *expires > now);
            if entries.len() >= self.max_entries {
                // Still full of live entries: make room by forgetting an arbitrary one.
                if let Some(victim) = entries.keys().next().cloned() {
                    entries.remove(&victim);
                }
            }
        }
        let expires = now.checked_add(ttl).unwrap_or(now);
        entries.insert(key.to_owned(), (expires, completion.clone()));
    }
}
