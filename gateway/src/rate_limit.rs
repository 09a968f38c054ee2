//! Rate limiting: a token bucket per key, refilled continuously — per tenant for the API's
//! requests, per source address for failed authentications (before anyone is known, so a
//! flood of garbage tokens costs neither verification nor an audit write per request). Pure
//! state, driven with explicit instants so it tests without sleeping.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fogshell_shared::TenantId;

/// How many requests a tenant may make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Requests a tenant may make at once (the bucket's size; `X-RateLimit-Limit`).
    pub burst: u32,
    /// Requests per second the bucket refills by.
    pub per_second: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            burst: 100,
            per_second: 20.0,
        }
    }
}

/// The answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may go ahead.
    pub allowed: bool,
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`, after this request.
    pub remaining: u32,
    /// `Retry-After` when refused: whole seconds until one request is allowed again.
    pub retry_after_secs: u64,
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets by key: a tenant, or a source address.
pub struct RateLimiter<K = TenantId> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K> std::fmt::Debug for RateLimiter<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("limit", &self.limit)
            .finish()
    }
}

/// Tenants idle this long are forgotten (their bucket is full again anyway).
const FORGET_AFTER: Duration = Duration::from_secs(600);

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter applying `limit` to every key.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `key`'s bucket is empty at `now`, without taking from it: the whole seconds
    /// until it holds one request again.
    pub fn exhausted(&self, key: &K, now: Instant) -> Option<u64> {
        let mut buckets = fogshell_shared::sync::lock(&self.buckets);
        let bucket = buckets.get_mut(key)?;
        let tokens = self.refill(bucket, now);
        (tokens < 1.0).then(|| self.retry_after(tokens))
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) -> f64 {
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens =
            (bucket.tokens + elapsed * self.limit.per_second).min(f64::from(self.limit.burst));
        bucket.updated = now;
        bucket.tokens
    }

    fn retry_after(&self, tokens: f64) -> u64 {
        ((1.0 - tokens) / self.limit.per_second).ceil().max(1.0) as u64
    }

    /// Takes one request from `key`'s bucket at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Decision {
        let RateLimit { burst, .. } = self.limit;
        let mut buckets = fogshell_shared::sync::lock(&self.buckets);
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.updated) < FORGET_AFTER);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(burst),
            updated: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision {
                allowed: true,
                limit: burst,
                remaining: bucket.tokens.floor() as u32,
                retry_after_secs: 0,
            }
        } else {
            Decision {
                allowed: false,
                limit: burst,
                remaining: 0,
                retry_after_secs: self.retry_after(bucket.tokens),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusals_then_refill_per_tenant() {
        let limiter = RateLimiter::new(RateLimit {
            burst: 3,
            per_second: 1.0,
        });
        let (a, b): (TenantId, TenantId) = ("org:a".parse().unwrap(), "org:b".parse().unwrap());
        let t0 = Instant::now();
        let remaining: Vec<_> = (0..3).map(|_| limiter.check(&a, t0).remaining).collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(&a, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_secs, 1);
        assert!(
            limiter.check(&b, t0).allowed,
            "another tenant has its own bucket"
        );
        assert!(limiter.check(&a, t0 + Duration::from_millis(1100)).allowed);
        assert!(!limiter.check(&a, t0 + Duration::from_millis(1200)).allowed);
    }

    #[test]
    fn exhaustion_is_seen_without_taking_and_ends_with_the_refill() {
        let limiter: RateLimiter<std::net::IpAddr> = RateLimiter::new(RateLimit {
            burst: 2,
            per_second: 0.5,
        });
        let ip = std::net::IpAddr::from([198, 18, 0, 7]);
        let t0 = Instant::now();
        assert_eq!(limiter.exhausted(&ip, t0), None, "an address never seen");
        limiter.check(&ip, t0);
        assert_eq!(limiter.exhausted(&ip, t0), None);
        limiter.check(&ip, t0);
        assert_eq!(limiter.exhausted(&ip, t0), Some(2));
        assert_eq!(limiter.exhausted(&ip, t0), Some(2), "looking takes nothing");
        assert_eq!(limiter.exhausted(&ip, t0 + Duration::from_secs(2)), None);
    }
}
