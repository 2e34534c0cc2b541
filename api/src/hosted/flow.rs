//! The state of one hosted sign-in between its pages, kept in the browser: a cookie sealed
//! with the master key (AES-256-GCM: neither readable nor forgeable), short-lived, `HttpOnly`,
//! `SameSite=Lax`, scoped to the pages' path. It also anchors the CSRF token of every form:
//! an HMAC of the flow's random nonce, so a form posted without this browser's cookie, or with
//! another flow's token, is refused. No database row: an abandoned sign-in leaves nothing.

use base64::Engine as _;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::secrets::MasterKey;

/// The cookie's name.
pub const COOKIE: &str = "kl_authorize";
/// Where the cookie is sent: the hosted pages only.
pub const PATH: &str = "/user_management/authorize";
/// How long a sign-in may take from `GET /user_management/authorize`.
pub const TTL_SECS: i64 = 15 * 60;

const SEAL_CONTEXT: &[u8] = b"keyledger hosted flow v1";
const CSRF_LABEL: &[u8] = b"keyledger hosted csrf v1";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// What the pages remember of a sign-in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Flow {
    /// The authorize request: where the code goes and what it is bound to.
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: Option<String>,
    pub login_hint: Option<String>,
    /// Random; the CSRF token is its HMAC.
    pub nonce: String,
    /// Unix seconds after which the flow is refused.
    pub expires: i64,
    /// A pending authentication token (email verification, organization selection).
    #[serde(default)]
    pub pending: Option<String>,
    /// The email a Magic Auth code was sent to (the code page).
    #[serde(default)]
    pub magic_email: Option<String>,
    /// The email shown on the verification page.
    #[serde(default)]
    pub verify_email: Option<String>,
    /// An invitation to accept with the sign-in (`invitation_token` of the authorize request).
    #[serde(default)]
    pub invitation_token: Option<String>,
    /// The organizations offered on the selection page: (id, name).
    #[serde(default)]
    pub choices: Vec<(String, String)>,
}

impl Flow {
    /// A new flow with a fresh nonce; `None` when randomness failed.
    pub fn start(
        client_id: String,
        redirect_uri: String,
        state: Option<String>,
        code_challenge: Option<String>,
        login_hint: Option<String>,
    ) -> Option<Self> {
        let nonce = crate::secrets::random_token(16).ok()?;
        Some(Self {
            client_id,
            redirect_uri,
            state,
            code_challenge,
            login_hint,
            nonce,
            expires: Utc::now().timestamp() + TTL_SECS,
            pending: None,
            magic_email: None,
            verify_email: None,
            invitation_token: None,
            choices: Vec::new(),
        })
    }

    /// The CSRF token the flow's forms carry.
    pub fn csrf_token(&self, key: &MasterKey) -> String {
        b64().encode(key.hmac(CSRF_LABEL, self.nonce.as_bytes()))
    }

    /// Whether a posted token is this flow's (constant time).
    pub fn csrf_ok(&self, key: &MasterKey, presented: &str) -> bool {
        crate::secrets::constant_time_eq(self.csrf_token(key).as_bytes(), presented.as_bytes())
    }

    /// The sealed cookie value; `None` when sealing failed.
    pub fn seal(&self, key: &MasterKey) -> Option<String> {
        seal_value(key, SEAL_CONTEXT, self)
    }

    /// The flow of a cookie value: `None` when it does not open under this key or has expired.
    pub fn open(key: &MasterKey, value: &str) -> Option<Self> {
        let flow: Self = open_value(key, SEAL_CONTEXT, value)?;
        (flow.expires > Utc::now().timestamp()).then_some(flow)
    }

    /// The `Set-Cookie` value carrying this flow.
    pub fn set_cookie(&self, key: &MasterKey, secure: bool) -> Option<String> {
        let value = self.seal(key)?;
        Some(format!(
            "{COOKIE}={value}; Path={PATH}; Max-Age={TTL_SECS}; HttpOnly; SameSite=Lax{}",
            if secure { "; Secure" } else { "" }
        ))
    }
}

/// `value` as JSON sealed under `context` (a cookie's own label), base64url; `None` when
/// sealing failed. Shared by every sealed cookie (sign-in flow, Admin Portal session).
pub(crate) fn seal_value<T: Serialize>(key: &MasterKey, context: &[u8], value: &T) -> Option<String> {
    let json = serde_json::to_vec(value).ok()?;
    key.seal(context, &json).ok().map(|v| b64().encode(v))
}

/// The value of a cookie sealed by [`seal_value`] under `context`: `None` when it is too long,
/// or does not open under this key and context.
pub(crate) fn open_value<T: serde::de::DeserializeOwned>(key: &MasterKey, context: &[u8], value: &str) -> Option<T> {
    if value.len() > 8192 {
        return None;
    }
    let sealed = b64().decode(value).ok()?;
    let plain = key.open(context, &sealed).ok()?;
    serde_json::from_slice(&plain).ok()
}

/// A cookie's value among a request's `Cookie` headers.
pub(crate) fn named_cookie(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value that ends a flow (after its code was issued).
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path={PATH}; Max-Age=0; HttpOnly; SameSite=Lax{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The flow cookie's value among a request's `Cookie` headers.
pub fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    named_cookie(headers, COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_opens_only_under_its_key_and_its_csrf_token_is_its_own() {
        let key = MasterKey::generate().unwrap();
        let flow = Flow::start(
            "client_1".into(),
            "https://a.example/cb".into(),
            Some("s".into()),
            None,
            None,
        )
        .unwrap();
        let sealed = flow.seal(&key).unwrap();
        let back = Flow::open(&key, &sealed).unwrap();
        assert_eq!(back.redirect_uri, "https://a.example/cb");
        assert!(Flow::open(&MasterKey::generate().unwrap(), &sealed).is_none());
        let mut tampered = sealed.into_bytes();
        let last = tampered.len() - 3;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(Flow::open(&key, &String::from_utf8(tampered).unwrap()).is_none());
        let token = flow.csrf_token(&key);
        assert!(back.csrf_ok(&key, &token));
        let other = Flow::start("client_1".into(), "https://a.example/cb".into(), None, None, None).unwrap();
        assert!(!other.csrf_ok(&key, &token));
        assert!(!flow.csrf_ok(&key, ""));
        let mut expired = flow.clone();
        expired.expires = Utc::now().timestamp() - 1;
        assert!(Flow::open(&key, &expired.seal(&key).unwrap()).is_none());
    }
}
