//! The Admin Portal session: which organization and which intent an opened portal link grants,
//! kept in the browser in a cookie sealed with the master key (neither readable nor forgeable),
//! `HttpOnly`, `SameSite=Lax`, scoped to `/portal`, 30 minutes. It is the only source of the
//! organization the pages act on: never a URL or a form field. It also anchors the CSRF token of
//! every portal form (an HMAC of its random nonce).

use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::hosted::flow::{named_cookie, open_value, seal_value};
use crate::secrets::MasterKey;

/// The cookie's name.
pub const COOKIE: &str = "kl_portal";
/// Where the cookie is sent: the portal pages only.
pub const PATH: &str = "/portal";
/// How long a portal session lasts after its link was opened.
pub const TTL_SECS: i64 = 30 * 60;

const SEAL_CONTEXT: &[u8] = b"keyledger admin portal session v1";
const CSRF_LABEL: &[u8] = b"keyledger admin portal csrf v1";

/// What a portal link grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    Sso,
    DomainVerification,
    AuditLogs,
}

impl Intent {
    /// The intent of a `generate_link` request; `None` for one keyledger does not serve.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sso" => Some(Self::Sso),
            "domain_verification" => Some(Self::DomainVerification),
            "audit_logs" => Some(Self::AuditLogs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sso => "sso",
            Self::DomainVerification => "domain_verification",
            Self::AuditLogs => "audit_logs",
        }
    }

    /// The intent's first page.
    pub fn home(self) -> &'static str {
        match self {
            Self::Sso => super::paths::SSO,
            Self::DomainVerification => super::paths::DOMAINS,
            Self::AuditLogs => super::paths::AUDIT_LOGS,
        }
    }
}

/// An open portal session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortalSession {
    pub organization_id: String,
    pub intent: Intent,
    pub return_url: Option<String>,
    pub success_url: Option<String>,
    /// Random; the CSRF token is its HMAC.
    pub nonce: String,
    /// Unix seconds after which the session is refused.
    pub expires: i64,
}

impl PortalSession {
    /// A new session with a fresh nonce; `None` when randomness failed.
    pub fn start(
        organization_id: String,
        intent: Intent,
        return_url: Option<String>,
        success_url: Option<String>,
    ) -> Option<Self> {
        Some(Self {
            organization_id,
            intent,
            return_url,
            success_url,
            nonce: crate::secrets::random_token(16).ok()?,
            expires: Utc::now().timestamp() + TTL_SECS,
        })
    }

    /// The CSRF token the session's forms carry.
    pub fn csrf_token(&self, key: &MasterKey) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.hmac(CSRF_LABEL, self.nonce.as_bytes()))
    }

    /// Whether a posted token is this session's (constant time).
    pub fn csrf_ok(&self, key: &MasterKey, presented: &str) -> bool {
        crate::secrets::constant_time_eq(self.csrf_token(key).as_bytes(), presented.as_bytes())
    }

    /// The session of a request's cookie: `None` when absent, forged, from another key or expired.
    pub fn from_headers(key: &MasterKey, headers: &axum::http::HeaderMap) -> Option<Self> {
        let value = named_cookie(headers, COOKIE)?;
        let s: Self = open_value(key, SEAL_CONTEXT, &value)?;
        (s.expires > Utc::now().timestamp()).then_some(s)
    }

    /// The `Set-Cookie` value carrying this session.
    pub fn set_cookie(&self, key: &MasterKey, secure: bool) -> Option<String> {
        let value = seal_value(key, SEAL_CONTEXT, self)?;
        Some(format!(
            "{COOKIE}={value}; Path={PATH}; Max-Age={TTL_SECS}; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_only_under_its_key_and_its_csrf_token_is_its_own() {
        let key = MasterKey::generate().unwrap();
        let s = PortalSession::start("org_1".into(), Intent::Sso, None, None).unwrap();
        let cookie = s.set_cookie(&key, false).unwrap();
        let value = cookie.split(';').next().unwrap().to_string();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().unwrap());
        let back = PortalSession::from_headers(&key, &headers).unwrap();
        assert_eq!(back.organization_id, "org_1");
        assert!(PortalSession::from_headers(&MasterKey::generate().unwrap(), &headers).is_none());
        assert!(back.csrf_ok(&key, &s.csrf_token(&key)));
        let other = PortalSession::start("org_1".into(), Intent::Sso, None, None).unwrap();
        assert!(!other.csrf_ok(&key, &s.csrf_token(&key)));
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/portal"));
        assert!(s.set_cookie(&key, true).unwrap().ends_with("; Secure"));
    }

    #[test]
    fn only_the_served_intents_parse() {
        for i in [Intent::Sso, Intent::DomainVerification, Intent::AuditLogs] {
            assert_eq!(Intent::parse(i.as_str()), Some(i));
        }
        for other in [
            "dsync",
            "log_streams",
            "certificate_renewal",
            "bring_your_own_key",
            "",
            "SSO",
        ] {
            assert_eq!(Intent::parse(other), None, "{other}");
        }
    }
}
