//! SSO connections beside the log: their client secrets and private keys, sealed with the master
//! key in `connection_secret` (events name a row only by its id), and what the sign-in code reads
//! of a connection. It never puts a secret in an event, a response or a log line: an unsealed
//! secret is a [`SecretText`], which does not print.

use std::collections::BTreeMap;
use std::fmt;

use chrono::Utc;
use cqrs_es::Aggregate;
use keyledger_domain::connection::{
    Connection, ConnectionCommand, ConnectionError, ConnectionState, OidcOptions, SamlOptions, SecretRefs,
    CLIENT_SECRET, JWT_SIGNING_KEY,
};
use keyledger_domain::ids::new_id;
use keyledger_projections::queries;
use keyledger_store::append::SideRows;
use keyledger_store::commands::Mode;

use crate::error::{command_error, ApiError};
use crate::state::{AppState, RequestContext};

/// A secret in memory (a client secret, a PEM private key): never printed, never serialized.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    pub fn new(s: String) -> Self {
        Self(s)
    }

    /// The secret itself, for the one place that sends or uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText([redacted])")
    }
}

/// A connection as the sign-in flows need it: its options with the secrets unsealed.
#[derive(Debug, Clone)]
pub struct SignInConnection {
    pub id: String,
    pub organization_id: String,
    pub connection_type: String,
    pub state: ConnectionState,
    pub oidc: Option<OidcOptions>,
    pub saml: Option<SamlOptions>,
    /// The OIDC client secret (`client_secret_basic` / `client_secret_post`).
    pub client_secret: Option<SecretText>,
    /// The `private_key_jwt` signing key (PEM).
    pub jwt_signing_key: Option<SecretText>,
    /// Other sealed keys by purpose (`sp_signing_key`, `sp_encryption_key:<n>`).
    pub keys: BTreeMap<String, SecretText>,
}

/// The sealed row is bound to its connection and its own id: a row copied elsewhere never opens.
fn aad(connection_id: &str, row_id: &str) -> Vec<u8> {
    format!("connection_secret:{connection_id}:{row_id}").into_bytes()
}

fn secret_failure(e: &crate::secrets::SecretError) -> ApiError {
    tracing::error!(error = %e, "a connection secret could not be sealed or opened");
    ApiError::internal()
}

/// Seals each `(purpose, secret)` of connection `connection_id` into its own row, written before
/// the append of the event that names it, and answers the references for that event. Should
/// that append fail, [`discard`] removes the rows (unnamed meanwhile, they are never read).
pub async fn seal_all(
    state: &AppState,
    connection_id: &str,
    secrets: Vec<(String, SecretText)>,
) -> Result<SecretRefs, ApiError> {
    let mut refs = SecretRefs::new();
    for (purpose, secret) in secrets {
        let row_id = new_id("conn_secret");
        let sealed = state
            .secrets
            .seal(&aad(connection_id, &row_id), secret.expose().as_bytes())
            .map_err(|e| secret_failure(&e))?;
        sqlx::query("insert into connection_secret (id, connection_id, purpose, sealed) values ($1, $2, $3, $4)")
            .bind(&row_id)
            .bind(connection_id)
            .bind(&purpose)
            .bind(sealed)
            .execute(&state.pool)
            .await?;
        refs.insert(purpose, row_id);
    }
    Ok(refs)
}

/// Removes sealed rows no event names (their append failed).
pub async fn discard(state: &AppState, refs: &SecretRefs) {
    let ids: Vec<String> = refs.values().cloned().collect();
    if ids.is_empty() {
        return;
    }
    if let Err(e) = sqlx::query("delete from connection_secret where id = any($1)")
        .bind(&ids)
        .execute(&state.pool)
        .await
    {
        tracing::warn!(error = %e, "removing unused connection secrets failed");
    }
}

