//! The SAML sign-in of SSO connections: keyledger is the service provider of each connection
//! (entity id = its metadata URL, ACS = `/sso/saml/acs/{id}` under the public URL). A sign-in
//! sends an AuthnRequest through the browser (HTTP-Redirect binding) with a single-use RelayState
//! (`sso_state`, shared with OIDC); the IdP's posted response is checked by `crate::saml`, its
//! assertion used once, and turned into the WorkOS `profile`. It never reads an assertion whose
//! signature the connection's certificate did not make, and never fetches an address the SSRF
//! guard refuses.

use chrono::{Duration, Utc};
use serde_json::{json, Map, Value};

use crate::connections::SignInConnection;
use crate::error::ApiError;
use crate::saml::{self, Expectations, IdentityProvider, SamlError, ServiceProvider};
use crate::sso::{self, FlowError, Pending};
use crate::state::AppState;
use keyledger_domain::ids::new_id;

/// Clock skew tolerated on the assertion's time bounds.
const SKEW_SECONDS: i64 = 60;

/// keyledger as the service provider of `conn`: its entity id and ACS URL (the connection's own
/// when it names them).
pub fn service_provider(
    state: &AppState,
    conn_id: &str,
    options: Option<&keyledger_domain::connection::SamlOptions>,
) -> ServiceProvider {
    let base = &state.public_base;
    ServiceProvider {
        entity_id: options
            .and_then(|o| o.sp_entity_id.clone())
            .unwrap_or_else(|| format!("{base}/sso/saml/metadata/{conn_id}")),
        acs_url: options
            .and_then(|o| o.acs_url.clone())
            .unwrap_or_else(|| format!("{base}/sso/saml/acs/{conn_id}")),
    }
}

impl From<SamlError> for FlowError {
    fn from(e: SamlError) -> Self {
        if e.is_server_fault() {
            tracing::error!(error = %e, "SAML signatures cannot be checked");
            return FlowError::new("saml_unavailable", "SAML sign-in is unavailable on this server");
        }
        FlowError::new(e.code(), e.to_string())
    }
}

/// The connection's identity provider: its options, or the metadata at its metadata URL (fetched
/// through the SSRF-guarded client, at most 1 MiB).
pub async fn identity_provider(state: &AppState, conn: &SignInConnection) -> Result<IdentityProvider, FlowError> {
    let options = conn
        .saml
        .as_ref()
        .ok_or_else(|| FlowError::new("connection_invalid", "not a SAML connection"))?;
    if let (Some(entity_id), Some(sso_url)) = (&options.idp_entity_id, &options.idp_sso_url) {
        if !options.idp_signing_certs.is_empty() {
            let certificates = options
                .idp_signing_certs
                .iter()
                .map(|c| saml::normalize_certificate(c))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(IdentityProvider {
                entity_id: entity_id.clone(),
                sso_url: sso_url.clone(),
                certificates,
            });
        }
    }
    let url = options
        .idp_metadata_url
        .as_deref()
        .ok_or_else(|| FlowError::new("connection_invalid", "the connection has no IdP metadata"))?;
    crate::connections::fetch_idp_metadata(state, "idp_metadata_url", url)
        .await
        .map_err(|e| FlowError::new("idp_unavailable", e.message().to_string()))
}

/// Starts a SAML sign-in: the URL of the IdP's SSO endpoint with our AuthnRequest and a
/// single-use RelayState naming this sign-in.
pub async fn start(
    state: &AppState,
    conn: &SignInConnection,
    redirect_uri: &str,
    app_state: Option<&str>,
    extra: Option<Value>,
) -> Result<String, FlowError> {
    let idp = identity_provider(state, conn).await?;
    let sp = service_provider(state, &conn.id, conn.saml.as_ref());
    let request_id = saml::new_request_id();
    let relay_state = crate::secrets::random_token(24).map_err(|_| FlowError::from(ApiError::internal()))?;
    let sealed = json!({ "saml_request_id": request_id, "extra": extra });
    sso::store_state(state, &conn.id, &relay_state, redirect_uri, app_state, &sealed).await?;
    Ok(saml::authn_request_url(&sp, &idp, &request_id, &relay_state, Utc::now())?.to_string())
}

/// The posted response of the sign-in `pending` (already taken from its RelayState) at the ACS
/// of `conn`: checked, its signature verified, its assertion used once; the WorkOS profile.
pub async fn consume(
    state: &AppState,
    conn: &SignInConnection,
    pending: &Pending,
    saml_response: &str,
) -> Result<Value, FlowError> {
    if pending.connection_id != conn.id {
        return Err(FlowError::new(
            "invalid_state",
            "the sign-in was started for another connection",
        ));
    }
    let request_id = pending
        .sealed
        .get("saml_request_id")
        .and_then(Value::as_str)
        .ok_or_else(|| FlowError::new("invalid_state", "the sign-in is not a SAML sign-in"))?;
    let idp = identity_provider(state, conn).await?;
    let sp = service_provider(state, &conn.id, conn.saml.as_ref());
    let xml = saml::decode_response(saml_response)?;
    let expect = Expectations {
        sp: &sp,
        idp_entity_id: &idp.entity_id,
        request_id: Some(request_id),
        now: Utc::now(),
        skew: Duration::seconds(SKEW_SECONDS),
    };
    let checked = saml::check(&xml, &expect)?;
    state.saml.verify(&checked, &idp.certificates).await?;
    let assertion = &checked.assertion;
    let first_use = sqlx::query(
        "insert into saml_assertion (connection_id, assertion_id, expires_at) values ($1, $2, $3) \
         on conflict do nothing",
    )
    .bind(&conn.id)
    .bind(&assertion.id)
    .bind(assertion.not_on_or_after + Duration::seconds(SKEW_SECONDS))
    .execute(&state.pool)
    .await
    .map_err(|e| FlowError::from(ApiError::from(e)))?
    .rows_affected()
        == 1;
    if !first_use {
        return Err(FlowError::new("saml_replayed", "this assertion was already used"));
    }
    let email = assertion
        .email()
        .ok_or_else(|| FlowError::new("email_missing", "the identity provider sent no email"))?;
    let raw: Map<String, Value> = assertion
        .attributes
        .iter()
        .map(|(k, v)| {
            let value = match v.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            (k.clone(), value)
        })
        .collect();
    let (first, last) = (assertion.first_name(), assertion.last_name());
    let name = match (first, last) {
        (Some(f), Some(l)) => Some(format!("{f} {l}")),
        (f, l) => f.or(l).map(str::to_string),
    };
    Ok(json!({
        "object": "profile",
        "id": new_id("prof"),
        "organization_id": conn.organization_id,
        "connection_id": conn.id,
        "connection_type": conn.connection_type,
        "idp_id": assertion.idp_id(),
        "email": email,
        "first_name": first,
        "last_name": last,
        "name": name,
        "raw_attributes": raw,
    }))
}
