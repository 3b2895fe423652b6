//! Per-Page call budget over a rolling window, and the usage numbers that the
//! `X-App-Usage` and `X-Business-Use-Case-Usage` headers report.
//!
//! Calls are counted in time buckets of 1/1440 of the window (one minute for
//! a 24 h window), so memory stays bounded however many calls arrive. A
//! bucket expires with its first call, so a later call in it leaves the
//! window up to one bucket width early.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Number of buckets the window is divided into.
const BUCKETS_PER_WINDOW: u32 = 1440;

/// Call count reported as 100 % when the budget is unlimited, so the headers
/// still show usage rising under load.
const UNLIMITED_REFERENCE_CALLS: u64 = 100_000;
/// Highest percentage reported when the budget is unlimited.
const UNLIMITED_MAX_PERCENT: u64 = 9;

/// Usage percentages of one Page, as reported in the usage headers.
///
/// Only `call_count` triggers throttling. `total_time` and `total_cputime`
/// are fixed fractions of it, so they never exceed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Usage {
    pub call_count: u64,
    pub total_cputime: u64,
    pub total_time: u64,
    /// Minutes until a throttled Page may call again; 0 when not throttled.
    pub estimated_time_to_regain_access: u64,
}

impl Usage {
    fn from_percent(percent: u64, regain_minutes: u64) -> Self {
        Self {
            call_count: percent,
            total_cputime: percent / 4,
            total_time: percent / 2,
            estimated_time_to_regain_access: regain_minutes,
        }
    }
}

/// Result of asking the budget for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// The call was counted.
    Allowed(Usage),
    /// The Page is over budget; the call was not counted.
    Throttled(Usage),
}

#[derive(Debug, Default)]
struct PageCalls {
    /// (bucket start, calls in bucket), oldest first.
    buckets: VecDeque<(Instant, u64)>,
    total: u64,
}

impl PageCalls {
    fn expire(&mut self, now: Instant, window: Duration) {
        while let Some(&(start, count)) = self.buckets.front() {
            if now.saturating_duration_since(start) < window {
                break;
            }
            self.buckets.pop_front();
            self.total -= count;
        }
    }

    fn record(&mut self, now: Instant, bucket_width: Duration) {
        match self.buckets.back_mut() {
            Some((start, count)) if now.saturating_duration_since(*start) < bucket_width => {
                *count += 1;
            }
            _ => self.buckets.push_back((now, 1)),
        }
        self.total += 1;
    }

    /// Time until enough calls leave the window for one more call to fit.
    fn time_to_regain(&self, now: Instant, window: Duration, limit: u64) -> Duration {
        let excess = (self.total + 1).saturating_sub(limit);
        let mut expired = 0;
        for &(start, count) in &self.buckets {
            expired += count;
            if expired >= excess {
                return (start + window).saturating_duration_since(now);
            }
        }
        window
    }
}

/// Rolling-window call budget for every Page.
#[derive(Debug)]
pub(crate) struct Budget {
    window: Duration,
    bucket_width: Duration,
    limit: Option<u64>,
    pages: HashMap<String, PageCalls>,
}

impl Budget {
    pub fn new(limit: Option<u64>, window: Duration) -> Self {
        let window = window.max(Duration::from_millis(1));
        let bucket_width = (window / BUCKETS_PER_WINDOW).max(Duration::from_micros(1));
        Self {
            window,
            bucket_width,
            limit,
            pages: HashMap::new(),
        }
    }

    pub fn set_limit(&mut self, limit: Option<u64>) {
        self.limit = limit;
    }

    /// Counts one call for `page_id` unless the Page is over budget.
    pub fn admit(&mut self, page_id: &str, now: Instant) -> Admission {
        let (window, bucket_width, limit) = (self.window, self.bucket_width, self.limit);
        let calls = self.pages.entry(page_id.to_owned()).or_default();
        calls.expire(now, window);

        if let Some(limit) = limit {
            if calls.total >= limit {
                let regain = calls.time_to_regain(now, window, limit);
                return Admission::Throttled(Usage::from_percent(100, regain_minutes(regain)));
            }
        }
        calls.record(now, bucket_width);
        Admission::Allowed(Usage::from_percent(usage_percent(calls.total, limit), 0))
    }

    /// Reports usage of `page_id` without counting a call.
    pub fn usage(&mut self, page_id: &str, now: Instant) -> Usage {
        let (window, limit) = (self.window, self.limit);
        let Some(calls) = self.pages.get_mut(page_id) else {
            return Usage::from_percent(0, 0);
        };
        calls.expire(now, window);
        let regain = match limit {
            Some(limit) if calls.total >= limit => {
                regain_minutes(calls.time_to_regain(now, window, limit))
            }
            _ => 0,
        };
        Usage::from_percent(usage_percent(calls.total, limit), regain)
    }

    /// Reports app-wide usage: calls of all Pages against the sum of their
    /// budgets.
    pub fn app_usage(&mut self, page_count: usize, now: Instant) -> Usage {
        let window = self.window;
        let mut total = 0;
        for calls in self.pages.values_mut() {
            calls.expire(now, window);
            total += calls.total;
        }
        let page_count = u64::try_from(page_count.max(1)).unwrap_or(u64::MAX);
        let limit = self.limit.map(|limit| limit.saturating_mul(page_count));
        Usage::from_percent(usage_percent(total, limit), 0)
    }

