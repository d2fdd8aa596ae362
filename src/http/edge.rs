//! Edge security of the Finaz-facing listener: which address a request really comes from,
//! whether that address may call us, and whether it knows the `chave`.
//!
//! The one rule for the client's address ([`Edge::client`]), applied to the canonical peer
//! (IPv4-mapped IPv6 is IPv4):
//! - from a peer in `trusted_proxies`, the client is the rightmost address of
//!   `X-Forwarded-For` (every such header, in order; else RFC 7239 `Forwarded: for=`) that
//!   is not itself a trusted proxy. A missing, empty or unreadable header, or one holding
//!   anything but addresses, is refused: the proxy's own address is never used instead;
//! - from an untrusted loopback peer that carries a forwarding header (`X-Forwarded-For`,
//!   `Forwarded`, `X-Real-IP`): refused, it is a proxy on this host nobody listed, and
//!   believing its loopback address would let the whole internet in;
//! - from anyone else, the peer's own address (forwarding headers are ignored).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::admission::{canonical, listed};
use crate::config::Secret;

/// The allow-list, the proxies whose forwarding headers are believed, and the shared key.
#[derive(Debug, Clone)]
pub struct Edge {
    /// Empty: everyone is allowed (written explicitly as `[]` in the config).
    pub allowed: Vec<IpNet>,
    pub trusted_proxies: Vec<IpNet>,
    pub chave: Option<Secret>,
}

/// The forwarding headers of a request, as raw bytes (a proxy may pass anything through).
#[derive(Debug, Default)]
pub struct Forwarding<'a> {
    /// Every `X-Forwarded-For` header, in order.
    pub x_forwarded_for: Vec<&'a [u8]>,
    /// Every `Forwarded` header, in order.
    pub forwarded: Vec<&'a [u8]>,
    /// Whether an `X-Real-IP` header is present.
    pub x_real_ip: bool,
}

impl Forwarding<'_> {
    fn any(&self) -> bool {
        !self.x_forwarded_for.is_empty() || !self.forwarded.is_empty() || self.x_real_ip
    }
}

/// Why the edge refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    IpNotAllowed(IpAddr),
    /// A trusted proxy sent no usable client address; the text says what was wrong.
    ForwardedForInvalid(String),
    /// A loopback peer not in `trusted_proxies` carried forwarding headers.
    UntrustedProxy(IpAddr),
    MissingChave,
    WrongChave,
}

impl Edge {
    /// The client's address, by the rule in the module documentation.
    pub fn client(&self, peer: IpAddr, fwd: &Forwarding) -> Result<IpAddr, Refusal> {
        let peer = canonical(peer);
        if !listed(&self.trusted_proxies, peer) {
            if peer.is_loopback() && fwd.any() {
                return Err(Refusal::UntrustedProxy(peer));
            }
            return Ok(peer);
        }
        let (name, values) = if !fwd.x_forwarded_for.is_empty() {
            ("X-Forwarded-For", &fwd.x_forwarded_for)
        } else if !fwd.forwarded.is_empty() {
            ("Forwarded", &fwd.forwarded)
        } else {
            return Err(Refusal::ForwardedForInvalid(format!(
                "the trusted proxy {peer} sent no X-Forwarded-For or Forwarded header"
            )));
        };
        let mut hops = Vec::new();
        for raw in values {
            let text = std::str::from_utf8(raw)
                .ok()
                .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t'))
                .ok_or_else(|| {
                    Refusal::ForwardedForInvalid(format!("{name} is not readable text"))
                })?;
            for element in text.split(',') {
                let hop = if name == "Forwarded" {
                    forwarded_for(element)
                } else {
                    parse_hop(element.trim())
                };
                hops.push(hop.ok_or_else(|| {
                    Refusal::ForwardedForInvalid(format!(
                        "{name} holds {:?}, not an address",
                        element.trim()
                    ))
                })?);
            }
        }
        // Rightmost first: the first hop no trusted proxy added is the client; a chain of
        // nothing but trusted proxies started at the leftmost one.
        let client = hops
            .iter()
            .rev()
            .find(|ip| !listed(&self.trusted_proxies, **ip))
            .or(hops.first())
            .copied();
        client.ok_or_else(|| Refusal::ForwardedForInvalid(format!("{name} is empty")))
    }

    pub fn check_ip(&self, client: IpAddr) -> Result<(), Refusal> {
        let client = canonical(client);
        if self.allowed.is_empty() || listed(&self.allowed, client) {
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

/// `1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`, `[::1]`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(inner) = hop.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.60;proto=http`, `For="[2001:db8::1]:4711"`).
/// `unknown` and obfuscated identifiers are not addresses.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        parse_hop(v)
    })
}

