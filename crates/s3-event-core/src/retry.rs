//! One retry policy for everything that retries: the notifier's deliveries
//! and the sink's uploads. A caller classifies each failure ([`Retry`]) and
//! asks the policy how long to wait before the next attempt.
//!
//! ```
//! use std::time::Duration;
//! use s3_event_core::retry::RetryPolicy;
//!
//! let p = RetryPolicy { jitter: 0.0, ..RetryPolicy::default() };
//! assert_eq!(p.delay(1), Duration::from_millis(100));
//! assert_eq!(p.delay(2), Duration::from_millis(200));
//! assert_eq!(p.delay(20), Duration::from_secs(30)); // capped
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Exponential backoff with jitter.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay before the first retry. Default 100 ms.
    pub initial: Duration,
    /// Largest delay between retries. Default 30 s.
    pub max: Duration,
    /// Factor applied to the delay after each failure. Default 2.
    pub multiplier: f64,
    /// Fraction of the delay randomized, in `0.0..=1.0`: the delay is
    /// multiplied by a factor in `1 - jitter ..= 1 + jitter`. Default 0.2.
    pub jitter: f64,
    /// Attempts after which a failing batch is given up (dead-lettered by
    /// the notifier); `None` (the default) retries forever and never drops
    /// an event. The sink never gives up an upload.
    pub max_attempts: Option<u32>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.2,
            max_attempts: None,
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based), jitter included,
    /// never over [`RetryPolicy::max`].
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = self.initial.as_secs_f64()
            * self
                .multiplier
                .max(1.0)
                .powi(attempt.saturating_sub(1).min(64) as i32);
        let base = base.min(self.max.as_secs_f64());
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * random_unit() - 1.0);
        Duration::from_secs_f64((base * factor).clamp(0.0, self.max.as_secs_f64()))
    }

    /// The delay before the next attempt after a failure classified as
    /// `retry` (attempt `attempt`, 1-based): [`RetryPolicy::delay`], or the
    /// server's `Retry-After` when it asked for longer (a server that says
    /// when to come back is not asked again sooner).
    pub fn delay_for(&self, retry: &Retry, attempt: u32) -> Duration {
        let delay = self.delay(attempt);
        match retry {
            Retry::After(after) => delay.max(*after),
            _ => delay,
        }
    }

    /// Whether attempt `attempt` (1-based) is past
    /// [`RetryPolicy::max_attempts`].
    pub fn exhausted(&self, attempt: u32) -> bool {
        self.max_attempts.is_some_and(|m| attempt >= m)
    }
}

/// How a failure is to be retried, as its caller classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retry {
    /// It may go away by itself (a timeout, a 5xx, throttling): retry.
    Transient,
    /// The server said when to come back.
    After(Duration),
    /// Retrying will not fix it (a refused credential, a missing bucket, an
    /// invalid request): the reason, for logs, health and metrics.
    Permanent(String),
}

/// A number in `0.0..1.0` for jitter (not cryptographic): xorshift64*
/// seeded per thread from the clock. Jitter only needs to spread retries
/// apart, so a generator crate would be more than is needed.
fn random_unit() -> f64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1,
        );
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_stay_within_the_jitter_and_are_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..=12 {
            let base = (0.1 * 2f64.powi(attempt as i32 - 1)).min(30.0);
            for _ in 0..50 {
                let d = p.delay(attempt).as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(30.0) + 1e-9,
                    "{attempt}: {d}"
                );
            }
        }
        // A server's Retry-After is a floor: longer than the backoff wins,
        // shorter does not shorten it.
        assert_eq!(
            p.delay_for(&Retry::After(Duration::from_secs(120)), 1),
            Duration::from_secs(120)
        );
        let d = p.delay_for(&Retry::After(Duration::from_millis(1)), 12);
        assert!(d >= Duration::from_secs(24), "{d:?}");
        assert!(p.delay_for(&Retry::Transient, 1) <= Duration::from_millis(120));
        assert!(!p.exhausted(100));
        let limited = RetryPolicy {
            max_attempts: Some(3),
            ..p
        };
        assert!(!limited.exhausted(2) && limited.exhausted(3));
    }
}
