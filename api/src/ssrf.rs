//! The SSRF guard of webhook deliveries, always on: which addresses are not public
//! ([`is_blocked`]), the operator's allow-list of internal receivers ([`WebhookAllow`]), a DNS
//! resolver that never hands a refused address to the HTTP client ([`GuardedResolver`]), and the
//! checks of IP-literal hosts. It must never be the only check of a host name: names are checked
//! again at every connection, through the resolver, so a DNS change cannot slip past.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{LookupIpStrategy, ResolveHosts, ResolverOpts};
use hickory_resolver::TokioResolver;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The error of a connection the guard refused; the dispatcher finds it in a `reqwest::Error`'s
/// source chain to log `blocked address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockedAddress;

impl fmt::Display for BlockedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("blocked address")
    }
}

impl std::error::Error for BlockedAddress {}

/// True for every address a delivery must not connect to unless allowed: loopback, private,
/// shared (CGNAT), link-local (cloud metadata), unique-local, unspecified, broadcast,
/// documentation, benchmarking, reserved and multicast ranges, Teredo and local-use NAT64
/// entirely, and IPv4 addresses embedded in IPv6 (mapped, compatible, 6to4, well-known NAT64)
/// judged as the IPv4 address they reach.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

/// `addr` lies in `prefix`/`len`.
fn in_v4(addr: Ipv4Addr, prefix: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(addr) & mask == u32::from(prefix) & mask
}

fn in_v6(addr: Ipv6Addr, prefix: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(addr) & mask == u128::from(prefix) & mask
}

const fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

#[expect(
    clippy::too_many_arguments,
    reason = "the eight segments of `Ipv6Addr::new`, for readable constant tables"
)]
const fn v6(a: u16, b: u16, c: u16, d: u16, e: u16, f: u16, g: u16, h: u16) -> Ipv6Addr {
    Ipv6Addr::new(a, b, c, d, e, f, g, h)
}

/// IPv4 ranges that are not the public internet (IANA special-purpose registry, RFC 6890).
const BLOCKED_V4: &[(Ipv4Addr, u8)] = &[
    (v4(0, 0, 0, 0), 8),       // "this network", 0.0.0.0 included
    (v4(10, 0, 0, 0), 8),      // private
    (v4(100, 64, 0, 0), 10),   // shared address space (CGNAT)
    (v4(127, 0, 0, 0), 8),     // loopback
    (v4(169, 254, 0, 0), 16),  // link-local, cloud metadata (169.254.169.254)
    (v4(172, 16, 0, 0), 12),   // private
    (v4(192, 0, 0, 0), 24),    // IETF protocol assignments (192.0.0.192: Oracle metadata)
    (v4(192, 0, 2, 0), 24),    // documentation (TEST-NET-1)
    (v4(192, 88, 99, 0), 24),  // deprecated 6to4 relay anycast
    (v4(192, 168, 0, 0), 16),  // private
    (v4(198, 18, 0, 0), 15),   // benchmarking
    (v4(198, 51, 100, 0), 24), // documentation (TEST-NET-2)
    (v4(203, 0, 113, 0), 24),  // documentation (TEST-NET-3)
    (v4(224, 0, 0, 0), 4),     // multicast
    (v4(240, 0, 0, 0), 4),     // reserved, 255.255.255.255 broadcast included
];

