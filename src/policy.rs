//! Target policy: which `host:port` a verified ticket may reach. In oVirt any logged-in user
//! can have the engine sign an arbitrary string, so a valid signature alone must not open
//! SSH, HTTP or a cloud metadata service: ports are limited to VNC's range by default, and
//! names are checked after resolution, against every address the proxy will connect to.
//!
//! Pure code: [`TargetPolicy::check`] takes the already-resolved addresses; `connect` only
//! uses the addresses it returns, so a name cannot resolve differently between check and use.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::config::InvalidValue;
use crate::target::Target;

/// Addresses never reachable through a ticket unless an `TARGET_ALLOW_HOSTS` network
/// names them: link-local, where cloud metadata services live.
const LINK_LOCAL: [&str; 2] = ["169.254.0.0/16", "fe80::/10"];

/// One entry of `TARGET_ALLOW_HOSTS` or `TARGET_DENY_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// `*`: any host.
    Any,
    /// An address range; a bare address is a /32 or /128.
    Network(IpNet),
    /// A host name, exact (case-insensitive) or `*.suffix` for any name below `suffix`.
    Name(String),
}

impl HostRule {
    fn matches_name(&self, host: &str) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Network(_) => false,
            HostRule::Name(pattern) => {
                let host = host.trim_end_matches('.').to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(suffix) => {
                        host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}"))
                    }
                    None => host == *pattern,
                }
            }
        }
    }

    fn matches_addr(&self, addr: IpAddr) -> bool {
        match self {
            HostRule::Any => true,
            HostRule::Network(net) => net.contains(&addr),
            HostRule::Name(_) => false,
        }
    }
}

impl fmt::Display for HostRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRule::Any => f.write_str("*"),
            HostRule::Network(net) => write!(f, "{net}"),
            HostRule::Name(name) => f.write_str(name),
        }
    }
}

/// Parses a list of host rules separated by commas or blanks.
///
/// # Errors
/// The first entry that is neither `*`, an address, a network nor a host name pattern.
pub fn parse_host_rules(value: &str) -> Result<Vec<HostRule>, InvalidValue> {
    value
        .split([',', ' ', '\t'])
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            if entry == "*" {
                return Ok(HostRule::Any);
            }
            if let Ok(net) = entry.parse::<IpNet>() {
                return Ok(HostRule::Network(net.trunc()));
            }
            if let Ok(addr) = entry
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
            {
                return Ok(HostRule::Network(IpNet::from(addr)));
            }
            let name = entry.strip_prefix("*.").unwrap_or(entry);
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if name.split('.').all(label_ok)
                && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
            {
                Ok(HostRule::Name(entry.to_ascii_lowercase()))
            } else {
                Err(InvalidValue::new(
                    entry,
                    "*, an IP address, a network (CIDR) or a host name (*.domain allowed)",
                ))
            }
        })
        .collect()
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// Parses `5900-5999, 6100` style port lists.
///
/// # Errors
/// The first entry that is not a port or an ascending range of ports from 1 to 65535.
pub fn parse_port_ranges(value: &str) -> Result<Vec<PortRange>, InvalidValue> {
    let port = |text: &str| text.trim().parse::<u16>().ok().filter(|p| *p > 0);
    value
        .split([',', ' ', '\t'])
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            let range = match entry.split_once('-') {
                Some((first, last)) => port(first)
                    .zip(port(last))
                    .map(|(first, last)| PortRange { first, last }),
                None => port(entry).map(|p| PortRange { first: p, last: p }),
            };
            range.filter(|r| r.first <= r.last).ok_or_else(|| {
                InvalidValue::new(
                    entry,
                    "a port or an ascending range of ports like 5900-65535",
                )
            })
        })
        .collect()
}

/// Why a target is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("port {port} is not in TARGET_ALLOW_PORTS ({allowed})")]
    PortNotAllowed { port: u16, allowed: String },
    #[error("{host} is not allowed by TARGET_ALLOW_HOSTS")]
    HostNotAllowed { host: String },
    #[error("{host} resolves only to addresses that are not allowed ({refused})")]
    AddressNotAllowed { host: String, refused: String },
}

impl PolicyError {
    /// A closed set of labels, for metrics and log filters.
    pub fn kind(&self) -> &'static str {
        match self {
            PolicyError::PortNotAllowed { .. } => "target_port_not_allowed",
            PolicyError::HostNotAllowed { .. } | PolicyError::AddressNotAllowed { .. } => {
                "target_host_not_allowed"
            }
        }
    }
}

