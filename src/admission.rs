//! Who may hold a connection to one of our listeners, and how many: an allow-list applied at
//! accept, before a byte is read; caps on open connections in all and per address; every
//! refusal counted and logged at most once a minute per address.
//!
//! A connection that is refused here is closed at once and costs one accept; an admitted
//! one holds a [`Ticket`] that gives its place back when dropped, on every exit path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ipnet::IpNet;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

use crate::log_limit::LogLimit;
use crate::metrics;

/// An IPv4 client seen through an IPv6 socket (`::ffff:1.2.3.4`) is that IPv4 address: every
/// check (allow-lists, trusted proxies, caps, rate limits) sees the same address for it.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Whether `ip` (canonical) is in one of `nets`.
pub fn listed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The address is not on the listener's allow-list.
    NotAllowed,
    /// The listener holds its maximum of open connections.
    Full,
    /// This address holds its maximum of open connections.
    FullForAddress,
}

impl Refused {
    const ALL: [Refused; 3] = [Refused::NotAllowed, Refused::Full, Refused::FullForAddress];

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::NotAllowed => "not_allowed",
            Refused::Full => "max_connections",
            Refused::FullForAddress => "max_connections_per_ip",
        }
    }
}

/// The rules of one listener.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The metrics' and logs' name of the listener (`http`, `admin`, `dialer`).
    pub name: &'static str,
    /// `None`: everyone may connect; `Some`: only these (an empty list admits nobody).
    pub allowed: Option<Vec<IpNet>>,
    pub max_total: usize,
    pub max_per_ip: usize,
    /// Addresses the per-address cap does not apply to (trusted proxies carry everyone).
    pub exempt: Vec<IpNet>,
    /// What the log line about a refused address should tell the operator to change.
    pub hint: &'static str,
}

pub struct Admission {
    rules: Rules,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
    refused: [AtomicU64; 3],
    log: LogLimit<IpAddr>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("name", &self.rules.name)
            .finish_non_exhaustive()
    }
}

/// An admitted connection's place; dropping it frees the place.
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    pub fn new(rules: Rules) -> Arc<Self> {
        Arc::new(Admission {
            rules,
            open: Mutex::new((0, HashMap::new())),
            refused: Default::default(),
            log: LogLimit::per_minute(),
        })
    }

    /// Admits `peer` or says why not (counted and, once a minute per address, logged).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refused> {
        let ip = canonical(peer);
        let verdict = self.decide(ip);
        if let Err(why) = verdict {
            self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
            if let Some(held_back) = self.log.check(ip, Instant::now()) {
                tracing::warn!(
                    listener = self.rules.name,
                    peer = %ip,
                    reason = why.as_str(),
                    refused_since_last_line = held_back,
                    hint = self.rules.hint,
                    "connection closed at accept"
                );
            }
        }
        verdict.map(|()| Ticket {
            admission: self.clone(),
            ip,
        })
    }

    fn decide(&self, ip: IpAddr) -> Result<(), Refused> {
        if let Some(allowed) = &self.rules.allowed
            && !listed(allowed, ip)
        {
            return Err(Refused::NotAllowed);
        }
        let mut open = self.open.lock().expect("lock");
        if open.0 >= self.rules.max_total {
            return Err(Refused::Full);
        }
        let exempt = listed(&self.rules.exempt, ip);
        let mine = open.1.get(&ip).copied().unwrap_or(0);
        if !exempt && mine >= self.rules.max_per_ip {
            return Err(Refused::FullForAddress);
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Ok(())
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.lock().expect("lock").0
    }
}

/// `finaz_<name>_connections_open` and `finaz_<name>_connections_refused_total{reason}`.
impl Collector for Admission {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let name = self.rules.name;
        metrics::gauge(
            &mut enc,
            &format!("finaz_{name}_connections_open"),
            &format!("Connections open on the {name} listener."),
            self.open() as i64,
        )?;
        metrics::counter_family(
            &mut enc,
            &format!("finaz_{name}_connections_refused"),
            &format!("Connections to the {name} listener closed at accept, by reason."),
            "reason",
            Refused::ALL.map(|r| (r.as_str(), self.refused[r as usize].load(Ordering::Relaxed))),
        )
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.admission.open.lock().expect("lock");
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_ip_or_cidr;

    fn rules(allowed: Option<&[&str]>, total: usize, per_ip: usize) -> Rules {
        let nets = |l: &[&str]| l.iter().map(|s| parse_ip_or_cidr(s).unwrap()).collect();
        Rules {
            name: "test",
            allowed: allowed.map(nets),
            max_total: total,
            max_per_ip: per_ip,
            exempt: nets(&["10.0.0.5"]),
            hint: "",
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allow_list_sees_mapped_ipv4_as_ipv4() {
        let a = Admission::new(rules(Some(&["127.0.0.1", "52.67.0.0/16"]), 10, 10));
        assert!(a.admit(ip("::ffff:127.0.0.1")).is_ok());
        assert!(a.admit(ip("52.67.9.9")).is_ok());
        assert_eq!(a.admit(ip("127.0.0.2")).err(), Some(Refused::NotAllowed));
        assert_eq!(a.open(), 0, "tickets dropped at once give their place back");
    }

    #[test]
    fn caps_count_open_connections_and_free_them_on_drop() {
        let a = Admission::new(rules(None, 3, 2));
        let t1 = a.admit(ip("1.1.1.1")).unwrap();
        let _t2 = a.admit(ip("::ffff:1.1.1.1")).unwrap();
        assert_eq!(a.admit(ip("1.1.1.1")).err(), Some(Refused::FullForAddress));
        let _t3 = a.admit(ip("10.0.0.5")).unwrap();
        assert_eq!(a.admit(ip("2.2.2.2")).err(), Some(Refused::Full));
        drop(t1);
        assert!(a.admit(ip("1.1.1.1")).is_ok());
        let mut registry = metrics::Registry::default();
        registry.register_collector(Box::new(a.clone()));
        let out = metrics::encode(&registry);
        assert!(out.contains("finaz_test_connections_open 2\n"), "{out}");
        assert!(
            out.contains(
                "finaz_test_connections_refused_total{reason=\"max_connections_per_ip\"} 1"
            )
        );
        assert!(out.contains("finaz_test_connections_refused_total{reason=\"max_connections\"} 1"));
    }

    #[test]
    fn exempt_addresses_skip_only_the_per_address_cap() {
        let a = Admission::new(rules(None, 3, 1));
        let _held: Vec<_> = (0..3).map(|_| a.admit(ip("10.0.0.5")).unwrap()).collect();
        assert_eq!(a.admit(ip("10.0.0.5")).err(), Some(Refused::Full));
    }
}
