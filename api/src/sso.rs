//! The OIDC sign-in of SSO connections: the application's `GET /sso/authorize` becomes a
//! redirect to the identity provider (our own single-use `state`, a nonce and PKCE), its answer
//! at `/sso/oidc/callback` a WorkOS `profile` behind a single-use keyledger code, exchanged at
//! `POST /sso/token` for an access token that `GET /sso/profile` reads. It never redirects a
//! browser to an unregistered address, never lets a request reach an address the SSRF guard
//! refuses, and never stores a token as is (only its SHA-256).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{Duration, Utc};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde_json::{json, Value};

use crate::connections::{self, SignInConnection};
use crate::error::ApiError;
use crate::secrets::token_hash;
use crate::state::AppState;
use keyledger_domain::connection::ConnectionState;
use keyledger_domain::ids::new_id;

/// How long each step's token lives.
const STATE_TTL_MINUTES: i64 = 10;
const CODE_TTL_MINUTES: i64 = 10;
/// `expires_in` of the access token of `GET /sso/profile`.
pub const ACCESS_TOKEN_TTL_SECONDS: i64 = 600;

/// A failure of the flow, shown as an error page (never a redirect).
#[derive(Debug, Clone)]
pub struct FlowError {
    pub code: &'static str,
    pub message: String,
}

impl FlowError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<ApiError> for FlowError {
    fn from(e: ApiError) -> Self {
        Self::new(e.code(), e.message().to_string())
    }
}

/// The one test of an application's `redirect_uri`: exactly a registered redirect URI or a
/// `KEYLEDGER_REDIRECT_URIS` entry (`crate::redirect_uris`, shared with the hosted sign-in).
pub async fn redirect_uri_allowed(state: &AppState, uri: &str) -> Result<bool, FlowError> {
    // The Admin Portal's test sign-in comes back to keyledger itself.
    if uri == crate::portal::test_result_url(state) {
        return Ok(true);
    }
    Ok(crate::redirect_uris::redirect_uri_allowed(state, uri).await?)
}

/// The callback the identity provider sends the browser back to.
pub fn callback_url(state: &AppState, conn: &SignInConnection) -> String {
    conn.oidc
        .as_ref()
        .and_then(|o| o.redirect_uri.clone())
        .unwrap_or_else(|| format!("{}/sso/oidc/callback", state.public_base))
}

/// Refuses a URL keyledger would fetch that the SSRF guard refuses (names are checked again by
/// the resolver of `AppState::sso_http` at every connection).
fn guard(state: &AppState, what: &str, url: &str) -> Result<(), FlowError> {
    let refused = url::Url::parse(url).map_or(true, |u| {
        !matches!(u.scheme(), "http" | "https") || state.webhook_allow.refuses_endpoint_url(&u)
    });
    if refused {
        tracing::warn!(what, "an identity provider address was refused by the SSRF guard");
        return Err(FlowError::new(
            "idp_address_refused",
            format!("the identity provider's {what} is an address keyledger does not connect to"),
        ));
    }
    Ok(())
}

/// How long a provider's discovery document and keys are reused before they are fetched again.
/// A provider that rotates its keys sooner is caught by [`finish`], which fetches them again
/// once when an ID token's signature does not verify with the kept keys.
const DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// At most this many providers are kept; the oldest entry makes room.
const DISCOVERY_ENTRIES: usize = 256;

/// Providers' discovery documents with their JWKS, by discovery URL, each kept [`DISCOVERY_TTL`]:
/// without it every sign-in fetched both twice (at the redirect and at the callback).
#[derive(Clone, Default)]
pub struct DiscoveryCache(Arc<Mutex<HashMap<String, (Instant, CoreProviderMetadata)>>>);

impl DiscoveryCache {
    fn get(&self, url: &str) -> Option<CoreProviderMetadata> {
        let entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(url)
            .filter(|(at, _)| at.elapsed() < DISCOVERY_TTL)
            .map(|(_, m)| m.clone())
    }

    fn put(&self, url: &str, metadata: &CoreProviderMetadata) {
        let mut entries = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|_, (at, _)| at.elapsed() < DISCOVERY_TTL);
        if entries.len() >= DISCOVERY_ENTRIES && !entries.contains_key(url) {
            let oldest = entries.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                entries.remove(&k);
            }
        }
        entries.insert(url.to_string(), (Instant::now(), metadata.clone()));
    }
}

/// Whether [`discover`] may answer from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetch {
    Cached,
    Fresh,
}