/// The operator's rules for targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPolicy {
    pub allow_hosts: Vec<HostRule>,
    pub deny_hosts: Vec<HostRule>,
    pub allow_ports: Vec<PortRange>,
}

impl TargetPolicy {
    /// Checks the port and the name before resolution, so a refused target costs no lookup.
    ///
    /// # Errors
    /// The port is outside the allowed ranges, or the name is denied.
    pub fn check_before_resolution(&self, target: &Target) -> Result<(), PolicyError> {
        if !self
            .allow_ports
            .iter()
            .any(|r| (r.first..=r.last).contains(&target.port))
        {
            return Err(PolicyError::PortNotAllowed {
                port: target.port,
                allowed: join(&self.allow_ports),
            });
        }
        if self
            .deny_hosts
            .iter()
            .any(|rule| rule.matches_name(&target.host))
        {
            return Err(PolicyError::HostNotAllowed {
                host: target.host.clone(),
            });
        }
        Ok(())
    }

    /// Keeps the resolved addresses the target may be reached at.
    ///
    /// An address passes when it is not denied, is not unspecified, multicast or broadcast
    /// (aliases for "this host" or "everyone", never a console), and is allowed: by a
    /// network that contains it, or by a name rule matching the ticket's host name.
    /// Link-local addresses additionally need a network rule (not `*`, not a name) that
    /// contains them.
    ///
    /// # Errors
    /// No address passes.
    pub fn allowed_addresses(
        &self,
        target: &Target,
        resolved: &[SocketAddr],
    ) -> Result<Vec<SocketAddr>, PolicyError> {
        let name_allowed = self.allow_hosts.iter().any(|rule| {
            matches!(rule, HostRule::Any | HostRule::Name(_)) && rule.matches_name(&target.host)
        });
        let mut refused = Vec::new();
        let allowed: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|addr| {
                let ip = canonical(addr.ip());
                let explicitly_listed = self
                    .allow_hosts
                    .iter()
                    .any(|rule| matches!(rule, HostRule::Network(_)) && rule.matches_addr(ip));
                let ok = !self.deny_hosts.iter().any(|rule| rule.matches_addr(ip))
                    && !is_never_a_console(ip)
                    && (explicitly_listed || (name_allowed && !is_link_local(ip)));
                if !ok {
                    refused.push(ip.to_string());
                }
                ok
            })
            .collect();
        if allowed.is_empty() {
            if !name_allowed && refused.is_empty() {
                return Err(PolicyError::HostNotAllowed {
                    host: target.host.clone(),
                });
            }
            return Err(PolicyError::AddressNotAllowed {
                host: target.host.clone(),
                refused: refused.join(", "),
            });
        }
        Ok(allowed)
    }
}

/// IPv4-mapped IPv6 addresses are checked as the IPv4 address they reach.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    LINK_LOCAL
        .iter()
        .any(|net| net.parse::<IpNet>().is_ok_and(|net| net.contains(&ip)))
}