/// Erases the rows of connection `id` that `before` named for the purposes `replaced` now names
/// anew: a change landed on exactly `before` (no other change came between), so nothing names
/// them any more, nor ever will (row ids are fresh). Rows of concurrent changes are left alone.
pub async fn erase_replaced(state: &AppState, id: &str, before: &SecretRefs, replaced: &SecretRefs) {
    let old: Vec<String> = replaced
        .iter()
        .filter_map(|(purpose, new)| before.get(purpose).filter(|o| *o != new).cloned())
        .collect();
    if old.is_empty() {
        return;
    }
    if let Err(e) = sqlx::query("delete from connection_secret where connection_id = $1 and id = any($2)")
        .bind(id)
        .bind(&old)
        .execute(&state.pool)
        .await
    {
        tracing::warn!(error = %e, connection_id = id, "erasing replaced connection secrets failed");
    }
}

/// Erases every row of a deleted connection (a change racing the deletion fails and discards
/// its own).
async fn erase_all(state: &AppState, id: &str) {
    if let Err(e) = sqlx::query("delete from connection_secret where connection_id = $1")
        .bind(id)
        .execute(&state.pool)
        .await
    {
        tracing::warn!(error = %e, connection_id = id, "erasing a deleted connection's secrets failed");
    }
}

async fn open(state: &AppState, connection_id: &str, row_id: &str) -> Result<SecretText, ApiError> {
    let row: Option<(Vec<u8>,)> =
        sqlx::query_as("select sealed from connection_secret where id = $1 and connection_id = $2")
            .bind(row_id)
            .bind(connection_id)
            .fetch_optional(&state.pool)
            .await?;
    let Some((sealed,)) = row else {
        tracing::error!(connection_id, "a connection secret named by the log is missing");
        return Err(ApiError::internal());
    };
    let plain = state
        .secrets
        .open(&aad(connection_id, row_id), &sealed)
        .map_err(|e| secret_failure(&e))?;
    String::from_utf8(plain)
        .map(SecretText)
        .map_err(|_| ApiError::internal())
}

/// The connection `connection_id` for a sign-in, read from the log (not the lagging read model),
/// with its secrets unsealed; `404 entity_not_found` when it does not exist (or was deleted).
/// Whether its state allows a sign-in is the caller's decision.
pub async fn for_sign_in(state: &AppState, connection_id: &str) -> Result<SignInConnection, ApiError> {
    let (c, _) = state
        .bus
        .load::<Connection>(connection_id)
        .await
        .map_err(|e| command_error(e, connection_error))?;
    if !c.exists() {
        return Err(ApiError::not_found("connection"));
    }
    let mut keys = BTreeMap::new();
    for (purpose, row_id) in &c.secrets {
        keys.insert(purpose.clone(), open(state, connection_id, row_id).await?);
    }
    Ok(SignInConnection {
        id: connection_id.to_string(),
        organization_id: c.organization_id.clone().unwrap_or_default(),
        connection_type: c.connection_type.clone(),
        state: c.state,
        oidc: c.oidc.clone(),
        saml: c.saml.clone(),
        client_secret: keys.remove(CLIENT_SECRET),
        jwt_signing_key: keys.remove(JWT_SIGNING_KEY),
        keys,
    })
}

/// The ids of organization `org_id`'s active connections, oldest first.
pub async fn active_ids_for_organization(state: &AppState, org_id: &str) -> Result<Vec<String>, ApiError> {
    Ok(queries::active_connection_ids(&state.pool, org_id).await?)
}

/// How long fetching an IdP's metadata may take.
const IDP_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// The largest IdP metadata document read.
const IDP_METADATA_MAX: usize = 512 * 1024;