/// Discovery of the connection's provider (kept [`DISCOVERY_TTL`] unless `fetch` is
/// [`Fetch::Fresh`]); every endpoint keyledger will fetch is checked. Answers whether the
/// document came from the cache.
async fn discover(
    state: &AppState,
    conn: &SignInConnection,
    fetch: Fetch,
) -> Result<(CoreProviderMetadata, bool), FlowError> {
    let discovery = conn
        .oidc
        .as_ref()
        .and_then(|o| o.discovery_endpoint.clone())
        .ok_or_else(|| FlowError::new("connection_invalid", "the connection has no discovery endpoint"))?;
    guard(state, "discovery endpoint", &discovery)?;
    if fetch == Fetch::Cached {
        if let Some(m) = state.oidc_discovery.get(&discovery) {
            return Ok((m, true));
        }
    }
    let issuer = discovery
        .strip_suffix("/.well-known/openid-configuration")
        .unwrap_or(&discovery)
        .to_string();
    let issuer = IssuerUrl::new(issuer).map_err(|_| FlowError::new("connection_invalid", "invalid issuer"))?;
    let metadata = CoreProviderMetadata::discover_async(issuer, &state.sso_http)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, connection_id = conn.id, "OIDC discovery failed");
            FlowError::new("idp_unavailable", "the identity provider's discovery failed")
        })?;
    guard(state, "JWKS URI", metadata.jwks_uri().url().as_str())?;
    if let Some(t) = metadata.token_endpoint() {
        guard(state, "token endpoint", t.url().as_str())?;
    }
    state.oidc_discovery.put(&discovery, &metadata);
    Ok((metadata, false))
}

fn client_for(
    state: &AppState,
    conn: &SignInConnection,
    metadata: CoreProviderMetadata,
) -> Result<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
    FlowError,
> {
    let oidc = conn
        .oidc
        .as_ref()
        .ok_or_else(|| FlowError::new("connection_invalid", "not an OIDC connection"))?;
    let client_id = ClientId::new(oidc.client_id.clone().unwrap_or_default());
    let secret = conn
        .client_secret
        .as_ref()
        .map(|s| ClientSecret::new(s.expose().to_string()));
    let redirect = RedirectUrl::new(callback_url(state, conn))
        .map_err(|_| FlowError::new("connection_invalid", "invalid callback URL"))?;
    let mut client = CoreClient::from_provider_metadata(metadata, client_id, secret).set_redirect_uri(redirect);
    if oidc.token_authentication_method.as_deref() == Some("client_secret_post") {
        client = client.set_auth_type(AuthType::RequestBody);
    }
    Ok(client)
}

/// What `GET /sso/authorize` names the connection by.
#[derive(Debug, Clone)]
pub enum Selector {
    Connection(String),
    Organization(String),
    Domain(String),
}

/// The active OIDC connection the selector names.
pub async fn select(state: &AppState, sel: &Selector) -> Result<SignInConnection, FlowError> {
    let id = match sel {
        Selector::Connection(id) => id.clone(),
        Selector::Organization(org) => connections::active_ids_for_organization(state, org)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| FlowError::new("connection_not_found", "the organization has no active connection"))?,
        Selector::Domain(d) => {
            // Only the organization that verified the domain: a pending claim routes nobody.
            let unknown = || FlowError::new("connection_not_found", "no connection has this domain");
            let domain = keyledger_domain::values::DomainName::parse("domain", d).map_err(|_| unknown())?;
            let org = crate::policy::domain_owner(state, &domain).await?.ok_or_else(unknown)?;
            connections::active_ids_for_organization(state, &org)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| FlowError::new("connection_not_found", "no active connection has this domain"))?
        }
    };
    let conn = connections::for_sign_in(state, &id)
        .await
        .map_err(|_| FlowError::new("connection_not_found", "no such connection"))?;
    if conn.state != ConnectionState::Active {
        return Err(FlowError::new("connection_inactive", "the connection is not active"));
    }
    if conn.oidc.is_none() && conn.saml.is_none() {
        return Err(FlowError::new(
            "connection_unsupported",
            "the connection has neither OIDC nor SAML options",
        ));
    }
    Ok(conn)
}

