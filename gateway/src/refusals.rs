//! Refused authentications, recorded one by one only up to a budget per source address.
//!
//! Every refusal is evidence (`policy.denied`, a durable write), which makes a flood of
//! garbage tokens a flood of fsyncs. Each address may have its refusals recorded at a bounded
//! rate; past it they are still refused, counted, and the count goes into the next record the
//! address earns ("and 280 more refusals from 198.18.0.7 since the last record"). A refusal
//! not recorded on its own points at the last record of its address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::rate_limit::{RateLimit, RateLimiter};

/// Refusals an address may have recorded at once, and per second after.
pub const RECORDED_REFUSALS: RateLimit = RateLimit {
    burst: 30,
    per_second: 1.0,
};

/// What a refusal from an address gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recording {
    /// A record of its own, mentioning this many refusals not recorded since the last one.
    Record { unrecorded: u64 },
    /// No record: it is counted, and pointed at the address's last record.
    Counted { last_record: Option<String> },
}

/// The budget of every address.
#[derive(Debug)]
pub struct RefusalBudget {
    budget: RateLimiter<IpAddr>,
    unrecorded: Mutex<HashMap<IpAddr, (u64, Option<String>)>>,
}

impl Default for RefusalBudget {
    fn default() -> Self {
        Self::new(RECORDED_REFUSALS)
    }
}

impl RefusalBudget {
    /// Budgets of `limit` per address.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            budget: RateLimiter::new(limit),
            unrecorded: Mutex::default(),
        }
    }

    /// A refusal from `address` at `now`: recorded, or only counted.
    pub fn refused(&self, address: IpAddr, now: Instant) -> Recording {
        let mut unrecorded = fogshell_shared::sync::lock(&self.unrecorded);
        if self.budget.check(&address, now).allowed {
            let count = unrecorded
                .get_mut(&address)
                .map_or(0, |(n, _)| std::mem::take(n));
            Recording::Record { unrecorded: count }
        } else {
            if unrecorded.len() > 10_000 {
                // Addresses that sent a flood once and went: their counts go unreported.
                unrecorded.retain(|_, (n, _)| *n > 0);
            }
            let entry = unrecorded.entry(address).or_default();
            entry.0 += 1;
            Recording::Counted {
                last_record: entry.1.clone(),
            }
        }
    }

    /// The record a refusal from `address` got, for the refusals counted after it.
    pub fn recorded(&self, address: IpAddr, pointer: Option<String>) {
        fogshell_shared::sync::lock(&self.unrecorded)
            .entry(address)
            .or_default()
            .1 = pointer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_its_budget_an_address_is_counted_and_the_count_reported_later() {
        let budget = RefusalBudget::new(RateLimit {
            burst: 2,
            per_second: 1.0,
        });
        let ip = IpAddr::from([198, 18, 0, 7]);
        let other = IpAddr::from([198, 18, 0, 8]);
        let t0 = Instant::now();
        assert_eq!(budget.refused(ip, t0), Recording::Record { unrecorded: 0 });
        budget.recorded(ip, Some("/v1/events/ev-1".into()));
        assert_eq!(budget.refused(ip, t0), Recording::Record { unrecorded: 0 });
        budget.recorded(ip, Some("/v1/events/ev-2".into()));
        for _ in 0..3 {
            assert_eq!(
                budget.refused(ip, t0),
                Recording::Counted {
                    last_record: Some("/v1/events/ev-2".into())
                }
            );
        }
        // Another address has its own budget.
        assert_eq!(
            budget.refused(other, t0),
            Recording::Record { unrecorded: 0 }
        );
        // Once the budget refills, the next record carries the count.
        let later = t0 + std::time::Duration::from_secs(1);
        assert_eq!(
            budget.refused(ip, later),
            Recording::Record { unrecorded: 3 }
        );
        assert_eq!(
            budget.refused(ip, later),
            Recording::Counted {
                last_record: Some("/v1/events/ev-2".into())
            }
        );
    }
}