/// The client of [`fetch_idp_metadata`] (`AppState::sso_http`, also the OIDC sign-in's): names resolve through the SSRF
/// guard and the resolver's answer is the connection target; a 3xx is not followed (a redirect
/// to an IP literal would skip the guard).
pub fn guarded_http_client(
    nameserver: Option<std::net::SocketAddr>,
    allow: crate::ssrf::WebhookAllow,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(IDP_FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(crate::ssrf::GuardedResolver::new(
            nameserver, allow,
        )))
        .no_proxy()
        .user_agent(concat!("keyledger/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Fetches and reads the IdP metadata at `url` (already checked by the connection's URL rules:
/// http(s), no refused IP literal) through the guarded client; `field` names the input in the
/// 422 that any failure answers (unreachable, refused address, not 200, too large, unreadable).
pub async fn fetch_idp_metadata(
    state: &AppState,
    field: &str,
    url: &str,
) -> Result<crate::saml::IdentityProvider, ApiError> {
    let refused = |why: &str| {
        ApiError::invalid(
            field,
            "idp_metadata_unavailable",
            format!("the IdP metadata could not be read from this URL: {why}"),
        )
    };
    let mut resp = state.sso_http.get(url).send().await.map_err(|e| {
        if crate::ssrf::is_blocked_error(&e) {
            refused("it names an address keyledger does not connect to")
        } else {
            refused("the server did not answer")
        }
    })?;
    if resp.status() != reqwest::StatusCode::OK {
        return Err(refused(&format!("the server answered {}", resp.status().as_u16())));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|_| refused("the answer broke off"))? {
        if body.len() + chunk.len() > IDP_METADATA_MAX {
            return Err(refused("the document is too large"));
        }
        body.extend_from_slice(&chunk);
    }
    let xml = String::from_utf8(body).map_err(|_| refused("the document is not UTF-8"))?;
    crate::saml::idp_metadata(&xml).map_err(|_| refused("the document is not IdP metadata keyledger can read"))
}

/// A refused connection command as the API answers it.
pub fn connection_error(e: ConnectionError) -> ApiError {
    match e {
        ConnectionError::NotFound => ApiError::not_found("connection"),
        ConnectionError::AlreadyExists => ApiError::conflict("the connection already exists"),
        ConnectionError::Incomplete => ApiError::invalid(
            "state",
            "connection_options_incomplete",
            "an active connection needs complete options: OIDC discovery_endpoint, client_id and client_secret; \
             SAML idp_metadata_url, or idp_sso_url and idp_signing_certs",
        ),
        ConnectionError::NotActive => ApiError::invalid(
            "state",
            "connection_not_active",
            "only an active connection can be deactivated; a draft becomes active when its options are complete",
        ),
        ConnectionError::TypeChange => ApiError::invalid(
            "connection_type",
            "connection_type_immutable",
            "connection_type cannot be changed after creation",
        ),
    }
}

/// Deletes connection `id` and, once that landed, its sealed secrets.
pub async fn delete(state: &AppState, ctx: &RequestContext, id: &str) -> Result<(), ApiError> {
    state
        .execute::<Connection>(
            ctx,
            id,
            ConnectionCommand::Delete { at: Utc::now() },
            SideRows::default(),
            Mode::Retry,
        )
        .await
        .map_err(|e| command_error(e, connection_error))?;
    erase_all(state, id).await;
    Ok(())
}

/// Deletes every connection of a deleted organization (after its own deletion: a connection's
/// creation requires the live organization, so none can appear afterwards). Found in the log,
/// not the lagging read model; each is its own append.
pub async fn delete_all_of_organization(state: &AppState, ctx: &RequestContext, org_id: &str) -> Result<(), ApiError> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "select distinct aggregate_id from event where organization_id = $1 and aggregate_type = $2 order by 1",
    )
    .bind(org_id)
    .bind(Connection::TYPE)
    .fetch_all(&state.pool)
    .await?;
    let plain = RequestContext {
        idempotency: None,
        ..ctx.clone()
    };
    for (id,) in ids {
        match delete(state, &plain, &id).await {
            Ok(()) => {}
            Err(e) if e.code() == "entity_not_found" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
