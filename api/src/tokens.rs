//! Users' access tokens: WorkOS-shaped JWTs signed RS256 with this deployment's signing keys
//! (`crate::signing_keys`), their verification, and the JWKS that publishes the keys. The keys
//! live in memory, reloaded from the database every `refresh` (a rotation made by another process
//! is seen within that bound) and at once when a token names a kid not yet seen. This module
//! never accepts another algorithm than RS256, nor a key that is not ours.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::error::ApiError;
use crate::secrets::MasterKey;
use crate::signing_keys::{self, SigningKeyError, StoredKey};

/// Default lifetime of an access token (`KEYLEDGER_ACCESS_TOKEN_TTL_SECONDS`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Default interval of the key reload (`Config::signing_keys_refresh`).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10);

/// Clock skew tolerated on `exp` (and `nbf` if present).
pub const LEEWAY_SECS: u64 = 5;

/// A token naming an unknown kid reloads the keys at most this often (the kid is the caller's
/// choice: it must not buy a database query per request).
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(1);

/// The claims of an access token (WorkOS's shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The session id.
    pub sid: String,
    pub org_id: Option<String>,
    pub role: Option<String>,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
}

/// The claims as they travel: organization claims only in an organization's token, as WorkOS.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    sub: String,
    sid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    org_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    roles: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    permissions: Option<Vec<String>>,
    iat: i64,
    exp: i64,
    jti: String,
}

impl From<&AccessClaims> for WireClaims {
    fn from(c: &AccessClaims) -> Self {
        let in_org = c.org_id.is_some();
        let list = |v: &Vec<String>| (in_org || !v.is_empty()).then(|| v.clone());
        Self {
            iss: c.iss.clone(),
            sub: c.sub.clone(),
            sid: c.sid.clone(),
            org_id: c.org_id.clone(),
            role: c.role.clone(),
            roles: list(&c.roles),
            permissions: list(&c.permissions),
            iat: c.iat,
            exp: c.exp,
            jti: c.jti.clone(),
        }
    }
}

impl From<WireClaims> for AccessClaims {
    fn from(w: WireClaims) -> Self {
        Self {
            iss: w.iss,
            sub: w.sub,
            sid: w.sid,
            org_id: w.org_id,
            role: w.role,
            roles: w.roles.unwrap_or_default(),
            permissions: w.permissions.unwrap_or_default(),
            iat: w.iat,
            exp: w.exp,
            jti: w.jti,
        }
    }
}

/// Why a token was refused. Callers answer all of them alike (401); the kind is for logs and
/// tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed JWT")]
    Malformed,
    #[error("the token's algorithm is not RS256")]
    Algorithm,
    #[error("the token's key is not one of this deployment's published keys")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token's issuer is not this deployment")]
    Issuer,
    #[error("the token's claims are missing or invalid")]
    Claims,
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        ApiError::new(axum::http::StatusCode::UNAUTHORIZED, "invalid_token", e.to_string())
    }
}

/// Fixed settings of [`Tokens`].
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub client_id: String,
    /// `iss` of the tokens signed and the only one accepted.
    pub issuer: String,
    pub ttl: Duration,
    /// How often the keys are reloaded from the database.
    pub refresh: Duration,
}

/// A published key, ready to verify with.
struct VerifyingKey {
    key: DecodingKey,
    retire_after: Option<DateTime<Utc>>,
}

/// The keys as last loaded.
#[derive(Default)]
struct KeySet {
    /// The active key: kid and signing key (`None`: no key yet, or it does not open).
    active: Option<(String, EncodingKey)>,
    verifying: HashMap<String, VerifyingKey>,
    jwks: Arc<Value>,
}

struct Inner {
    pool: PgPool,
    master: MasterKey,
    settings: TokenSettings,
    keys: RwLock<Arc<KeySet>>,
    /// One reload at a time; when the last one finished.
    reload: tokio::sync::Mutex<Option<Instant>>,
}

/// Signs and verifies access tokens and serves the JWKS. Cheap to clone.
#[derive(Clone)]
pub struct Tokens(Arc<Inner>);

