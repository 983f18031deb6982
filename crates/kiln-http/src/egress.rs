//! The egress policy: which addresses Kiln may connect to on a user's behalf (custom providers
//! and the universal endpoint's steps).
//!
//! Users choose those URLs, so without a policy the gateway is a proxy into the machine itself:
//! Kiln's own routes (where loopback callers may be trusted), cloud metadata at
//! 169.254.169.254, the LAN. Addresses are checked twice: the URL's host when it is an IP
//! literal (no resolver ever sees those), and every address a resolver returns for a name,
//! inside the HTTP client's connector, so the connection uses exactly the addresses that were
//! checked (a name cannot rebind to loopback between the check and the connect). Redirects are
//! never followed: a 3xx goes back to the caller as the provider sent it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use kiln_core::{ErrorKind, KilnError, KilnResult};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The header that carries the gateways a request has passed through, so that a provider that
/// routes back to a gateway it came from is refused instead of looping.
pub const HOPS_HEADER: &str = "x-kiln-hops";
/// More hops than this is a loop through several servers, whoever they are.
pub const MAX_HOPS: usize = 8;

/// See the module documentation.
#[derive(Debug)]
pub struct EgressPolicy {
    allowed_hosts: Vec<String>,
    allowed_networks: Vec<IpNet>,
    own_addresses: Vec<IpAddr>,
    /// Whether public addresses may be dialled (`--egress-public false`: only what `allow`
    /// names, and no host name is even resolved).
    public_allowed: bool,
    pub connect_timeout: Duration,
    /// The whole exchange, the streamed answer included.
    pub timeout: Duration,
    /// This process in [`HOPS_HEADER`].
    pub node_id: String,
}

impl Default for EgressPolicy {
    fn default() -> Self {
        Self {
            allowed_hosts: Vec::new(),
            allowed_networks: Vec::new(),
            own_addresses: Vec::new(),
            public_allowed: true,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(300),
            node_id: ulid::Ulid::new().to_string(),
        }
    }
}

/// An address the policy refuses, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub host: String,
    pub address: Option<IpAddr>,
    pub reason: &'static str,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = &self.host;
        match self.address {
            Some(address) if address.to_string() != *host => write!(
                f,
                "the egress policy refuses {host}: it leads to {address}, a {} address",
                self.reason
            )?,
            _ => write!(
                f,
                "the egress policy refuses {host}: a {} address",
                self.reason
            )?,
        }
        write!(
            f,
            " (allow it on purpose with --egress-allow {})",
            self.address.map_or_else(|| host.clone(), |a| a.to_string())
        )
    }
}

impl std::error::Error for Refused {}

impl From<Refused> for KilnError {
    fn from(refused: Refused) -> Self {
        KilnError::new(ErrorKind::EgressRefused, refused.to_string())
    }
}

