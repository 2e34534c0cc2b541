//! Domain-ownership verification via DNS TXT records.
//!
//! Owns the resolver setup ([`TxtVerifier`], [`resolver`], also used by the webhook guard), TXT
//! lookups, and the check that a
//! `<prefix>.<domain>` TXT record carries the expected verification token.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Name, ResolveError, TokioResolver};

/// Per-request timeout handed to the resolver.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// Hard upper bound on one `txt_records` call, as a backstop in case the
/// resolver takes longer than expected (e.g. UDP then TCP, several servers).
const LOOKUP_DEADLINE: Duration = Duration::from_secs(5);

/// Errors from building the resolver or performing a TXT lookup.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The name to look up is not a valid DNS name.
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// The resolver reported an error (network failure, timeout, SERVFAIL, ...).
    #[error("{0}")]
    Resolve(#[from] ResolveError),
    /// The lookup did not finish within the overall deadline.
    #[error("DNS lookup timed out after {0:?}")]
    Timeout(Duration),
}

/// Outcome of a domain-ownership check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verified,
    Failed { reason: String },
}

/// Looks up TXT records with short timeouts and no effective caching, so each
/// call reflects the record as currently published.
#[derive(Clone)]
pub struct TxtVerifier {
    resolver: TokioResolver,
}

impl std::fmt::Debug for TxtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TxtVerifier")
            .field("name_servers", &self.resolver.config().name_servers())
            .finish()
    }
}

impl TxtVerifier {
    /// `Some(addr)`: query only that nameserver (UDP, falling back to TCP on
    /// truncation). `None`: use the system resolver configuration
    /// (`/etc/resolv.conf`), or hickory's default config if it can't be read.
    pub fn new(nameserver: Option<SocketAddr>) -> Result<TxtVerifier, DnsError> {
        let mut opts = ResolverOpts::default();
        opts.timeout = QUERY_TIMEOUT;
        // hickory counts *retries* here: 0 means exactly one attempt.
        opts.attempts = 0;
        // Effectively disable caching: tiny cache and every entry expires immediately.
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.use_hosts_file = ResolveHosts::Never;
        Ok(TxtVerifier {
            resolver: resolver(nameserver, opts),
        })
    }

    /// All TXT values at `name` (multi-string records are concatenated).
    /// NXDOMAIN or no TXT records yields `Ok(vec![])`.
    pub async fn txt_records(&self, name: &str) -> Result<Vec<String>, DnsError> {
        let fqdn = parse_fqdn(name)?;
        let lookup = match tokio::time::timeout(LOOKUP_DEADLINE, self.resolver.txt_lookup(fqdn)).await {
            Err(_) => return Err(DnsError::Timeout(LOOKUP_DEADLINE)),
            Ok(Err(err)) if err.is_no_records_found() => return Ok(Vec::new()),
            Ok(Err(err)) => return Err(DnsError::Resolve(err)),
            Ok(Ok(lookup)) => lookup,
        };
        Ok(lookup
            .iter()
            .map(|txt| {
                let bytes: Vec<u8> = txt.txt_data().iter().flat_map(|s| s.iter().copied()).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            })
            .collect())
    }

    /// Checks that a TXT record at `<prefix>.<domain>` equals `token` (both trimmed).
    pub async fn verify(&self, domain: &str, prefix: &str, token: &str) -> Verification {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let prefix = prefix.trim().trim_matches('.');
        let token = token.trim();
        let name = if prefix.is_empty() {
            domain.to_string()
        } else {
            format!("{prefix}.{domain}")
        };

        if domain.is_empty() {
            return Verification::Failed {
                reason: "domain is empty".to_string(),
            };
        }
        if token.is_empty() {
            return Verification::Failed {
                reason: "verification token is empty".to_string(),
            };
        }

        match self.txt_records(&name).await {
            Ok(values) if values.iter().any(|v| v.trim() == token) => Verification::Verified,
            Ok(values) => {
                tracing::debug!(%name, found = values.len(), "verification token not found in TXT records");
                Verification::Failed {
                    reason: format!("no TXT record with the verification token at {name}"),
                }
            }
            Err(err @ DnsError::InvalidName { .. }) => Verification::Failed {
                reason: err.to_string(),
            },
            Err(err) => {
                tracing::debug!(%name, error = %err, "TXT lookup failed");
                Verification::Failed {
                    reason: format!("DNS lookup failed: {err}"),
                }
            }
        }
    }
}

/// A resolver asking only `nameserver` (UDP, falling back to TCP on truncation), or, without
/// one, the system configuration (`/etc/resolv.conf`, else hickory's default). Shared by domain
/// verification and the webhook guard (`crate::ssrf`), so one setting points both at one server.
pub(crate) fn resolver(nameserver: Option<SocketAddr>, opts: ResolverOpts) -> TokioResolver {
    let config = match nameserver {
        Some(addr) => ResolverConfig::from_parts(
            None,
            Vec::new(),
            // trust_negative_responses: an NXDOMAIN from this server is final.
            NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
        ),
        None => match hickory_resolver::system_conf::read_system_conf() {
            Ok((config, _opts)) if !config.name_servers().is_empty() => config,
            Ok(_) => {
                tracing::warn!("system DNS config lists no nameservers; using default resolver config");
                ResolverConfig::default()
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not read system DNS config; using default resolver config");
                ResolverConfig::default()
            }
        },
    };
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// Parses `name` as an absolute DNS name so no search domains get appended.
fn parse_fqdn(name: &str) -> Result<Name, DnsError> {
    let trimmed = name.trim();
    let invalid = |reason: String| DnsError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if trimmed.is_empty() || trimmed == "." {
        return Err(invalid("empty name".to_string()));
    }
    let parsed = if trimmed.is_ascii() {
        Name::from_ascii(trimmed)
    } else {
        Name::from_utf8(trimmed)
    };
    let mut parsed = parsed.map_err(|e| invalid(e.to_string()))?;
    parsed.set_fqdn(true);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names() {
        assert!(parse_fqdn("_keyledger-challenge.example.com").unwrap().is_fqdn());
        assert!(parse_fqdn("Example.COM.").is_ok());
        assert!(parse_fqdn("_keyledger-challenge.bücher.example").is_ok());
        assert!(matches!(parse_fqdn(""), Err(DnsError::InvalidName { .. })));
        assert!(matches!(parse_fqdn("a..b"), Err(DnsError::InvalidName { .. })));
    }
}