/// IPv6 ranges blocked outright (the embedded-IPv4 forms are judged by their IPv4 address).
const BLOCKED_V6: &[(Ipv6Addr, u8)] = &[
    (v6(0, 0, 0, 0, 0, 0, 0, 0), 96), // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
    (v6(0x64, 0xff9b, 1, 0, 0, 0, 0, 0), 48), // local-use NAT64 (RFC 8215): the prefix length, and so the embedded address, is the operator's
    (v6(0x100, 0, 0, 0, 0, 0, 0, 0), 64),     // discard-only
    (v6(0x2001, 0, 0, 0, 0, 0, 0, 0), 32),    // Teredo: the client IPv4 is obfuscated, refuse all
    (v6(0x2001, 2, 0, 0, 0, 0, 0, 0), 48),    // benchmarking
    (v6(0x2001, 0x10, 0, 0, 0, 0, 0, 0), 28), // ORCHID (deprecated)
    (v6(0x2001, 0x20, 0, 0, 0, 0, 0, 0), 28), // ORCHIDv2
    (v6(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0), 32), // documentation
    (v6(0x3fff, 0, 0, 0, 0, 0, 0, 0), 20),    // documentation (RFC 9637)
    (v6(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),     // unique local, AWS metadata fd00:ec2::254 included
    (v6(0xfe80, 0, 0, 0, 0, 0, 0, 0), 10),    // link-local
    (v6(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10),    // site-local (deprecated)
    (v6(0xff00, 0, 0, 0, 0, 0, 0, 0), 8),     // multicast
];

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    BLOCKED_V4.iter().any(|(p, len)| in_v4(ip, *p, *len))
}

/// The IPv4 address an IPv6 address carries and routes to: IPv4-mapped (`::ffff:a.b.c.d`),
/// well-known NAT64 (`64:ff9b::a.b.c.d`) or 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let o = ip.octets();
    if in_v6(ip, v6(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96) {
        return Some(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if in_v6(ip, v6(0x2002, 0, 0, 0, 0, 0, 0, 0), 16) {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_blocked_v4(v4);
    }
    BLOCKED_V6.iter().any(|(p, len)| in_v6(ip, *p, *len))
}

/// An IP network of the allow-list: `addr/len`, the address's host bits ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => in_v4(ip, net, self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => in_v6(ip, net, self.len),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One entry of `--webhook-allow`: a CIDR (a bare IP is a /32 or /128) or an exact host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    Net(Cidr),
    Host(String),
}

/// Why an allow-list entry was refused (the server does not start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("webhook allow-list entry {entry:?}: {reason}")]
pub struct AllowEntryError {
    entry: String,
    reason: &'static str,
}

impl FromStr for AllowEntry {
    type Err = AllowEntryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let err = |reason| AllowEntryError {
            entry: entry.to_string(),
            reason,
        };
        if entry.is_empty() {
            return Err(err("is empty"));
        }
        let (addr, len) = match entry.split_once('/') {
            Some((a, l)) => {
                let addr: IpAddr = a.parse().map_err(|_| err("is not an IP network (address/length)"))?;
                let len: u8 = l.parse().map_err(|_| err("has no valid prefix length"))?;
                (addr, Some(len))
            }
            None => match entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                Ok(addr) => (addr, None),
                Err(_) => return host_entry(entry).ok_or_else(|| err("is neither an IP network nor a host name")),
            },
        };
        // An IPv4-mapped network is the IPv4 network: connections are matched in that form.
        let mapped = match addr {
            IpAddr::V6(a) => a.to_ipv4_mapped().filter(|_| len.is_none_or(|l| l >= 96)),
            IpAddr::V4(_) => None,
        };
        let (addr, len) = match mapped {
            Some(m) => (IpAddr::V4(m), len.map(|l| l - 96)),
            None => (addr, len),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        if len > max {
            return Err(err("has a prefix length beyond the address size"));
        }
        Ok(AllowEntry::Net(Cidr { addr, len }))
    }
}

/// A host-name entry, lowercase without a trailing dot: ASCII labels of letters, digits, `-` and
/// `_` (internationalised names in their `xn--` form, as URLs carry them). No wildcards.
fn host_entry(s: &str) -> Option<AllowEntry> {
    let h = s.trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (h.len() <= 253 && h.split('.').all(label_ok)).then_some(AllowEntry::Host(h))
}

/// The operator's allow-list of internal webhook receivers (`--webhook-allow`). An address the
/// guard blocks is still connected to when it lies in one of `nets` (an IPv4-mapped address is
/// matched as its IPv4 address; other embedded forms are not unwrapped: list them if wanted), or
/// when the endpoint URL's host is exactly one of `hosts` (case-insensitive, trailing dot
/// ignored; then every address that name resolves to is allowed). Empty by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookAllow {
    nets: Vec<Cidr>,
    hosts: Vec<String>,
}

impl WebhookAllow {
    pub fn new(entries: impl IntoIterator<Item = AllowEntry>) -> Self {
        let mut allow = Self::default();
        for e in entries {
            match e {
                AllowEntry::Net(n) if !allow.nets.contains(&n) => allow.nets.push(n),
                AllowEntry::Host(h) if !allow.hosts.contains(&h) => allow.hosts.push(h),
                _ => {}
            }
        }
        allow
    }

    /// Parses a comma-separated list (tests, configuration files).
    pub fn parse(list: &str) -> Result<Self, AllowEntryError> {
        let entries: Result<Vec<AllowEntry>, _> = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect();
        Ok(Self::new(entries?))
    }

    /// The loopback addresses only (`127.0.0.1/32`, `::1/128`): what the tests' receivers need.
    pub fn loopback() -> Self {
        Self::new([
            AllowEntry::Net(Cidr {
                addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
                len: 32,
            }),
            AllowEntry::Net(Cidr {
                addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
                len: 128,
            }),
        ])
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty() && self.hosts.is_empty()
    }

