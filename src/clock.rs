//! The one clock: everything that reads time (the decision core's `now`, cache expiry,
//! staleness, refetch cooldowns, fetchers, blocks, Redis state, sessions) takes it from an
//! injected [`Clock`], so a test moves time instead of sleeping.

use crate::decision::UnixTime;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + 'static {
    /// Unix milliseconds.
    fn now_millis(&self) -> i64;

    /// Unix seconds (what the decision core and token time checks use).
    fn now(&self) -> UnixTime {
        UnixTime(self.now_millis().div_euclid(1000))
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        i64::try_from(millis).unwrap_or(i64::MAX)
    }
}

/// A clock that moves only when told to: for tests and replays.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    /// Starts at `unix_secs`.
    pub fn at(unix_secs: i64) -> Self {
        Self(AtomicI64::new(unix_secs.saturating_mul(1000)))
    }

    /// Starts at the system time now.
    pub fn starting_now() -> Self {
        Self(AtomicI64::new(SystemClock.now_millis()))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    pub fn set_secs(&self, unix_secs: i64) {
        self.0.store(unix_secs.saturating_mul(1000), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
