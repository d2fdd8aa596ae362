//! When the inbound client tries FreeSWITCH again: refused ports at a short fixed pace (a
//! restarted switch is found within a second), connections accepted and then dropped with
//! capped exponential backoff that only a connection that stayed up resets; all jittered.

use std::time::Duration;

/// Between attempts on a port that refuses (or a host that cannot be reached): trying again
/// costs FreeSWITCH nothing, and a restarted switch should find us within about a second.
const REFUSED_RETRY: Duration = Duration::from_millis(500);

/// A connection that stayed up this long was healthy: its loss starts the backoff afresh.
/// Shorter ones (a switch that accepts and drops at once) keep growing it.
const STABLE: Duration = Duration::from_secs(30);

/// When to try again: refused ports at a short fixed pace, everything else with capped
/// exponential backoff; both jittered so that many adapters do not retry in step.
pub(crate) struct Backoff {
    next: Duration,
    initial: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial,
            initial,
            max,
        }
    }

    /// The delay after a failure; `accepted` failures grow the backoff.
    pub(crate) fn after_failure(&mut self, accepted: bool) -> Duration {
        let base = if accepted {
            let d = self.next;
            self.next = (self.next * 2).min(self.max);
            d
        } else {
            REFUSED_RETRY.min(self.max)
        };
        base.mul_f64(0.75 + fastrand::f64() * 0.5)
    }

    /// A connection that was up for `up` ended: healthy ones reset the backoff.
    pub(crate) fn after_connection(&mut self, up: Duration) -> Duration {
        if up >= STABLE {
            self.next = self.initial;
        }
        self.after_failure(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_stays_fast_drops_grow_and_only_a_stable_connection_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        for _ in 0..10 {
            assert!(b.after_failure(false) <= Duration::from_millis(625));
        }
        let grown: Vec<_> = (0..4).map(|_| b.after_failure(true)).collect();
        assert!(grown[3] >= Duration::from_millis(1200), "{grown:?}");
        // A short connection does not reset it...
        assert!(b.after_connection(Duration::from_secs(1)) >= Duration::from_millis(2400));
        // ...a stable one does.
        assert!(b.after_connection(STABLE) <= Duration::from_millis(250));
    }
}