    /// The entries, for the startup log.
    pub fn describe(&self) -> String {
        let nets = self.nets.iter().map(Cidr::to_string);
        nets.chain(self.hosts.iter().cloned()).collect::<Vec<_>>().join(",")
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(ip))
    }

    fn allows_host(&self, host: &str) -> bool {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts.contains(&h)
    }

    /// True when a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_blocked(ip) || self.allows_ip(ip)
    }

    /// True when the URL's host is an IP literal the guard refuses. The resolver is not asked
    /// about IP literals, so deliveries check them with this before sending.
    pub fn refuses_literal(&self, url: &Url) -> bool {
        literal_host(url).is_some_and(|ip| !self.permits(ip))
    }

    /// True when a new endpoint URL must be refused: an IP literal the guard refuses, or
    /// `localhost` (and its subdomains, RFC 6761: they always resolve to loopback) unless the
    /// name or both loopback addresses are allowed. Other names are only checked at delivery,
    /// since DNS can change.
    pub fn refuses_endpoint_url(&self, url: &Url) -> bool {
        if self.refuses_literal(url) {
            return true;
        }
        let Some(h) = url.host_str() else { return false };
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        let localhost = h == "localhost" || h.ends_with(".localhost");
        localhost
            && !self.allows_host(&h)
            && !(self.permits(IpAddr::V4(Ipv4Addr::LOCALHOST)) && self.permits(IpAddr::V6(Ipv6Addr::LOCALHOST)))
    }
}

/// The IP address a URL's host names literally, if it is one.
fn literal_host(url: &Url) -> Option<IpAddr> {
    let h = url.host_str()?;
    // IPv6 literals come bracketed; IPv4 ones are already normalised by the URL parser.
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.trim_end_matches('.').parse().ok()
}

/// Per-query timeout of webhook host lookups (the whole request is bounded by the webhook
/// timeout as well).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// A `reqwest` resolver that resolves with hickory (the configured nameserver, else the system
/// configuration and hosts file), asking for A and AAAA records, and drops every address the
/// guard refuses; a name left with none fails with [`BlockedAddress`]. The HTTP client connects
/// only to what this returns, so the check is of the real connection target.
#[derive(Clone)]
pub struct GuardedResolver {
    resolver: TokioResolver,
    allow: Arc<WebhookAllow>,
}

impl fmt::Debug for GuardedResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResolver").field("allow", &self.allow).finish()
    }
}

