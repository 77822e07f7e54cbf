//! Shared limits and caches of the LLM gateway: in-process, or in Redis when several replicas
//! run.

use std::time::Duration;

use async_trait::async_trait;

use super::Completion;
use crate::resilience::limiter::RateLimit;

/// A shared rate limiter.
#[async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    /// Takes one request from the bucket `key`, or says how long until one is available.
    async fn acquire(&self, key: &str, limit: &RateLimit) -> Result<(), Duration>;
}

/// A cache of deterministic LLM answers.
#[async_trait]
pub trait ResponseCache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<Completion>;
    async fn put(&self, key: &str, completion: &Completion, ttl: Duration);
}