/// Starts an OIDC sign-in: stores our state (single use, short-lived) and answers the identity
/// provider's authorization URL. `extra` travels sealed with the state to the callback (the
/// hosted sign-in's flow, when it started the SSO).
pub async fn start(
    state: &AppState,
    conn: &SignInConnection,
    redirect_uri: &str,
    app_state: Option<&str>,
    login_hint: Option<&str>,
    extra: Option<Value>,
) -> Result<String, FlowError> {
    let (metadata, _) = discover(state, conn, Fetch::Cached).await?;
    let client = client_for(state, conn, metadata)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge);
    if let Some(h) = login_hint {
        request = request.add_extra_param("login_hint", h.to_string());
    }
    let (url, csrf, nonce) = request.url();
    let sealed = json!({ "nonce": nonce.secret(), "pkce": verifier.secret(), "extra": extra });
    store_state(state, &conn.id, csrf.secret(), redirect_uri, app_state, &sealed).await?;
    Ok(url.to_string())
}

/// Stores the state of a sign-in under `token` (single use, short-lived); `sealed` is kept
/// encrypted with the master key.
pub(crate) async fn store_state(
    state: &AppState,
    connection_id: &str,
    token: &str,
    redirect_uri: &str,
    app_state: Option<&str>,
    sealed: &Value,
) -> Result<(), FlowError> {
    let state_hash = token_hash(token);
    let sealed = state
        .secrets
        .seal(&state_aad(&state_hash), sealed.to_string().as_bytes())
        .map_err(|_| FlowError::from(ApiError::internal()))?;
    sqlx::query(
        "insert into sso_state (state_hash, connection_id, redirect_uri, app_state, sealed, expires_at) \
         values ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&state_hash)
    .bind(connection_id)
    .bind(redirect_uri)
    .bind(app_state)
    .bind(sealed)
    .bind(Utc::now() + Duration::minutes(STATE_TTL_MINUTES))
    .execute(&state.pool)
    .await
    .map_err(|e| FlowError::from(ApiError::from(e)))?;
    Ok(())
}

/// A callback's state, taken (single use).
pub struct Pending {
    pub connection_id: String,
    pub redirect_uri: String,
    pub app_state: Option<String>,
    /// What the starter sealed with the state: the OIDC nonce and PKCE verifier, the SAML
    /// request id, the hosted sign-in's flow (`extra`).
    pub sealed: Value,
    nonce: String,
    pkce: String,
}

/// The sealed nonce and verifier are bound to their row: a copy under another state never opens.
fn state_aad(state_hash: &[u8]) -> Vec<u8> {
    [b"sso_state:".as_slice(), state_hash].concat()
}

/// Takes our `state` back: unknown, expired or already used → `None`.
pub async fn take_state(state: &AppState, token: &str) -> Result<Option<Pending>, FlowError> {
    let state_hash = token_hash(token);
    let row: Option<(String, String, Option<String>, Vec<u8>)> = sqlx::query_as(
        "update sso_state set used_at = now() where state_hash = $1 and used_at is null and expires_at > now() \
         returning connection_id, redirect_uri, app_state, sealed",
    )
    .bind(&state_hash)
    .fetch_optional(&state.pool)
    .await
    .map_err(|e| FlowError::from(ApiError::from(e)))?;
    let Some((connection_id, redirect_uri, app_state, sealed)) = row else {
        return Ok(None);
    };
    let plain = state
        .secrets
        .open(&state_aad(&state_hash), &sealed)
        .map_err(|_| FlowError::from(ApiError::internal()))?;
    let v: Value = serde_json::from_slice(&plain).map_err(|_| FlowError::from(ApiError::internal()))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(Some(Pending {
        connection_id,
        redirect_uri,
        app_state,
        nonce: s("nonce"),
        pkce: s("pkce"),
        sealed: v,
    }))
}

/// Exchanges the identity provider's code, validates the ID token (signature, issuer,
/// audience, expiry, nonce) and answers the WorkOS profile.
pub async fn finish(state: &AppState, pending: &Pending, code: &str) -> Result<Value, FlowError> {
    let conn = connections::for_sign_in(state, &pending.connection_id)
        .await
        .map_err(|_| FlowError::new("connection_not_found", "the connection is gone"))?;
    if conn.state != ConnectionState::Active {
        return Err(FlowError::new("connection_inactive", "the connection is not active"));
    }
    let (metadata, cached) = discover(state, &conn, Fetch::Cached).await?;
    let client = client_for(state, &conn, metadata)?;
    let exchange = client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .map_err(|_| FlowError::new("idp_invalid", "the identity provider has no token endpoint"))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce.clone()));
    let token = exchange.request_async(&state.sso_http).await.map_err(|e| {
        tracing::warn!(error = %e, connection_id = conn.id, "the identity provider refused the code");
        FlowError::new("idp_code_refused", "the identity provider refused the code")
    })?;
    let id_token = token
        .id_token()
        .ok_or_else(|| FlowError::new("idp_invalid", "the identity provider sent no ID token"))?;
    let nonce = Nonce::new(pending.nonce.clone());
    let refused = |e: &ClaimsVerificationError| {
        tracing::warn!(error = %e, connection_id = conn.id, "an ID token was refused");
        FlowError::new("id_token_invalid", "the identity provider's ID token is invalid")
    };
    let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
        Ok(c) => c.clone(),
        // Kept keys the provider has since rotated: its keys fetched anew, the token checked again.
        Err(ClaimsVerificationError::SignatureVerification(_)) if cached => {
            let (metadata, _) = discover(state, &conn, Fetch::Fresh).await?;
            let client = client_for(state, &conn, metadata)?;
            let verifier = client.id_token_verifier();
            let claims = id_token.claims(&verifier, &nonce).map_err(|e| refused(&e))?.clone();
            claims
        }
        Err(e) => return Err(refused(&e)),
    };
    let email = claims
        .email()
        .map(|e| e.to_string())
        .ok_or_else(|| FlowError::new("email_missing", "the identity provider sent no email"))?;
    let given = claims.given_name().and_then(|n| n.get(None)).map(|n| n.to_string());
    let family = claims.family_name().and_then(|n| n.get(None)).map(|n| n.to_string());
    let name = claims.name().and_then(|n| n.get(None)).map(|n| n.to_string());
    let raw = serde_json::to_value(&claims).unwrap_or_else(|_| json!({}));
    Ok(json!({
        "object": "profile",
        "id": new_id("prof"),
        "organization_id": conn.organization_id,
        "connection_id": conn.id,
        "connection_type": conn.connection_type,
        "idp_id": claims.subject().as_str(),
        "email": email,
        "first_name": given,
        "last_name": family,
        "name": name,
        "raw_attributes": raw,
    }))
}