impl GuardedResolver {
    /// `nameserver`: ask only that server (as `Config::dns_nameserver`); `None`: the system's.
    pub fn new(nameserver: Option<SocketAddr>, allow: WebhookAllow) -> Self {
        let mut opts = ResolverOpts::default();
        opts.timeout = LOOKUP_TIMEOUT;
        opts.attempts = 1;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.use_hosts_file = if nameserver.is_some() {
            ResolveHosts::Never
        } else {
            ResolveHosts::Auto
        };
        Self {
            resolver: crate::dns::resolver(nameserver, opts),
            allow: Arc::new(allow),
        }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let resolver = self.resolver.clone();
        let allow = self.allow.clone();
        Box::pin(async move {
            let found = resolver.lookup_ip(host.as_str()).await?;
            let by_name = allow.allows_host(&host);
            // Port 0: reqwest puts in the URL's port.
            let allowed: Vec<SocketAddr> = found
                .iter()
                .filter(|ip| by_name || allow.permits(*ip))
                .map(|ip| SocketAddr::new(ip, 0))
                .collect();
            if allowed.is_empty() {
                tracing::debug!(host, "every address of the webhook host is blocked");
                return Err(Box::new(BlockedAddress) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// True when the guard refused this error's connection.
pub fn is_blocked_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BlockedAddress>() {
            return true;
        }
        cur = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| panic!("bad test address {s}"))
    }

    /// (address, what it is): every range and form the guard blocks, at its edges.
    const BLOCKED: &[(&str, &str)] = &[
        ("127.0.0.1", "IPv4 loopback"),
        ("127.255.255.254", "IPv4 loopback range"),
        ("10.0.0.0", "RFC 1918 10/8, low end"),
        ("10.255.255.255", "RFC 1918 10/8, high end"),
        ("172.16.0.1", "RFC 1918 172.16/12, low end"),
        ("172.31.255.255", "RFC 1918 172.16/12, high end"),
        ("192.168.1.1", "RFC 1918 192.168/16"),
        ("169.254.169.254", "cloud metadata (link-local)"),
        ("169.254.0.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "documentation TEST-NET-1"),
        ("198.51.100.7", "documentation TEST-NET-2"),
        ("203.0.113.9", "documentation TEST-NET-3"),
        ("100.64.0.1", "CGNAT, low end"),
        ("100.127.255.254", "CGNAT, high end"),
        ("198.18.0.1", "benchmarking, low end"),
        ("198.19.255.255", "benchmarking, high end"),
        ("192.0.0.8", "IETF protocol assignments"),
        ("192.0.0.192", "Oracle cloud metadata"),
        ("192.88.99.1", "deprecated 6to4 relay anycast"),
        ("224.0.0.1", "IPv4 multicast"),
        ("239.255.255.250", "IPv4 multicast (SSDP)"),
        ("::1", "IPv6 loopback"),
        ("::", "IPv6 unspecified"),
        ("fc00::1", "unique local fc00::/7"),
        ("fd12:3456:789a::1", "unique local fd00::/8"),
        ("fd00:ec2::254", "AWS IPv6 metadata"),
        ("fe80::1", "IPv6 link-local"),
        ("febf:ffff::1", "IPv6 link-local, high end"),
        ("fec0::1", "site-local"),
        ("ff02::1", "IPv6 multicast"),
        ("ff05::1:3", "IPv6 multicast, site"),
        ("2001:db8::1", "IPv6 documentation"),
        ("3fff::1", "IPv6 documentation (RFC 9637)"),
        ("100::1", "discard-only"),
        ("2001:2::1", "IPv6 benchmarking"),
        ("2001:10::1", "ORCHID"),
        ("2001:20::1", "ORCHIDv2"),
        ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
        ("::ffff:10.0.0.1", "IPv4-mapped private"),
        ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
        ("::ffff:100.64.0.1", "IPv4-mapped CGNAT"),
        ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
        ("::ffff:255.255.255.255", "IPv4-mapped broadcast"),
        ("::127.0.0.1", "IPv4-compatible loopback"),
        (
            "::8.8.8.8",
            "IPv4-compatible, even of a public address (deprecated form)",
        ),
        ("64:ff9b::7f00:1", "NAT64 of loopback"),
        ("64:ff9b::a9fe:a9fe", "NAT64 of cloud metadata"),
        ("64:ff9b::a00:1", "NAT64 of 10.0.0.1"),
        ("64:ff9b:1::1", "local-use NAT64, whatever it embeds"),
        ("64:ff9b:1:ffff::808:808", "local-use NAT64 of a public address"),
        ("2002:a00:1::", "6to4 of 10.0.0.1"),
        ("2002:7f00:1::1", "6to4 of loopback"),
        ("2002:a9fe:a9fe::", "6to4 of cloud metadata"),
        ("2002:c0a8:101:1::1", "6to4 of 192.168.1.1"),
        ("2001::1", "Teredo"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo with a public server"),
    ];

    /// (address, what it is): public addresses, most of them just outside a blocked range.
    const PUBLIC: &[(&str, &str)] = &[
        ("1.1.1.1", "public IPv4"),
        ("8.8.8.8", "public IPv4"),
        ("93.184.215.14", "public IPv4"),
        ("9.255.255.255", "just below 10/8"),
        ("11.0.0.0", "just above 10/8"),
        ("100.63.255.255", "just below CGNAT"),
        ("100.128.0.0", "just above CGNAT"),
        ("172.15.255.255", "just below 172.16/12"),
        ("172.32.0.0", "just above 172.16/12"),
        ("169.253.255.255", "just below link-local"),
        ("169.255.0.0", "just above link-local"),
        ("192.167.255.255", "just below 192.168/16"),
        ("198.17.255.255", "just below benchmarking"),
        ("198.20.0.0", "just above benchmarking"),
        ("223.255.255.255", "just below multicast"),
        ("2606:4700:4700::1111", "public IPv6"),
        ("2001:4860:4860::8888", "public IPv6"),
        ("2001:1::1", "just above Teredo"),
        ("fe00::1", "outside fc00::/7 and below link-local"),
        ("fbff:ffff::1", "just below fc00::/7"),
        ("::ffff:1.1.1.1", "IPv4-mapped public"),
        ("64:ff9b::808:808", "NAT64 of a public address"),
        ("2002:808:808::1", "6to4 of a public address"),
        ("64:ff9a::1", "just below the NAT64 prefix"),
    ];

    #[test]
    fn every_non_public_range_and_embedded_form_is_blocked() {
        for (addr, why) in BLOCKED {
            assert!(is_blocked(ip(addr)), "{addr} ({why}) must be blocked");
        }
    }

    #[test]
    fn public_addresses_next_to_blocked_ranges_are_allowed() {
        for (addr, why) in PUBLIC {
            assert!(!is_blocked(ip(addr)), "{addr} ({why}) must be allowed");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|_| panic!("bad test URL {s}"))
    }

    fn allow(list: &str) -> WebhookAllow {
        WebhookAllow::parse(list).unwrap_or_else(|e| panic!("{list}: {e}"))
    }

    #[test]
    fn endpoint_urls_with_blocked_literals_or_localhost_are_refused_without_an_allow_list() {
        let none = WebhookAllow::default();
        for u in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00:ec2::254]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[2002:a00:1::]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2001::1]/",
            "http://2130706433/",
            "http://0/",
            "http://0x7f.1/",
            "http://127.0.0.1./",
            "http://localhost:3000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            assert!(none.refuses_endpoint_url(&url(u)), "{u} must be refused");
        }
        for u in [
            "https://hooks.example.com/a",
            "http://1.1.1.1/",
            "http://[2606:4700:4700::1111]/",
            "http://localhost.example.com/",
        ] {
            assert!(!none.refuses_endpoint_url(&url(u)), "{u} must be accepted");
        }
        assert!(
            !none.refuses_literal(&url("http://localhost/")),
            "names are left to the resolver"
        );
    }

    #[test]
    fn the_allow_list_opens_exactly_its_networks_and_host_names() {
        let a = allow("10.1.0.0/16, ::1/128 ,127.0.0.1,Hooks.Internal.,[fd00::5]");
        // (address, allowed)
        for (addr, want) in [
            ("10.1.2.3", true),
            ("10.2.0.1", false),
            ("::ffff:10.1.2.3", true),
            ("2002:a01:203::", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("::1", true),
            ("fd00::5", true),
            ("fd00::6", false),
            ("169.254.169.254", false),
            ("8.8.8.8", true),
        ] {
            assert_eq!(a.permits(ip(addr)), want, "{addr}");
        }
        assert!(a.allows_host("hooks.internal"));
        assert!(a.allows_host("HOOKS.internal."));
        assert!(!a.allows_host("x.hooks.internal"), "exact names only");
        assert!(!a.allows_host("internal"));
        // localhost needs both loopback addresses (it resolves to both) or its name.
        assert!(!a.refuses_endpoint_url(&url("http://localhost:1/")));
        assert!(allow("127.0.0.1/32").refuses_endpoint_url(&url("http://localhost:1/")));
        assert!(!allow("localhost").refuses_endpoint_url(&url("http://localhost:1/")));
        assert!(a.refuses_endpoint_url(&url("http://10.2.0.1/")));
        assert!(!a.refuses_endpoint_url(&url("http://10.1.0.1/")));
        // Everything, for an operator who wants the guard out of the way.
        let all = allow("0.0.0.0/0,::/0");
        assert!(BLOCKED.iter().all(|(addr, _)| all.permits(ip(addr))));
        // A mapped network is its IPv4 network.
        assert_eq!(allow("::ffff:10.0.0.0/104"), allow("10.0.0.0/8"));
    }

    #[test]
    fn malformed_allow_list_entries_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/x",
            "10.0.0/8",
            "*.example.com",
            "exa mple.com",
            "http://hooks.example.com",
            "a..b",
            "",
        ] {
            assert!(bad.parse::<AllowEntry>().is_err(), "{bad:?} must be refused");
        }
        assert!(WebhookAllow::parse("").is_ok_and(|a| a.is_empty()));
    }

    /// A resolver that never leaves the machine: a nameserver on a closed loopback port, asked
    /// only for `localhost`, which hickory answers itself (RFC 6761).
    fn local_resolver(allow: WebhookAllow) -> GuardedResolver {
        GuardedResolver::new(Some(SocketAddr::from(([127, 0, 0, 1], 9))), allow)
    }

    fn name(s: &str) -> Name {
        s.parse().unwrap_or_else(|_| panic!("{s} is a valid name"))
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses_and_fails_when_none_remain() {
        let err = match local_resolver(WebhookAllow::default()).resolve(name("localhost")).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(is_blocked_error(&*err), "{err}");
        let got: Vec<SocketAddr> = match local_resolver(allow("::1/128")).resolve(name("localhost")).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            got,
            vec![SocketAddr::from((Ipv6Addr::LOCALHOST, 0))],
            "only the allowed one"
        );
        let got: Vec<SocketAddr> = match local_resolver(allow("localhost")).resolve(name("localhost")).await {
            Ok(addrs) => addrs.collect(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(got.len(), 2, "an allowed name gets every address: {got:?}");
    }
}
