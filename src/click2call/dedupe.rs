//! Double-click protection: the same `ramal` + `telefone` (or the same `Idempotency-Key`)
//! within its window joins the first attempt instead of ringing the operator again.
//!
//! Entries expire in insertion order from a queue, so each claim costs O(1) amortised, never
//! a scan of past calls. A failed attempt does not block the next click: only attempts still
//! running or that placed a call are joined.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Click2CallError, Placed};
use crate::domain::values::{IdempotencyKey, Ramal, Telefone};

/// What waiters of one attempt see: `None` until the attempt is decided.
pub type Outcome = Option<Result<Placed, Click2CallError>>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(Ramal, Telefone),
    Idempotency(IdempotencyKey),
}

struct Entry {
    seq: u64,
    ramal: Ramal,
    telefone: Telefone,
    outcome: watch::Receiver<Outcome>,
}

impl Entry {
    fn joinable(&self) -> bool {
        !matches!(*self.outcome.borrow(), Some(Err(_)))
    }
}

/// The result of a claim.
pub enum Claim {
    /// A new attempt: the caller places the call and publishes its outcome here.
    New(watch::Sender<Outcome>),
    /// An earlier attempt within the window: wait for (or read) its outcome.
    Join(watch::Receiver<Outcome>),
    /// The key was used for another ramal or telefone.
    KeyReused,
}

pub struct Dedupe {
    pair_window: Duration,
    key_window: Duration,
    entries: HashMap<Key, Entry>,
    /// One queue per window, so each is sorted by deadline.
    pair_expiry: VecDeque<(Instant, Key, u64)>,
    key_expiry: VecDeque<(Instant, Key, u64)>,
    seq: u64,
}

impl Dedupe {
    pub fn new(pair_window: Duration, key_window: Duration) -> Self {
        Dedupe {
            pair_window,
            key_window,
            entries: HashMap::new(),
            pair_expiry: VecDeque::new(),
            key_expiry: VecDeque::new(),
            seq: 0,
        }
    }