/// True when equal; the time taken depends only on the length, not on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
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

    fn fwd<'a>(xff: &[&'a str], forwarded: &[&'a str], real_ip: bool) -> Forwarding<'a> {
        Forwarding {
            x_forwarded_for: xff.iter().map(|s| s.as_bytes()).collect(),
            forwarded: forwarded.iter().map(|s| s.as_bytes()).collect(),
            x_real_ip: real_ip,
        }
    }

    fn invalid(r: Result<IpAddr, Refusal>) -> bool {
        matches!(r, Err(Refusal::ForwardedForInvalid(_)))
    }

    /// Every row of the client-address rule, with a trusted proxy on 10.0.0.5 and one on
    /// loopback (127.0.0.1), and the default loopback allow-list entries.
    #[test]
    fn the_client_address_rule_row_by_row() {
        let e = edge(
            &["52.67.0.0/16", "127.0.0.1", "::1"],
            &["10.0.0.5", "127.0.0.1"],
        );
        let none = fwd(&[], &[], false);
        // Untrusted, not loopback: its own address, headers ignored.
        assert_eq!(
            e.client(ip("203.0.113.9"), &fwd(&["52.67.1.1"], &[], false)),
            Ok(ip("203.0.113.9"))
        );
        // Trusted proxy: the rightmost entry it did not add itself.
        assert_eq!(
            e.client(ip("10.0.0.5"), &fwd(&["1.1.1.1, 52.67.1.1"], &[], false)),
            Ok(ip("52.67.1.1"))
        );
        // A spoofed leftmost entry does not win.
        assert_eq!(
            e.client(
                ip("10.0.0.5"),
                &fwd(&["52.67.1.1, 203.0.113.9"], &[], false)
            ),
            Ok(ip("203.0.113.9"))
        );
        // Several headers are one list, in order; trusted hops are skipped.
        assert_eq!(
            e.client(
                ip("10.0.0.5"),
                &fwd(&["52.67.1.1", "203.0.113.9, 127.0.0.1"], &[], false)
            ),
            Ok(ip("203.0.113.9"))
        );
        // IPv4-mapped peers are the IPv4 proxy, and mapped hops are IPv4 clients.
        assert_eq!(
            e.client(
                ip("::ffff:127.0.0.1"),
                &fwd(&["::ffff:203.0.113.9"], &[], false)
            ),
            Ok(ip("203.0.113.9"))
        );
        assert_eq!(
            e.client(ip("10.0.0.5"), &fwd(&["[2001:db8::1]:443"], &[], false)),
            Ok(ip("2001:db8::1"))
        );
        // RFC 7239.
        assert_eq!(
            e.client(
                ip("10.0.0.5"),
                &fwd(
                    &[],
                    &["for=52.67.1.1;proto=https, For=\"[2001:db8::7]:4711\""],
                    false
                )
            ),
            Ok(ip("2001:db8::7"))
        );
        // From a trusted proxy, nothing usable is refused, never the proxy's address.
        assert!(invalid(e.client(ip("10.0.0.5"), &none)));
        assert!(invalid(e.client(ip("127.0.0.1"), &fwd(&[""], &[], false))));
        assert!(invalid(
            e.client(ip("10.0.0.5"), &fwd(&["garbage"], &[], false))
        ));
        assert!(invalid(e.client(
            ip("10.0.0.5"),
            &fwd(&["1.1.1.1,,2.2.2.2"], &[], false)
        )));
        assert!(invalid(
            e.client(ip("10.0.0.5"), &fwd(&[], &["for=unknown"], false))
        ));
        assert!(invalid(
            e.client(ip("10.0.0.5"), &fwd(&[], &["for=_hidden"], false))
        ));
        let latin1 = Forwarding {
            x_forwarded_for: vec![b"203.0.113.9\xe9"],
            ..Forwarding::default()
        };
        assert!(invalid(e.client(ip("10.0.0.5"), &latin1)));
        // Only trusted proxies in the chain: it started at the leftmost.
        assert_eq!(
            e.client(ip("10.0.0.5"), &fwd(&["127.0.0.1"], &[], false)),
            Ok(ip("127.0.0.1"))
        );
    }

    #[test]
    fn an_unlisted_proxy_on_loopback_is_refused_not_believed() {
        // The default: no trusted proxies, loopback allowed.
        let e = edge(&["127.0.0.1", "::1"], &[]);
        for f in [
            fwd(&["203.0.113.9"], &[], false),
            fwd(&[], &["for=203.0.113.9"], false),
            fwd(&[], &[], true),
        ] {
            assert_eq!(
                e.client(ip("127.0.0.1"), &f),
                Err(Refusal::UntrustedProxy(ip("127.0.0.1")))
            );
            assert_eq!(
                e.client(ip("::ffff:127.0.0.1"), &f),
                Err(Refusal::UntrustedProxy(ip("127.0.0.1")))
            );
            assert_eq!(
                e.client(ip("::1"), &f),
                Err(Refusal::UntrustedProxy(ip("::1")))
            );
        }
        // Loopback without forwarding headers is a local client.
        assert_eq!(
            e.client(ip("127.0.0.1"), &fwd(&[], &[], false)),
            Ok(ip("127.0.0.1"))
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
