//! Edge security of the Finaz-facing listener: which address a request really comes from,
//! whether that address may call us, and whether it knows the `chave`.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::Secret;

/// The allow-list, the proxies whose `X-Forwarded-For` is believed, and the shared key.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Empty: everyone is allowed (written explicitly as `[]` in the config).
    pub allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub chave: Option<Secret>,
}

/// Why the edge refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    IpNotAllowed(IpAddr),
    MissingChave,
    WrongChave,
}

impl Edge {
    /// The client's address: the peer's, unless the peer is a trusted proxy, in which case
    /// the right-most `X-Forwarded-For` entry that is not itself a trusted proxy. A header
    /// from anyone else is ignored, so it cannot be used to pass the allow-list.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(&peer) {
            return peer;
        }
        let hops = forwarded_for
            .iter()
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Some(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                // An unreadable hop: stop believing the chain, keep the last trusted address.
                None => break,
            }
        }
        client
    }

    pub fn check_ip(&self, client: IpAddr) -> Result<(), Refusal> {
        let client = canonical(client);
        if self.allowed.is_empty() || self.allowed.iter().any(|n| n.contains(&client)) {
            Ok(())
        } else {
            Err(Refusal::IpNotAllowed(client))
        }
    }

    /// Compares the request's `chave` with ours in constant time (for equal lengths).
    pub fn check_chave(&self, given: Option<&str>) -> Result<(), Refusal> {
        let Some(expected) = &self.chave else {
            return Ok(());
        };
        match given {
            None | Some("") => Err(Refusal::MissingChave),
            Some(g) if constant_time_eq(g.as_bytes(), expected.expose().as_bytes()) => Ok(()),
            Some(_) => Err(Refusal::WrongChave),
        }
    }
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// An IPv4 client seen through an IPv6 socket (`::ffff:1.2.3.4`) is that IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// True when equal; the time taken depends only on the length, not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_ip_or_cidr;

    fn edge(allowed: &[&str], proxies: &[&str]) -> Edge {
        Edge {
            allowed: allowed
                .iter()
                .map(|s| parse_ip_or_cidr(s).unwrap())
                .collect(),
            trusted_proxies: proxies
                .iter()
                .map(|s| parse_ip_or_cidr(s).unwrap())
                .collect(),
            chave: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let e = edge(&["52.67.0.0/16"], &["10.0.0.5"]);
        // Untrusted peer: its header is ignored.
        assert_eq!(
            e.client_ip(ip("203.0.113.9"), &["52.67.1.1"]),
            ip("203.0.113.9")
        );
        // Trusted proxy: the right-most entry it did not add itself.
        assert_eq!(
            e.client_ip(ip("10.0.0.5"), &["1.1.1.1, 52.67.1.1"]),
            ip("52.67.1.1")
        );
        // A spoofed left-most entry does not win.
        assert_eq!(
            e.client_ip(ip("10.0.0.5"), &["52.67.1.1, 203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(e.client_ip(ip("10.0.0.5"), &[]), ip("10.0.0.5"));
        assert_eq!(e.client_ip(ip("10.0.0.5"), &["garbage"]), ip("10.0.0.5"));
        assert_eq!(
            e.client_ip(ip("10.0.0.5"), &["[2001:db8::1]:443"]),
            ip("2001:db8::1")
        );
    }

    #[test]
    fn allow_list_accepts_cidrs_and_mapped_ipv4() {
        let e = edge(&["52.67.0.0/16", "::1"], &[]);
        assert!(e.check_ip(ip("52.67.101.27")).is_ok());
        assert!(e.check_ip(ip("::ffff:52.67.101.27")).is_ok());
        assert!(e.check_ip(ip("::1")).is_ok());
        assert_eq!(
            e.check_ip(ip("8.8.8.8")),
            Err(Refusal::IpNotAllowed(ip("8.8.8.8")))
        );
        assert!(edge(&[], &[]).check_ip(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn chave_is_required_when_configured() {
        let mut e = edge(&[], &[]);
        assert!(e.check_chave(None).is_ok());
        e.chave = Some(Secret::new("s3cret-key"));
        assert_eq!(e.check_chave(None), Err(Refusal::MissingChave));
        assert_eq!(e.check_chave(Some("")), Err(Refusal::MissingChave));
        assert_eq!(e.check_chave(Some("s3cret-kex")), Err(Refusal::WrongChave));
        assert_eq!(e.check_chave(Some("s3cret")), Err(Refusal::WrongChave));
        assert!(e.check_chave(Some("s3cret-key")).is_ok());
    }
}
