//! Log lines an outsider can trigger (refused connections and requests), at most one per key
//! per interval, each carrying how many were held back since the last one: a flood of bad
//! requests cannot flood the log.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys remembered before those whose interval has passed are forgotten.
const PRUNE_ABOVE: usize = 10_000;

pub struct LogLimit<K> {
    every: Duration,
    seen: Mutex<HashMap<K, (Instant, u64)>>,
}

impl<K: Hash + Eq> LogLimit<K> {
    pub fn new(every: Duration) -> Self {
        LogLimit {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// A minute apart per key.
    pub fn per_minute() -> Self {
        Self::new(Duration::from_secs(60))
    }

    /// `Some(held_back)` when this occurrence of `key` should be logged (with the number of
    /// occurrences not logged since the last line), `None` when it should be counted only.
    pub fn check(&self, key: K, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().expect("lock");
        if seen.len() > PRUNE_ABOVE {
            let every = self.every;
            seen.retain(|_, (at, _)| now.saturating_duration_since(*at) < every);
        }
        match seen.get_mut(&key) {
            Some((at, held)) if now.saturating_duration_since(*at) < self.every => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                let n = *held;
                *at = now;
                *held = 0;
                Some(n)
            }
            None => {
                seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_key_and_interval_with_the_count_held_back() {
        let l = LogLimit::new(Duration::from_secs(60));
        let t = Instant::now();
        assert_eq!(l.check("a", t), Some(0));
        assert_eq!(l.check("a", t + Duration::from_secs(1)), None);
        assert_eq!(l.check("a", t + Duration::from_secs(2)), None);
        assert_eq!(l.check("b", t + Duration::from_secs(2)), Some(0));
        assert_eq!(l.check("a", t + Duration::from_secs(61)), Some(2));
        assert_eq!(l.check("a", t + Duration::from_secs(62)), None);
    }
}