    /// Forgets every counted call.
    pub fn reset(&mut self) {
        self.pages.clear();
    }
}

/// Percentage of the budget used, 0 to 100.
fn usage_percent(calls: u64, limit: Option<u64>) -> u64 {
    match limit {
        Some(0) => 100,
        Some(limit) => (calls.saturating_mul(100) / limit).min(100),
        None => (calls.saturating_mul(100) / UNLIMITED_REFERENCE_CALLS).min(UNLIMITED_MAX_PERCENT),
    }
}

/// Whole minutes, rounded up, and at least 1 because the value is only
/// reported while throttled.
fn regain_minutes(duration: Duration) -> u64 {
    duration.as_secs().div_ceil(60).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    fn allowed(admission: Admission) -> Usage {
        match admission {
            Admission::Allowed(usage) => usage,
            Admission::Throttled(usage) => panic!("call was throttled: {usage:?}"),
        }
    }

    #[test]
    fn percent_rises_to_hundred() {
        assert_eq!(usage_percent(0, Some(10)), 0);
        assert_eq!(usage_percent(5, Some(10)), 50);
        assert_eq!(usage_percent(10, Some(10)), 100);
        assert_eq!(usage_percent(50, Some(10)), 100);
        assert_eq!(usage_percent(1, Some(3)), 33);
        assert_eq!(usage_percent(1, Some(0)), 100);
    }

    #[test]
    fn unlimited_percent_stays_small() {
        assert_eq!(usage_percent(0, None), 0);
        assert_eq!(usage_percent(1_000, None), 1);
        assert_eq!(usage_percent(u64::MAX, None), UNLIMITED_MAX_PERCENT);
    }

    #[test]
    fn regain_rounds_up_to_minutes() {
        assert_eq!(regain_minutes(Duration::ZERO), 1);
        assert_eq!(regain_minutes(Duration::from_secs(61)), 2);
        assert_eq!(regain_minutes(Duration::from_secs(3600)), 60);
    }

    #[test]
    fn budget_throttles_at_limit() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(3), DAY);
        assert_eq!(allowed(budget.admit("p", start)).call_count, 33);
        assert_eq!(allowed(budget.admit("p", start)).call_count, 66);
        assert_eq!(allowed(budget.admit("p", start)).call_count, 100);

        match budget.admit("p", start + MINUTE) {
            Admission::Throttled(usage) => {
                assert_eq!(usage.call_count, 100);
                // The first call leaves the window 24 h after it was made.
                assert_eq!(usage.estimated_time_to_regain_access, 24 * 60 - 1);
            }
            Admission::Allowed(usage) => panic!("fourth call allowed: {usage:?}"),
        }
    }

    #[test]
    fn throttled_calls_are_not_counted() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(1), DAY);
        allowed(budget.admit("p", start));
        for _ in 0..5 {
            assert!(matches!(budget.admit("p", start), Admission::Throttled(_)));
        }
        assert_eq!(budget.pages["p"].total, 1);
    }

    #[test]
    fn calls_leave_rolling_window() {
        let start = Instant::now();
        let window = Duration::from_secs(10);
        let mut budget = Budget::new(Some(2), window);
        allowed(budget.admit("p", start));
        allowed(budget.admit("p", start + Duration::from_secs(5)));
        assert!(matches!(
            budget.admit("p", start + Duration::from_secs(6)),
            Admission::Throttled(_)
        ));
        // The first call leaves the window; the second is still in it.
        let usage = allowed(budget.admit("p", start + Duration::from_secs(11)));
        assert_eq!(usage.call_count, 100);
        assert_eq!(
            budget
                .usage("p", start + Duration::from_secs(16))
                .call_count,
            50
        );
        assert_eq!(
            budget
                .usage("p", start + Duration::from_secs(30))
                .call_count,
            0
        );
    }

    #[test]
    fn pages_have_separate_budgets() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(1), DAY);
        allowed(budget.admit("a", start));
        allowed(budget.admit("b", start));
        assert!(matches!(budget.admit("a", start), Admission::Throttled(_)));
        assert_eq!(budget.app_usage(2, start).call_count, 100);
        assert_eq!(budget.app_usage(4, start).call_count, 50);
    }

    #[test]
    fn raising_limit_lifts_throttle() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(1), DAY);
        allowed(budget.admit("p", start));
        assert!(matches!(budget.admit("p", start), Admission::Throttled(_)));
        budget.set_limit(Some(4));
        assert_eq!(allowed(budget.admit("p", start)).call_count, 50);
        budget.set_limit(None);
        assert_eq!(budget.usage("p", start).estimated_time_to_regain_access, 0);
    }

    #[test]
    fn usage_reports_regain_time_while_throttled() {
        let start = Instant::now();
        let mut budget = Budget::new(Some(1), Duration::from_secs(600));
        allowed(budget.admit("p", start));
        let usage = budget.usage("p", start + Duration::from_secs(30));
        assert_eq!(usage.call_count, 100);
        assert_eq!(usage.estimated_time_to_regain_access, 10);
        assert_eq!(budget.usage("unknown", start).call_count, 0);
    }
}