    /// Number of remembered attempts (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn claim(
        &mut self,
        now: Instant,
        ramal: &Ramal,
        telefone: &Telefone,
        key: Option<&IdempotencyKey>,
    ) -> Claim {
        self.expire(now);
        if let Some(k) = key
            && let Some(e) = self.entries.get(&Key::Idempotency(k.clone()))
            && e.joinable()
        {
            if e.ramal != *ramal || e.telefone != *telefone {
                return Claim::KeyReused;
            }
            return Claim::Join(e.outcome.clone());
        }
        let pair = Key::Pair(ramal.clone(), telefone.clone());
        if let Some(e) = self.entries.get(&pair)
            && e.joinable()
        {
            let rx = e.outcome.clone();
            if let Some(k) = key {
                // Later retries with this key find the same attempt.
                self.remember(now, Key::Idempotency(k.clone()), ramal, telefone, &rx);
            }
            return Claim::Join(rx);
        }
        let (tx, rx) = watch::channel(None);
        self.remember(now, pair, ramal, telefone, &rx);
        if let Some(k) = key {
            self.remember(now, Key::Idempotency(k.clone()), ramal, telefone, &rx);
        }
        Claim::New(tx)
    }

    fn remember(
        &mut self,
        now: Instant,
        key: Key,
        ramal: &Ramal,
        telefone: &Telefone,
        rx: &watch::Receiver<Outcome>,
    ) {
        self.seq += 1;
        let (window, queue) = match key {
            Key::Pair(..) => (self.pair_window, &mut self.pair_expiry),
            Key::Idempotency(_) => (self.key_window, &mut self.key_expiry),
        };
        if window.is_zero() {
            return;
        }
        queue.push_back((now + window, key.clone(), self.seq));
        self.entries.insert(
            key,
            Entry {
                seq: self.seq,
                ramal: ramal.clone(),
                telefone: telefone.clone(),
                outcome: rx.clone(),
            },
        );
    }

    /// Drops entries whose window has passed.
    fn expire(&mut self, now: Instant) {
        for queue in [&mut self.pair_expiry, &mut self.key_expiry] {
            while queue
                .front()
                .is_some_and(|(deadline, _, _)| *deadline <= now)
            {
                let (_, key, seq) = queue.pop_front().expect("front exists");
                if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                    self.entries.remove(&key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::values::CallId;

    fn r(s: &str) -> Ramal {
        Ramal::parse(s).unwrap()
    }
    fn t(s: &str) -> Telefone {
        Telefone::parse(s).unwrap()
    }

    fn placed() -> Outcome {
        Some(Ok(Placed {
            call_id: CallId::new(),
            answered: false,
        }))
    }

    #[test]
    fn a_second_click_joins_the_first_within_the_window_only() {
        let mut d = Dedupe::new(Duration::from_secs(5), Duration::from_secs(60));
        let t0 = Instant::now();
        let Claim::New(tx) = d.claim(t0, &r("1001"), &t("41988445566"), None) else {
            panic!("first claim is new")
        };
        let Claim::Join(rx) = d.claim(
            t0 + Duration::from_secs(4),
            &r("1001"),
            &t("(41) 98844-5566"),
            None,
        ) else {
            panic!("same pair joins")
        };
        tx.send(placed()).unwrap();
        assert!(matches!(*rx.borrow(), Some(Ok(_))));
        assert!(matches!(
            d.claim(
                t0 + Duration::from_secs(4),
                &r("1002"),
                &t("41988445566"),
                None
            ),
            Claim::New(_)
        ));
        assert!(matches!(
            d.claim(
                t0 + Duration::from_secs(6),
                &r("1001"),
                &t("41988445566"),
                None
            ),
            Claim::New(_)
        ));
    }

    #[test]
    fn a_failed_attempt_lets_the_next_click_try_again() {
        let mut d = Dedupe::new(Duration::from_secs(5), Duration::from_secs(60));
        let t0 = Instant::now();
        let Claim::New(tx) = d.claim(t0, &r("1001"), &t("41988445566"), None) else {
            panic!()
        };
        tx.send(Some(Err(Click2CallError::Busy))).unwrap();
        assert!(matches!(
            d.claim(t0, &r("1001"), &t("41988445566"), None),
            Claim::New(_)
        ));
    }

    #[test]
    fn idempotency_keys_outlive_the_pair_window_and_refuse_other_fields() {
        let mut d = Dedupe::new(Duration::from_secs(5), Duration::from_secs(60));
        let t0 = Instant::now();
        let k = IdempotencyKey::parse("abc-1").unwrap();
        let Claim::New(tx) = d.claim(t0, &r("1001"), &t("41988445566"), Some(&k)) else {
            panic!()
        };
        tx.send(placed()).unwrap();
        let later = t0 + Duration::from_secs(30);
        assert!(matches!(
            d.claim(later, &r("1001"), &t("41988445566"), Some(&k)),
            Claim::Join(_)
        ));
        assert!(matches!(
            d.claim(later, &r("1002"), &t("41988445566"), Some(&k)),
            Claim::KeyReused
        ));
        assert!(matches!(
            d.claim(later, &r("1001"), &t("41988445566"), None),
            Claim::New(_)
        ));
        assert!(matches!(
            d.claim(
                t0 + Duration::from_secs(61),
                &r("1001"),
                &t("41988445566"),
                Some(&k)
            ),
            Claim::New(_)
        ));
    }

    #[test]
    fn memory_is_bounded_by_the_window() {
        let mut d = Dedupe::new(Duration::from_secs(5), Duration::from_secs(5));
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            let _ = d.claim(now, &r(&i.to_string()), &t("41988445566"), None);
        }
        // 10 s of claims, 5 s window: about half remembered.
        assert!((4_990..=5_010).contains(&d.len()), "{}", d.len());
        assert!(IdempotencyKey::parse("bad key").is_none());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_none());
    }
}