/// Stores a profile behind a new single-use code for `redirect_uri`; answers the code.
pub async fn issue_code(state: &AppState, redirect_uri: &str, profile: &Value) -> Result<String, FlowError> {
    let code = crate::secrets::random_token(24).map_err(|_| FlowError::from(ApiError::internal()))?;
    sqlx::query("insert into sso_code (code_hash, redirect_uri, profile, expires_at) values ($1, $2, $3, $4)")
        .bind(token_hash(&code))
        .bind(redirect_uri)
        .bind(profile)
        .bind(Utc::now() + Duration::minutes(CODE_TTL_MINUTES))
        .execute(&state.pool)
        .await
        .map_err(|e| FlowError::from(ApiError::from(e)))?;
    Ok(code)
}

/// Takes a code (single use): its profile, or `None`.
pub async fn take_code(state: &AppState, code: &str) -> Result<Option<Value>, ApiError> {
    let row: Option<(Value,)> = sqlx::query_as(
        "update sso_code set used_at = now() where code_hash = $1 and used_at is null and expires_at > now() \
         returning profile",
    )
    .bind(token_hash(code))
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// Redeems a code (single use) for a new access token to its profile, in one statement (one
/// commit): the profile and the token, or `None` when the code is unknown, expired or used.
pub async fn redeem_code(state: &AppState, code: &str) -> Result<Option<(Value, String)>, ApiError> {
    let token = crate::secrets::random_token(32).map_err(|_| ApiError::internal())?;
    let row: Option<(Value,)> = sqlx::query_as(
        "with taken as (update sso_code set used_at = now() \
           where code_hash = $1 and used_at is null and expires_at > now() returning profile) \
         insert into sso_access_token (token_hash, profile, expires_at) select $2, profile, $3 from taken \
         returning profile",
    )
    .bind(token_hash(code))
    .bind(token_hash(&token))
    .bind(Utc::now() + Duration::seconds(ACCESS_TOKEN_TTL_SECONDS))
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|(profile,)| (profile, token)))
}

/// The profile of a live access token.
pub async fn profile_of(state: &AppState, token: &str) -> Result<Option<Value>, ApiError> {
    let row: Option<(Value,)> =
        sqlx::query_as("select profile from sso_access_token where token_hash = $1 and expires_at > now()")
            .bind(token_hash(token))
            .fetch_optional(&state.pool)
            .await?;
    Ok(row.map(|r| r.0))
}