impl EgressPolicy {
    /// `allow`: host names (any address they resolve to is allowed), IP addresses and CIDR
    /// networks. `own_addresses`: where this server listens, refused like loopback.
    pub fn new(allow: &[String], own_addresses: Vec<IpAddr>) -> Result<Self, String> {
        let mut policy = Self {
            own_addresses,
            ..Self::default()
        };
        for entry in allow.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Ok(network) = entry.parse::<IpNet>() {
                policy.allowed_networks.push(network);
            } else if let Ok(address) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
                policy.allowed_networks.push(IpNet::from(address));
            } else if is_host_name(entry) {
                policy
                    .allowed_hosts
                    .push(entry.trim_end_matches('.').to_ascii_lowercase());
            } else {
                return Err(format!(
                    "--egress-allow: `{entry}` is not a host name, an IP address or a CIDR network"
                ));
            }
        }
        Ok(policy)
    }

    /// Refuses public addresses too: provider calls reach only what `allow` names (a machine
    /// that must never leave its network, a test run).
    pub fn without_public(mut self) -> Self {
        self.public_allowed = false;
        self
    }

    pub fn with_timeouts(mut self, connect: Duration, total: Duration) -> Self {
        self.connect_timeout = connect;
        self.timeout = total;
        self
    }

    /// Why `address` is refused, or `None` when it may be dialled.
    pub fn refusal(&self, address: IpAddr) -> Option<&'static str> {
        if self.allowed_networks.iter().any(|n| n.contains(&address)) {
            return None;
        }
        let wanted = canonical(address);
        if self
            .own_addresses
            .iter()
            .any(|own| canonical(*own) == wanted)
        {
            return Some("Kiln's own");
        }
        match special_purpose(address) {
            None if !self.public_allowed => Some("public (--egress-public false)"),
            refused => refused,
        }
    }

    fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.');
        self.allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
    }

    /// The URL a provider call goes to, parsed and checked as far as it can be without a
    /// resolver: the scheme, and the host when it is an IP literal (in any notation: the URL
    /// parser turns `2130706433`, `0x7f.1` or `[::ffff:127.0.0.1]` into the address).
    pub fn check_url(&self, url: &str) -> KilnResult<reqwest::Url> {
        let parsed = reqwest::Url::parse(url).map_err(|error| {
            KilnError::new(
                ErrorKind::InvalidProvider,
                format!("invalid provider URL {url:?}: {error}"),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(KilnError::new(
                ErrorKind::InvalidProvider,
                format!("provider URLs are http or https, not {}", parsed.scheme()),
            ));
        }
        let address = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(name)) => {
                if self.public_allowed || self.host_allowed(name) {
                    return Ok(parsed);
                }
                // Not even resolved: the lookup itself would leave the machine.
                return Err(Refused {
                    host: name.to_owned(),
                    address: None,
                    reason: "host name not in --egress-allow (--egress-public false)",
                }
                .into());
            }
            None => {
                return Err(KilnError::new(
                    ErrorKind::InvalidProvider,
                    format!("provider URL {url:?} names no host"),
                ))
            }
        };
        match self.refusal(address) {
            None => Ok(parsed),
            Some(reason) => Err(Refused {
                host: address.to_string(),
                address: Some(address),
                reason,
            }
            .into()),
        }
    }

    /// The addresses of `host` that may be dialled; all of them for an allowed name.
    pub fn filter_resolved(
        &self,
        host: &str,
        resolved: Vec<SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Refused> {
        if self.host_allowed(host) {
            return Ok(resolved);
        }
        let mut first_refused = None;
        let kept: Vec<SocketAddr> = resolved
            .into_iter()
            .filter(|socket| match self.refusal(socket.ip()) {
                None => true,
                Some(reason) => {
                    first_refused.get_or_insert((socket.ip(), reason));
                    false
                }
            })
            .collect();
        match (kept.is_empty(), first_refused) {
            (true, Some((address, reason))) => Err(Refused {
                host: host.to_owned(),
                address: Some(address),
                reason,
            }),
            _ => Ok(kept),
        }
    }

    /// The HTTP client for provider calls: resolved addresses checked, no redirects, no
    /// proxy from the environment (it would be the one address dialled), both timeouts.
    pub fn client(self: &Arc<Self>) -> reqwest::Client {
        reqwest::Client::builder()
            .dns_resolver(Arc::new(CheckedResolver {
                policy: self.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
            .unwrap_or_else(|error| {
                // Only TLS back-end initialisation can fail here; a client without the
                // policy's resolver must never be used instead.
                panic!("the provider HTTP client cannot be built: {error}")
            })
    }

    /// The hop list to send upstream: the incoming one plus this process; a loop when this
    /// process is already on it (or the list is implausibly long).
    pub fn next_hops(&self, incoming: Option<&str>) -> KilnResult<String> {
        let hops: Vec<&str> = incoming
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|hop| !hop.is_empty())
            .collect();
        self.check_hops(&hops)?;
        Ok(hops
            .into_iter()
            .chain([self.node_id.as_str()])
            .collect::<Vec<_>>()
            .join(", "))
    }

    /// Refuses a request that this process already forwarded once.
    pub fn check_incoming_hops(&self, incoming: Option<&str>) -> KilnResult<()> {
        let hops: Vec<&str> = incoming.unwrap_or("").split(',').map(str::trim).collect();
        self.check_hops(&hops)
    }

    fn check_hops(&self, hops: &[&str]) -> KilnResult<()> {
        if hops.contains(&self.node_id.as_str()) || hops.len() > MAX_HOPS {
            return Err(KilnError::new(
                ErrorKind::GatewayLoop,
                format!(
                    "this request has already passed through this gateway ({HOPS_HEADER}: {}): \
                     a provider's base URL leads back to Kiln",
                    hops.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// Resolves with the system resolver, then drops what the policy refuses.
struct CheckedResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            if !policy.public_allowed && !policy.host_allowed(&host) {
                return Err(Box::new(Refused {
                    host,
                    address: None,
                    reason: "host name not in --egress-allow (--egress-public false)",
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept = policy.filter_resolved(&host, resolved)?;
            let addresses: Addrs = Box::new(kept.into_iter());
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(addresses)
        })
    }
}

/// The policy's refusal somewhere in a client error's chain of causes.
pub fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        cause = current.source();
    }
    None
}

/// Addresses no user-supplied URL reaches unless allowed: this machine, private networks,
/// link-local (cloud metadata), multicast and reserved ranges. IPv6 forms that embed an IPv4
/// address (mapped, compatible, NAT64, 6to4) are judged by that address.
pub fn special_purpose(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => ipv4_reason(v4),
        IpAddr::V6(v6) => match embedded_ipv4(v6) {
            Some(v4) => ipv4_reason(v4),
            None => ipv6_reason(v6),
        },
    }
}

fn ipv4_reason(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    let reason = if ip.is_loopback() {
        "loopback"
    } else if a == 0 {
        "this-host (0.0.0.0/8)"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (b & 0xc0) == 64 {
        "shared (carrier-grade NAT)"
    } else if a == 192 && b == 0 && c == 0 {
        "IETF protocol"
    } else if a == 198 && (b & 0xfe) == 18 {
        "benchmarking"
    } else if ip.is_multicast() || a >= 240 {
        "multicast or reserved"
    } else {
        return None;
    };
    Some(reason)
}

fn ipv6_reason(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    let reason = if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_unique_local() {
        "private (unique local)"
    } else if ip.is_unicast_link_local() || (first & 0xffc0) == 0xfec0 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else {
        return None;
    };
    Some(reason)
}

fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let from = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match s {
        // IPv4-compatible (deprecated, still routed by some stacks); `::` and `::1` are not.
        [0, 0, 0, 0, 0, 0, high, low] if !(high == 0 && low <= 1) => Some(from(high, low)),
        // NAT64.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => Some(from(high, low)),
        // 6to4.
        [0x2002, high, low, ..] => Some(from(high, low)),
        _ => None,
    }
}

fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_host_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
#[path = "egress_tests.rs"]
mod tests;