impl Tokens {
    /// Tokens over the keys in `pool`; loads nothing yet (see [`Tokens::reload`]).
    pub fn new(pool: PgPool, master: MasterKey, settings: TokenSettings) -> Self {
        Self(Arc::new(Inner {
            pool,
            master,
            settings,
            keys: RwLock::new(Arc::new(KeySet {
                jwks: Arc::new(json!({ "keys": [] })),
                ..KeySet::default()
            })),
            reload: tokio::sync::Mutex::new(None),
        }))
    }

    pub fn client_id(&self) -> &str {
        &self.0.settings.client_id
    }

    pub fn issuer(&self) -> &str {
        &self.0.settings.issuer
    }

    pub fn ttl(&self) -> Duration {
        self.0.settings.ttl
    }

    fn current(&self) -> Arc<KeySet> {
        match self.0.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads the published keys from the database (one query; the active key's private half
    /// is opened here, not per token).
    pub async fn reload(&self) -> Result<(), sqlx::Error> {
        let mut last = self.0.reload.lock().await;
        self.reload_locked().await?;
        *last = Some(Instant::now());
        Ok(())
    }

    async fn reload_locked(&self) -> Result<(), sqlx::Error> {
        let stored = signing_keys::published(&self.0.pool).await?;
        let set = self.key_set(&stored);
        match self.0.keys.write() {
            Ok(mut k) => *k = Arc::new(set),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(set),
        }
        Ok(())
    }

    fn key_set(&self, stored: &[StoredKey]) -> KeySet {
        let mut set = KeySet::default();
        let mut published = Vec::new();
        for k in stored {
            let (Some(n), Some(e)) = (k.public_jwk["n"].as_str(), k.public_jwk["e"].as_str()) else {
                tracing::error!(kid = %k.kid, "a stored signing key has no n/e; skipped");
                continue;
            };
            let key = match DecodingKey::from_rsa_components(n, e) {
                Ok(key) => key,
                Err(err) => {
                    tracing::error!(kid = %k.kid, error = %err, "a stored signing key does not parse; skipped");
                    continue;
                }
            };
            if k.is_active() {
                match k.open(&self.0.master) {
                    Ok(der) => set.active = Some((k.kid.clone(), EncodingKey::from_rsa_der(&der))),
                    Err(err) => tracing::error!(
                        kid = %k.kid, error = %err,
                        "the active signing key cannot be opened: the secret key changed (restore the \
                         original KEYLEDGER_SECRET_KEY / secret.key, or rotate the signing keys)"
                    ),
                }
            }
            set.verifying.insert(
                k.kid.clone(),
                VerifyingKey {
                    key,
                    retire_after: k.retire_after,
                },
            );
            published.push(k.public_jwk.clone());
        }
        set.jwks = Arc::new(json!({ "keys": published }));
        set
    }

    /// The active signing key, creating the first one when there is none (lazily: most
    /// deployments' tests never sign).
    async fn active(&self) -> Result<(String, EncodingKey), ApiError> {
        if let Some(a) = self.current().active.clone() {
            return Ok(a);
        }
        let mut last = self.0.reload.lock().await;
        if let Some(a) = self.current().active.clone() {
            return Ok(a);
        }
        match signing_keys::ensure_active(&self.0.pool, &self.0.master).await {
            Ok(_) => {}
            Err(SigningKeyError::Database(e)) => return Err(e.into()),
            Err(e) => {
                tracing::error!(error = %e, "creating the first signing key failed");
                return Err(ApiError::internal());
            }
        }
        self.reload_locked().await?;
        *last = Some(Instant::now());
        self.current().active.clone().ok_or_else(|| {
            tracing::error!(
                "no usable signing key: the active key does not open with the configured secret key \
                 (the secret key changed)"
            );
            ApiError::internal()
        })
    }

    /// Signs an access token for a session, `org` = (organization id, role slug) when it is an
    /// organization's; fills `iss`, `iat`, `exp` (now + ttl) and a random `jti`.
    pub async fn sign(
        &self,
        user_id: &str,
        session_id: &str,
        org: Option<(&str, &str)>,
        permissions: &[String],
    ) -> Result<String, ApiError> {
        let now = Utc::now().timestamp();
        let ttl = i64::try_from(self.0.settings.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = AccessClaims {
            iss: self.0.settings.issuer.clone(),
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            org_id: org.map(|(o, _)| o.to_string()),
            role: org.map(|(_, r)| r.to_string()),
            roles: org.map(|(_, r)| vec![r.to_string()]).unwrap_or_default(),
            permissions: permissions.to_vec(),
            iat: now,
            exp: now.saturating_add(ttl),
            jti: crate::secrets::random_token(16).map_err(|e| {
                tracing::error!(error = %e, "drawing a token id failed");
                ApiError::internal()
            })?,
        };
        self.sign_claims(&claims).await
    }

    /// Signs `claims` exactly as given (tests and tools; [`Tokens::sign`] is the normal way).
    pub async fn sign_claims(&self, claims: &AccessClaims) -> Result<String, ApiError> {
        let (kid, key) = self.active().await?;
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid);
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, &WireClaims::from(claims), &key).map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            ApiError::internal()
        })
    }

    /// Verifies an access token: RS256 only, signed by one of our published keys, our issuer,
    /// not expired (with [`LEEWAY_SECS`]).
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let kid = header_kid(token)?;
        let key = match self.verifying_key(&kid) {
            Some(k) => k,
            None => {
                self.reload_for_unknown_kid().await;
                self.verifying_key(&kid).ok_or(TokenError::UnknownKey)?
            }
        };
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_aud = false;
        validation.set_issuer(&[&self.0.settings.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        let data = jsonwebtoken::decode::<WireClaims>(token, &key, &validation).map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => TokenError::Signature,
            ErrorKind::ExpiredSignature => TokenError::Expired,
            ErrorKind::InvalidIssuer => TokenError::Issuer,
            ErrorKind::InvalidAlgorithm => TokenError::Algorithm,
            ErrorKind::MissingRequiredClaim(_) | ErrorKind::ImmatureSignature | ErrorKind::Json(_) => {
                TokenError::Claims
            }
            _ => TokenError::Malformed,
        })?;
        Ok(data.claims.into())
    }

    /// The key named `kid` while it is published (a retiring key until its `retire_after`).
    fn verifying_key(&self, kid: &str) -> Option<DecodingKey> {
        let set = self.current();
        let k = set.verifying.get(kid)?;
        match k.retire_after {
            Some(t) if t <= Utc::now() => None,
            _ => Some(k.key.clone()),
        }
    }

    async fn reload_for_unknown_kid(&self) {
        let mut last = self.0.reload.lock().await;
        if last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_RELOAD) {
            return;
        }
        match self.reload_locked().await {
            Ok(()) => *last = Some(Instant::now()),
            Err(e) => tracing::warn!(error = %e, "reloading the signing keys failed"),
        }
    }

    /// The JWKS: `{"keys": [...]}`, the active key first. Creates the first key if there is
    /// none yet (a client may fetch the JWKS before any token exists). From memory otherwise.
    pub async fn jwks(&self) -> Value {
        self.jwks_shared().await.as_ref().clone()
    }

    /// [`Tokens::jwks`] without copying it.
    pub async fn jwks_shared(&self) -> Arc<Value> {
        let set = self.current();
        if set.active.is_none() && set.verifying.is_empty() {
            if let Err(e) = self.active().await {
                tracing::warn!(code = ?e, "no signing key for the JWKS yet");
            }
            return self.current().jwks.clone();
        }
        set.jwks.clone()
    }

    /// Reloads the keys every `refresh` until shutdown (a rotation by another process).
    pub async fn refresh_periodically(self, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(self.0.settings.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.reload().await {
                        tracing::warn!(error = %e, "reloading the signing keys failed; keeping the last ones");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The header's kid, after checking that the header says RS256 (read before anything else:
/// `none`, HS256 and the like are refused by name, whatever a library would do with them).
fn header_kid(token: &str) -> Result<String, TokenError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
    let header: Value = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    if header["alg"].as_str() != Some("RS256") {
        return Err(TokenError::Algorithm);
    }
    header["kid"].as_str().map(str::to_string).ok_or(TokenError::UnknownKey)
}

/// The `iss` of this deployment's tokens: `<public url or http://<listen addr>>/user_management/<client id>`.
pub fn issuer(public_url: Option<&str>, listen: SocketAddr, client_id: &str) -> String {
    let base = match public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{listen}"),
    };
    format!("{base}/user_management/{client_id}")
}

/// Setting name of the generated client id.
const CLIENT_ID_SETTING: &str = "client_id";

/// A client id may appear in URL paths and in `iss`: letters, digits, `_`, `-`, `.`; 1..=128.
pub fn valid_client_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// The configured client id, else the one kept in the database, generated (`client_<ULID>`) by
/// the first start; concurrent first starts agree (insert if absent, then read).
pub async fn client_id(pool: &PgPool, configured: Option<&str>) -> anyhow::Result<String> {
    if let Some(id) = configured {
        if !valid_client_id(id) {
            bail!("KEYLEDGER_CLIENT_ID / --client-id must be 1 to 128 letters, digits, '_', '-' or '.'");
        }
        return Ok(id.to_string());
    }
    sqlx::query("insert into setting (name, value) values ($1, $2) on conflict (name) do nothing")
        .bind(CLIENT_ID_SETTING)
        .bind(format!("client_{}", ulid::Ulid::new()))
        .execute(pool)
        .await
        .context("recording the client id")?;
    let (id,): (String,) = sqlx::query_as("select value from setting where name = $1")
        .bind(CLIENT_ID_SETTING)
        .fetch_one(pool)
        .await
        .context("reading the client id")?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_other_than_rs256_are_refused_by_name() {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let token = |h: Value| format!("{}.{}.sig", enc(h), enc(json!({"sub": "u"})));
        assert_eq!(header_kid(&token(json!({"alg": "RS256", "kid": "k"}))), Ok("k".into()));
        for alg in ["none", "None", "HS256", "RS384", "ES256", "PS256", "rs256"] {
            assert_eq!(
                header_kid(&token(json!({"alg": alg, "kid": "k"}))),
                Err(TokenError::Algorithm),
                "{alg}"
            );
        }
        assert_eq!(header_kid(&token(json!({"kid": "k"}))), Err(TokenError::Algorithm));
        assert_eq!(header_kid(&token(json!({"alg": "RS256"}))), Err(TokenError::UnknownKey));
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.b.c",
            &format!("{}.b.c", URL_SAFE_NO_PAD.encode("[1")),
        ] {
            assert_eq!(header_kid(bad), Err(TokenError::Malformed), "{bad}");
        }
    }

    #[test]
    fn the_issuer_is_the_public_url_or_the_listen_address_then_the_client_id() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(
            issuer(None, addr, "client_1"),
            "http://127.0.0.1:8080/user_management/client_1"
        );
        assert_eq!(
            issuer(Some("https://id.example.com/"), addr, "client_1"),
            "https://id.example.com/user_management/client_1"
        );
    }

    #[test]
    fn client_ids_are_path_safe() {
        assert!(valid_client_id("client_01HXYZ123456789ABCDEFGHIJ"));
        for bad in ["", "a/b", "a b", "é", "a?b", &"x".repeat(129)] {
            assert!(!valid_client_id(bad), "{bad}");
        }
    }

    #[test]
    fn organization_claims_travel_only_in_an_organizations_token() {
        let mut c = AccessClaims {
            iss: "i".into(),
            sub: "user_1".into(),
            sid: "session_1".into(),
            org_id: None,
            role: None,
            roles: vec![],
            permissions: vec![],
            iat: 1,
            exp: 2,
            jti: "j".into(),
        };
        let wire = serde_json::to_value(WireClaims::from(&c)).unwrap();
        assert_eq!(
            wire,
            json!({"iss": "i", "sub": "user_1", "sid": "session_1", "iat": 1, "exp": 2, "jti": "j"})
        );
        c.org_id = Some("org_1".into());
        c.role = Some("member".into());
        c.roles = vec!["member".into()];
        let wire = serde_json::to_value(WireClaims::from(&c)).unwrap();
        assert_eq!(wire["roles"], json!(["member"]));
        assert_eq!(wire["permissions"], json!([]));
        let back: AccessClaims = serde_json::from_value::<WireClaims>(wire).unwrap().into();
        assert_eq!(back, c);
    }
}
