//! The opt-in SSRF guard of webhook deliveries (`Config::webhook_block_private`): which addresses
//! are not public, a DNS resolver that never hands such an address to the HTTP client, and the
//! checks of IP-literal hosts. It must never be the only check of a host name: names are checked
//! again at every connection, through [`GuardedResolver`], so a DNS change cannot slip past.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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

/// True for every address a guarded delivery must not connect to: loopback, private, shared
/// (CGNAT), link-local (cloud metadata), unspecified, broadcast, documentation, benchmarking,
/// reserved and multicast ranges, and their IPv4-mapped (or NAT64-embedded) IPv6 forms.
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_blocked_v4(v4),
        IpAddr::V6(v6) => is_blocked_v6(v6),
    }
}

/// `addr` lies in `prefix`/`len`.
fn in_v4(addr: Ipv4Addr, prefix: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(addr) & mask == u32::from(Ipv4Addr::from(prefix)) & mask
}

fn in_v6(addr: Ipv6Addr, prefix: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(addr) & mask == u128::from(Ipv6Addr::from(prefix)) & mask
}

fn is_blocked_v4(ip: Ipv4Addr) -> bool {
    const RANGES: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0 included
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // shared address space (CGNAT)
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local, cloud metadata (169.254.169.254)
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation (TEST-NET-1)
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation (TEST-NET-2)
        ([203, 0, 113, 0], 24),  // documentation (TEST-NET-3)
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, 255.255.255.255 broadcast included
    ];
    RANGES.iter().any(|(p, len)| in_v4(ip, *p, *len))
}

fn is_blocked_v6(ip: Ipv6Addr) -> bool {
    // An IPv4 address in IPv6 clothing is judged as the IPv4 address it reaches.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_blocked_v4(v4);
    }
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        let [.., a, b, c, d] = ip.octets();
        return is_blocked_v4(Ipv4Addr::new(a, b, c, d));
    }
    const RANGES: &[([u16; 8], u32)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96),     // ::, ::1 and the deprecated IPv4-compatible ::a.b.c.d
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64), // discard-only
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), // documentation
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), // unique local
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), // link-local
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10), // site-local (deprecated)
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), // multicast
    ];
    RANGES.iter().any(|(p, len)| in_v6(ip, *p, *len))
}

/// The IP address a URL's host names literally, if it is one.
fn literal_host(url: &Url) -> Option<IpAddr> {
    let h = url.host_str()?;
    // IPv6 literals come bracketed; IPv4 ones are already normalised by the URL parser.
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    h.trim_end_matches('.').parse().ok()
}

/// True when the URL's host is an IP literal the guard blocks. The resolver is not asked about
/// IP literals, so deliveries check them with this before sending.
pub fn blocked_literal(url: &Url) -> bool {
    literal_host(url).is_some_and(is_blocked)
}

/// True when a new endpoint URL must be refused: a blocked IP literal, or `localhost` (and its
/// subdomains, RFC 6761). Other names are only checked at delivery, since DNS can change.
pub fn blocked_endpoint_url(url: &Url) -> bool {
    if blocked_literal(url) {
        return true;
    }
    match url.host_str() {
        Some(h) => {
            let h = h.trim_end_matches('.').to_ascii_lowercase();
            h == "localhost" || h.ends_with(".localhost")
        }
        None => false,
    }
}

/// A `reqwest` resolver that resolves with the system resolver (`tokio::net::lookup_host`) and
/// drops every blocked address; a name left with none fails with [`BlockedAddress`]. The HTTP
/// client connects only to what this returns, so the check is of the real connection target.
#[derive(Debug, Default, Clone, Copy)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            // Port 0: reqwest puts in the URL's port.
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found.into_iter().filter(|a| !is_blocked(a.ip())).collect();
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

    #[test]
    fn non_public_addresses_are_blocked() {
        let cases = [
            ("127.0.0.1", "IPv4 loopback"),
            ("127.255.255.254", "IPv4 loopback range"),
            ("10.1.2.3", "RFC 1918 10/8"),
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
            ("198.18.0.1", "benchmarking"),
            ("192.0.0.8", "IETF protocol assignments"),
            ("224.0.0.1", "IPv4 multicast"),
            ("239.255.255.250", "IPv4 multicast (SSDP)"),
            ("::1", "IPv6 loopback"),
            ("::", "IPv6 unspecified"),
            ("fc00::1", "unique local fc00::/7"),
            ("fd12:3456:789a::1", "unique local fd00::/8"),
            ("fe80::1", "IPv6 link-local"),
            ("febf:ffff::1", "IPv6 link-local, high end"),
            ("fec0::1", "site-local"),
            ("ff02::1", "IPv6 multicast"),
            ("2001:db8::1", "IPv6 documentation"),
            ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
            ("::ffff:10.0.0.1", "IPv4-mapped private"),
            ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
            ("::ffff:100.64.0.1", "IPv4-mapped CGNAT"),
            ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
            ("::127.0.0.1", "IPv4-compatible loopback"),
            ("64:ff9b::7f00:1", "NAT64 of loopback"),
            ("64:ff9b::a9fe:a9fe", "NAT64 of cloud metadata"),
        ];
        for (addr, why) in cases {
            assert!(is_blocked(ip(addr)), "{addr} ({why}) must be blocked");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let cases = [
            ("1.1.1.1", "public IPv4"),
            ("8.8.8.8", "public IPv4"),
            ("93.184.215.14", "public IPv4"),
            ("100.63.255.255", "just below CGNAT"),
            ("100.128.0.0", "just above CGNAT"),
            ("172.15.255.255", "just below 172.16/12"),
            ("172.32.0.0", "just above 172.16/12"),
            ("169.253.255.255", "just below link-local"),
            ("223.255.255.255", "just below multicast"),
            ("2606:4700:4700::1111", "public IPv6"),
            ("2001:4860:4860::8888", "public IPv6"),
            ("fe00::1", "just below link-local fe80::/10 and outside fc00::/7"),
            ("::ffff:1.1.1.1", "IPv4-mapped public"),
            ("64:ff9b::808:808", "NAT64 of a public address"),
        ];
        for (addr, why) in cases {
            assert!(!is_blocked(ip(addr)), "{addr} ({why}) must be allowed");
        }
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|_| panic!("bad test URL {s}"))
    }

    #[test]
    fn endpoint_urls_with_blocked_literals_or_localhost_are_refused() {
        for u in [
            "http://127.0.0.1:8080/hook",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/",
            "http://0/",
            "http://127.0.0.1./",
            "http://localhost:3000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
        ] {
            assert!(blocked_endpoint_url(&url(u)), "{u} must be refused");
        }
        for u in [
            "https://hooks.example.com/a",
            "http://1.1.1.1/",
            "http://[2606:4700:4700::1111]/",
            "http://localhost.example.com/",
        ] {
            assert!(!blocked_endpoint_url(&url(u)), "{u} must be accepted");
        }
        assert!(
            !blocked_literal(&url("http://localhost/")),
            "names are left to the resolver"
        );
    }

    #[tokio::test]
    async fn the_resolver_drops_blocked_addresses_and_fails_when_none_remain() {
        let name: Name = match "localhost".parse() {
            Ok(n) => n,
            Err(_) => panic!("localhost is a valid name"),
        };
        let err = match GuardedResolver.resolve(name).await {
            Ok(addrs) => panic!("localhost resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        assert!(is_blocked_error(&*err), "{err}");
    }
}