fn is_never_a_console(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_unspecified() || v6.is_multicast(),
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &str, deny: &str, ports: &str) -> TargetPolicy {
        TargetPolicy {
            allow_hosts: parse_host_rules(allow).unwrap(),
            deny_hosts: parse_host_rules(deny).unwrap(),
            allow_ports: parse_port_ranges(ports).unwrap(),
        }
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
            ssl_target: false,
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter()
            .map(|a| SocketAddr::new(a.parse().unwrap(), 5900))
            .collect()
    }

    #[test]
    fn default_policy_allows_vnc_ports_on_any_host_but_not_ssh_or_metadata() {
        let p = policy("*", "", "5900-65535");
        assert!(p.check_before_resolution(&target("10.0.0.5", 5900)).is_ok());
        assert!(p
            .check_before_resolution(&target("10.0.0.5", 65535))
            .is_ok());
        for port in [22, 80, 443, 5899] {
            assert!(matches!(
                p.check_before_resolution(&target("10.0.0.5", port)),
                Err(PolicyError::PortNotAllowed { .. })
            ));
        }
        let metadata = target("169.254.169.254", 5900);
        assert!(p
            .allowed_addresses(&metadata, &addrs(&["169.254.169.254"]))
            .is_err());
        assert!(p
            .allowed_addresses(&target("x", 5900), &addrs(&["fe80::1"]))
            .is_err());
        assert!(p
            .allowed_addresses(&target("x", 5900), &addrs(&["::ffff:169.254.1.1"]))
            .is_err());
        for never in ["0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "ff02::1"] {
            assert!(
                p.allowed_addresses(&target(never, 5900), &addrs(&[never]))
                    .is_err(),
                "{never}"
            );
        }
        assert_eq!(
            p.allowed_addresses(&target("vm", 5900), &addrs(&["10.0.0.5"]))
                .unwrap(),
            addrs(&["10.0.0.5"])
        );
    }

    #[test]
    fn link_local_needs_an_explicit_network() {
        let p = policy("169.254.10.0/24", "", "5900");
        assert!(p
            .allowed_addresses(&target("a", 5900), &addrs(&["169.254.10.7"]))
            .is_ok());
        assert!(p
            .allowed_addresses(&target("a", 5900), &addrs(&["169.254.169.254"]))
            .is_err());
    }

    #[test]
    fn networks_are_checked_against_every_resolved_address() {
        let p = policy("10.0.0.0/8, 192.168.1.5", "", "5900-5999");
        let t = target("vnc.example", 5901);
        let resolved = addrs(&["10.1.2.3", "172.16.0.1", "192.168.1.5"]);
        assert_eq!(
            p.allowed_addresses(&t, &resolved).unwrap(),
            addrs(&["10.1.2.3", "192.168.1.5"])
        );
        let err = p
            .allowed_addresses(&t, &addrs(&["172.16.0.1"]))
            .unwrap_err();
        assert!(err.to_string().contains("172.16.0.1"), "{err}");
    }

    #[test]
    fn names_and_wildcards() {
        let p = policy("*.hosts.example, console.example", "", "5900");
        assert!(p
            .allowed_addresses(&target("h1.hosts.example", 5900), &addrs(&["192.0.2.1"]))
            .is_ok());
        assert!(p
            .allowed_addresses(&target("H1.Hosts.Example.", 5900), &addrs(&["192.0.2.1"]))
            .is_ok());
        assert!(p
            .allowed_addresses(&target("hosts.example", 5900), &addrs(&["192.0.2.1"]))
            .is_err());
        assert!(p
            .allowed_addresses(&target("evilhosts.example", 5900), &addrs(&["192.0.2.1"]))
            .is_err());
        assert!(p
            .allowed_addresses(&target("console.example", 5900), &addrs(&["192.0.2.1"]))
            .is_ok());
        // A name rule does not open link-local addresses.
        assert!(p
            .allowed_addresses(
                &target("console.example", 5900),
                &addrs(&["169.254.169.254"])
            )
            .is_err());
        // An IP literal is not a name.
        assert!(p
            .allowed_addresses(&target("192.0.2.1", 5900), &addrs(&["192.0.2.1"]))
            .is_err());
    }

    #[test]
    fn deny_wins() {
        let p = policy("*", "10.0.0.1, *.engine.example", "5900-65535");
        assert!(p
            .allowed_addresses(&target("a", 5900), &addrs(&["10.0.0.1"]))
            .is_err());
        assert!(p
            .check_before_resolution(&target("db.engine.example", 5900))
            .is_err());
        assert!(p
            .allowed_addresses(&target("a", 5900), &addrs(&["10.0.0.2"]))
            .is_ok());
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse_port_ranges("5900-5999,6100").unwrap(),
            vec![
                PortRange {
                    first: 5900,
                    last: 5999
                },
                PortRange {
                    first: 6100,
                    last: 6100
                }
            ]
        );
        for bad in ["0", "5999-5900", "70000", "59x0", "1-"] {
            assert!(parse_port_ranges(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_host_rules("10.0.0.7/8").unwrap(),
            vec![HostRule::Network("10.0.0.0/8".parse().unwrap())]
        );
        assert_eq!(
            parse_host_rules("[::1]").unwrap(),
            vec![HostRule::Network("::1/128".parse().unwrap())]
        );
        for bad in ["10.0.0.0/33", "a b/c", "1.2.3", "-bad-.example!"] {
            assert!(parse_host_rules(bad).is_err(), "{bad}");
        }
        assert!(parse_host_rules("").unwrap().is_empty());
    }
}
