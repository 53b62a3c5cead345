//! Rate limiting of failed authentication per client IP: after [`MAX_FAILURES`] failures within
//! [`WINDOW`], every request from that IP gets 429 until the window ends, even with a good token
//! (so that guessing cannot go on while a valid token is in use from the same address).
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are remembered; when full, expired
//! windows are dropped first, then the oldest one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
pub const MAX_TRACKED: usize = 4096;

/// Failure counts per IP, one fixed window each.
#[derive(Default)]
pub struct FailureLimiter {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
}

impl FailureLimiter {
    pub fn new() -> FailureLimiter {
        FailureLimiter::default()
    }

    /// `Some(seconds to wait)` while `ip` is blocked.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        self.blocked_at(ip, Instant::now())
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        self.failed_at(ip, Instant::now())
    }

    fn blocked_at(&self, ip: IpAddr, now: Instant) -> Option<u64> {
        let windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        let w = windows.get(&ip)?;
        let ends = w.started + WINDOW;
        if w.failures >= MAX_FAILURES && now < ends {
            // Round up: a client that waits exactly this long is let in.
            let left = ends - now;
            Some(left.as_secs() + u64::from(left.subsec_nanos() > 0))
        } else {
            None
        }
    }

    fn failed_at(&self, ip: IpAddr, now: Instant) {
        let mut windows = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if !windows.contains_key(&ip) && windows.len() >= MAX_TRACKED {
            windows.retain(|_, w| now < w.started + WINDOW);
            if windows.len() >= MAX_TRACKED {
                if let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, w)| w.started)
                    .map(|(k, _)| *k)
                {
                    windows.remove(&oldest);
                }
            }
        }
        let w = windows.entry(ip).or_insert(Window {
            started: now,
            failures: 0,
        });
        if now >= w.started + WINDOW {
            *w = Window {
                started: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.windows.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let limiter = FailureLimiter::new();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            limiter.failed_at(ip, t0);
        }
        assert_eq!(limiter.blocked_at(ip, t0), None);
        limiter.failed_at(ip, t0);
        assert_eq!(limiter.blocked_at(ip, t0), Some(60));
        assert_eq!(
            limiter.blocked_at(ip, t0 + Duration::from_millis(59_500)),
            Some(1)
        );
        assert_eq!(limiter.blocked_at(ip, t0 + WINDOW), None);
        // Another address is not affected.
        assert_eq!(limiter.blocked_at("192.0.2.2".parse().unwrap(), t0), None);
        // A new window starts from zero.
        limiter.failed_at(ip, t0 + WINDOW);
        assert_eq!(limiter.blocked_at(ip, t0 + WINDOW), None);
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = FailureLimiter::new();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            limiter.failed_at(IpAddr::from(i.to_be_bytes()), t0);
        }
        assert_eq!(limiter.tracked(), MAX_TRACKED);
    }
}
