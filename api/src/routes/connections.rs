//! `/connections`: an organization's SSO connections (OIDC and SAML) — created and changed the
//! way the SDKs' `sso.create_connection` / `update_connection` send them, listed, read and
//! deleted. Secrets in a request are sealed (`crate::connections`) and never answered.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use cqrs_es::Aggregate;
use keyledger_domain::connection::{
    Connection, ConnectionCommand, ConnectionState, CreateConnection, OidcOptions, SamlOptions, SecretRefs,
    UpdateConnection, CLIENT_SECRET, JWT_SIGNING_KEY,
};
use keyledger_domain::ids::new_id;
use keyledger_domain::values::validate_text;
use keyledger_projections::objects::Kind;
use keyledger_projections::queries::{self, ConnectionFilter};
use keyledger_store::append::{AppendError, SideRows};
use keyledger_store::commands::{append_error, Mode, MAX_ATTEMPTS};
use keyledger_store::decode::AnyEvent;
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::{created_new, id_page, list_response, nullable, object, ListParams};
use crate::connections::{self, connection_error, SecretText};
use crate::error::{command_error, ApiError};
use crate::extract::{AppJson, PathParam, QueryPairs};
use crate::schemas;
use crate::state::{AppState, RequestContext};

const ID: &str = "The connection's id (`conn_...`).";

/// The SAML connection types a connection may be created as.
const SAML_TYPES: &[&str] = &[
    "ADFSSAML",
    "Auth0SAML",
    "AzureSAML",
    "CasSAML",
    "ClassLinkSAML",
    "CloudflareSAML",
    "CyberArkSAML",
    "DuoSAML",
    "GenericSAML",
    "GoogleSAML",
    "JumpCloudSAML",
    "KeycloakSAML",
    "LastPassSAML",
    "MiniOrangeSAML",
    "NetIqSAML",
    "OktaSAML",
    "OneLoginSAML",
    "OracleSAML",
    "PingFederateSAML",
    "PingOneSAML",
    "RipplingSAML",
    "SalesforceSAML",
    "ShibbolethGenericSAML",
    "ShibbolethSAML",
    "SimpleSamlPhpSAML",
    "VMwareSAML",
];

/// The OIDC connection types a connection may be created as.
const OIDC_TYPES: &[&str] = &[
    "AdpOidc",
    "CleverOIDC",
    "EntraIdOIDC",
    "GenericOIDC",
    "GoogleOIDC",
    "LoginGovOidc",
    "OktaOIDC",
];

const TOKEN_AUTH_METHODS: &[&str] = &["client_secret_post", "client_secret_basic", "private_key_jwt"];
const ID_TOKEN_ALGORITHMS: &[&str] = &[
    "ES256", "ES384", "ES512", "EdDSA", "HS256", "HS384", "HS512", "PS256", "PS384", "PS512", "RS256", "RS384", "RS512",
];

/// The list's filters (besides [`ListParams`]).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilters {
    /// Connections of this type (several: comma-joined or repeated).
    pub connection_type: Option<String>,
    /// Connections of the organization that has this domain.
    pub domain: Option<String>,
    /// Connections of this organization.
    pub organization_id: Option<String>,
    /// Part of the connection's name (case-insensitive).
    pub search: Option<String>,
}

#[utoipa::path(get, path = "/connections", tag = "connections",
    operation_id = "list_connections", summary = "List connections",
    params(ListParams, ListFilters),
    responses((status = 200, description = "A page of connections", body = schemas::ConnectionList),
        (status = 422, description = "Invalid parameters", body = schemas::ErrorBody)))]
pub async fn list(State(state): State<AppState>, q: QueryPairs) -> Result<Response, ApiError> {
    let page = id_page(&q, "conn")?;
    let connection_types: Vec<String> = q
        .many("connection_type")
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if let Some(t) = connection_types
        .iter()
        .find(|t| t.len() > 64 || !t.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        return Err(ApiError::invalid(
            "connection_type",
            "invalid_connection_type",
            format!("{t:?} is not a connection type"),
        ));
    }
    let search = q.one("search")?;
    if let Some(s) = &search {
        validate_text("search", s, 256)?;
    }
    let filter = ConnectionFilter {
        organization_id: q.one("organization_id")?,
        connection_types,
        domain: q.one("domain")?,
        search,
    };
    Ok(list_response(queries::connections(&state.pool, &filter, &page).await?))
}

async fn find(state: &AppState, id: &str) -> Result<Value, ApiError> {
    queries::connection(&state.pool, id)
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))
}

#[utoipa::path(get, path = "/connections/{id}", tag = "connections",
    operation_id = "get_connection", summary = "Get a connection",
    params(("id" = String, Path, description = ID)),
    responses((status = 200, description = "The connection", body = schemas::Connection),
        (status = 404, description = "No such connection", body = schemas::ErrorBody)))]
pub async fn get(State(state): State<AppState>, PathParam(id): PathParam) -> Result<Response, ApiError> {
    Ok(object(StatusCode::OK, find(&state, &id).await?))
}

/// A key pair the customer brings: the private key is sealed, the certificate is public.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConnectionKeyPair)]
pub struct KeyPair {
    /// PEM private key (write-only).
    pub(crate) key: String,
    /// PEM X.509 certificate.
    pub(crate) cert: String,
}

/// WorkOS's `oidc_options` (create: `discovery_endpoint` and `client_id` required).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConnectionOidcOptionsInput)]
pub struct OidcInput {
    pub(crate) discovery_endpoint: Option<String>,
    pub(crate) client_id: Option<String>,
    /// Write-only; never returned.
    pub(crate) client_secret: Option<String>,
    pub(crate) redirect_uri: Option<String>,
    pub(crate) pkce: Option<bool>,
    /// `client_secret_post`, `client_secret_basic` or `private_key_jwt`.
    pub(crate) token_authentication_method: Option<String>,
    pub(crate) jwt_signing_key_pair: Option<KeyPair>,
    pub(crate) id_token_signature_algorithm: Option<String>,
    pub(crate) fetch_user_info: Option<bool>,
}

/// WorkOS's `saml_options`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ConnectionSamlOptionsInput)]
pub struct SamlInput {
    pub(crate) idp_metadata_url: Option<String>,
    pub(crate) acs_url: Option<String>,
    pub(crate) sp_entity_id: Option<String>,
    pub(crate) idp_entity_id: Option<String>,
    pub(crate) idp_sso_url: Option<String>,
    pub(crate) idp_signing_certs: Option<Vec<String>>,
    pub(crate) sp_signing_key_pair: Option<KeyPair>,
    pub(crate) sp_encryption_key_pairs: Option<Vec<KeyPair>>,
}

/// A connection as `sso.create_connection` sends it.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = CreateConnection)]
pub struct CreateBody {
    pub(crate) organization_id: String,
    /// Default: the organization's name.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// A connection of the organization with this `external_id` is answered instead of a new one.
    #[serde(default)]
    pub(crate) external_id: Option<String>,
    /// A SAML or OIDC type; inferred from the options when absent.
    #[serde(default)]
    pub(crate) connection_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) attribute_maps: Option<Value>,
    #[serde(default)]
    pub(crate) saml_options: Option<SamlInput>,
    #[serde(default)]
    pub(crate) oidc_options: Option<OidcInput>,
}

/// A change as `sso.update_connection` sends it, plus `state` (keyledger's extension).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = UpdateConnection)]
pub struct UpdateBody {
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// `null` stops tracking one.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub(crate) external_id: Option<Option<String>>,
    /// Immutable: only the current type is accepted.
    #[serde(default)]
    pub(crate) connection_type: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub(crate) attribute_maps: Option<Value>,
    #[serde(default)]
    pub(crate) saml_options: Option<SamlInput>,
    #[serde(default)]
    pub(crate) oidc_options: Option<OidcInput>,
    /// `active` (needs complete options) or `inactive` (deactivates an active connection).
    #[serde(default)]
    pub(crate) state: Option<String>,
}

/// Secrets of a request, by purpose, before sealing.
type Secrets = Vec<(String, SecretText)>;

/// `v` as an http(s) URL with a host, at most 2 KiB (field `field` in the error).
pub(crate) fn web_url(field: &str, v: &str) -> Result<url::Url, ApiError> {
    let bad = || ApiError::invalid(field, "invalid_url", format!("{field} must be an http or https URL"));
    if v.len() > 2048 {
        return Err(bad());
    }
    let u = url::Url::parse(v.trim()).map_err(|_| bad())?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
        return Err(bad());
    }
    Ok(u)
}

/// `v` as a connection URL ([`web_url`]); when keyledger fetches it (`fetched`), no
/// IP literal the SSRF guard refuses.
pub(crate) fn url_field(state: &AppState, field: &str, v: &str, fetched: bool) -> Result<String, ApiError> {
    let u = web_url(field, v)?;
    // keyledger fetches this URL itself: the webhook guard's rules (crate::ssrf) apply.
    if fetched && state.webhook_allow.refuses_endpoint_url(&u) {
        return Err(ApiError::invalid(
            field,
            "url_not_allowed",
            format!("{field} names an address keyledger does not connect to"),
        ));
    }
    Ok(u.to_string())
}

fn text(field: &'static str, v: &str, max: usize) -> Result<String, ApiError> {
    validate_text(field, v, max)?;
    if v.trim().is_empty() {
        return Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("{field} must not be empty"),
        ));
    }
    Ok(v.trim().to_string())
}

fn one_of(field: &'static str, v: &str, allowed: &[&str]) -> Result<String, ApiError> {
    if allowed.contains(&v) {
        Ok(v.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            "invalid_value",
            format!("{field} must be one of {}", allowed.join(", ")),
        ))
    }
}

fn pem(field: &'static str, v: &str, label: &str) -> Result<String, ApiError> {
    let ok = v.len() <= 16_384
        && v.contains("-----BEGIN ")
        && v.contains(label)
        && v.contains("-----END ")
        && !v.chars().any(|c| c.is_control() && c != '\n' && c != '\r');
    if ok {
        Ok(v.to_string())
    } else {
        Err(ApiError::invalid(
            field,
            "invalid_pem",
            format!("{field} must be a PEM {label}"),
        ))
    }
}

fn key_pair(field: &'static str, p: &KeyPair) -> Result<(SecretText, String), ApiError> {
    let key = pem(field, &p.key, "PRIVATE KEY")?;
    let cert = pem(field, &p.cert, "CERTIFICATE")?;
    Ok((SecretText::new(key), cert))
}

/// Applies `input` onto `base` (a create starts from the default), collecting its secrets.
fn merge_oidc(
    state: &AppState,
    mut base: OidcOptions,
    input: &OidcInput,
    secrets: &mut Secrets,
) -> Result<OidcOptions, ApiError> {
    if let Some(v) = &input.discovery_endpoint {
        base.discovery_endpoint = Some(url_field(state, "oidc_options.discovery_endpoint", v, true)?);
    }
    if let Some(v) = &input.client_id {
        base.client_id = Some(text("oidc_options.client_id", v, 255)?);
    }
    if let Some(v) = &input.redirect_uri {
        base.redirect_uri = Some(url_field(state, "oidc_options.redirect_uri", v, false)?);
    }
    if let Some(v) = input.pkce {
        base.pkce = Some(v);
    }
    if let Some(v) = &input.token_authentication_method {
        base.token_authentication_method = Some(one_of(
            "oidc_options.token_authentication_method",
            v,
            TOKEN_AUTH_METHODS,
        )?);
    }
    if let Some(v) = &input.id_token_signature_algorithm {
        base.id_token_signature_algorithm = Some(one_of(
            "oidc_options.id_token_signature_algorithm",
            v,
            ID_TOKEN_ALGORITHMS,
        )?);
    }
    if let Some(v) = input.fetch_user_info {
        base.fetch_user_info = Some(v);
    }
    if let Some(s) = &input.client_secret {
        if base.uses_private_key_jwt() {
            return Err(ApiError::invalid(
                "oidc_options.client_secret",
                "client_secret_not_allowed",
                "client_secret is rejected with private_key_jwt",
            ));
        }
        validate_text("oidc_options.client_secret", s, 1024)?;
        if s.is_empty() {
            return Err(ApiError::invalid(
                "oidc_options.client_secret",
                "invalid_value",
                "oidc_options.client_secret must not be empty",
            ));
        }
        secrets.push((CLIENT_SECRET.to_string(), SecretText::new(s.clone())));
    }
    if let Some(p) = &input.jwt_signing_key_pair {
        if !base.uses_private_key_jwt() {
            return Err(ApiError::invalid(
                "oidc_options.jwt_signing_key_pair",
                "key_pair_not_allowed",
                "jwt_signing_key_pair is only accepted with token_authentication_method private_key_jwt",
            ));
        }
        let (key, cert) = key_pair("oidc_options.jwt_signing_key_pair", p)?;
        base.jwt_signing_cert = Some(cert);
        secrets.push((JWT_SIGNING_KEY.to_string(), key));
    }
    Ok(base)
}

fn merge_saml(
    state: &AppState,
    mut base: SamlOptions,
    input: &SamlInput,
    secrets: &mut Secrets,
) -> Result<SamlOptions, ApiError> {
    // The IdP is described one way: by its metadata URL, or by its entity ID, sign-on URL and
    // certificates. Both in one request is refused; one given on a connection described the
    // other way replaces that description.
    let manual = input.idp_entity_id.is_some() || input.idp_sso_url.is_some() || input.idp_signing_certs.is_some();
    if input.idp_metadata_url.is_some() && manual {
        return Err(mutually_exclusive());
    }
    if input.idp_metadata_url.is_some() {
        base.idp_entity_id = None;
        base.idp_sso_url = None;
        base.idp_signing_certs.clear();
    } else if manual {
        base.idp_metadata_url = None;
    }
    if let Some(v) = &input.idp_metadata_url {
        base.idp_metadata_url = Some(url_field(state, "saml_options.idp_metadata_url", v, true)?);
    }
    if let Some(v) = &input.acs_url {
        base.acs_url = Some(url_field(state, "saml_options.acs_url", v, false)?);
    }
    if let Some(v) = &input.sp_entity_id {
        base.sp_entity_id = Some(text("saml_options.sp_entity_id", v, 1024)?);
    }
    if let Some(v) = &input.idp_entity_id {
        base.idp_entity_id = Some(text("saml_options.idp_entity_id", v, 1024)?);
    }
    if let Some(v) = &input.idp_sso_url {
        base.idp_sso_url = Some(url_field(state, "saml_options.idp_sso_url", v, false)?);
    }
    if let Some(certs) = &input.idp_signing_certs {
        if certs.len() > 10 {
            return Err(ApiError::invalid(
                "saml_options.idp_signing_certs",
                "too_many",
                "at most 10 IdP signing certificates",
            ));
        }
        base.idp_signing_certs = certs
            .iter()
            .map(|c| pem("saml_options.idp_signing_certs", c, "CERTIFICATE"))
            .collect::<Result<_, _>>()?;
    }
    if let Some(p) = &input.sp_signing_key_pair {
        let (key, cert) = key_pair("saml_options.sp_signing_key_pair", p)?;
        base.sp_signing_cert = Some(cert);
        secrets.push(("sp_signing_key".to_string(), key));
    }
    if let Some(pairs) = &input.sp_encryption_key_pairs {
        if pairs.len() > 5 {
            return Err(ApiError::invalid(
                "saml_options.sp_encryption_key_pairs",
                "too_many",
                "at most 5 encryption key pairs",
            ));
        }
        base.sp_encryption_certs.clear();
        for (i, p) in pairs.iter().enumerate() {
            let (key, cert) = key_pair("saml_options.sp_encryption_key_pairs", p)?;
            base.sp_encryption_certs.push(cert);
            secrets.push((format!("sp_encryption_key:{i}"), key));
        }
    }
    let manual = base.idp_sso_url.is_some() || base.idp_entity_id.is_some() || !base.idp_signing_certs.is_empty();
    if base.idp_metadata_url.is_some() && manual {
        return Err(mutually_exclusive());
    }
    Ok(base)
}

fn mutually_exclusive() -> ApiError {
    ApiError::invalid(
        "saml_options.idp_metadata_url",
        "mutually_exclusive",
        "idp_metadata_url cannot be combined with idp_entity_id, idp_sso_url or idp_signing_certs",
    )
}

/// `attribute_maps`: an object of `standard_attributes` and `custom_attributes`, each an object
/// of strings.
fn attribute_maps(v: &Value) -> Result<Value, ApiError> {
    let bad = || {
        ApiError::invalid(
            "attribute_maps",
            "invalid_attribute_maps",
            "attribute_maps must be {\"standard_attributes\": {...}, \"custom_attributes\": {...}} of strings",
        )
    };
    let o = v.as_object().ok_or_else(bad)?;
    for (k, inner) in o {
        if k != "standard_attributes" && k != "custom_attributes" {
            return Err(bad());
        }
        let m = inner.as_object().ok_or_else(bad)?;
        if m.len() > 100 {
            return Err(bad());
        }
        for (name, value) in m {
            let s = value.as_str().ok_or_else(bad)?;
            if name.len() > 128 || s.len() > 256 {
                return Err(bad());
            }
        }
    }
    Ok(v.clone())
}

/// The type of a new connection: given (a SAML or OIDC type matching the options) or inferred.
fn connection_type(given: Option<&str>, oidc: bool, saml: bool) -> Result<String, ApiError> {
    let field = "connection_type";
    match given {
        None if oidc => Ok("GenericOIDC".into()),
        None if saml => Ok("GenericSAML".into()),
        None => Err(ApiError::invalid(
            field,
            "connection_type_required",
            "give saml_options or oidc_options (or connection_type for a draft)",
        )),
        Some(t) if SAML_TYPES.contains(&t) && !oidc => Ok(t.to_string()),
        Some(t) if OIDC_TYPES.contains(&t) && !saml => Ok(t.to_string()),
        Some(t) if SAML_TYPES.contains(&t) || OIDC_TYPES.contains(&t) => Err(ApiError::invalid(
            field,
            "connection_type_mismatch",
            format!("{t} does not match the options given"),
        )),
        Some(_) => Err(ApiError::invalid(
            field,
            "invalid_connection_type",
            "only SAML and OIDC connection types may be created",
        )),
    }
}

/// The checked contents of a create.
struct NewConnection {
    command: CreateConnection,
    secrets: Secrets,
}

fn parse_create(state: &AppState, b: &CreateBody, org_name: &str) -> Result<NewConnection, ApiError> {
    if b.oidc_options.is_some() && b.saml_options.is_some() {
        return Err(ApiError::invalid(
            "oidc_options",
            "mutually_exclusive",
            "give saml_options or oidc_options, not both",
        ));
    }
    let connection_type = connection_type(
        b.connection_type.as_deref(),
        b.oidc_options.is_some(),
        b.saml_options.is_some(),
    )?;
    let name = match &b.name {
        Some(n) => text("name", n, 255)?,
        None => org_name.to_string(),
    };
    let external_id = b
        .external_id
        .as_deref()
        .map(|e| text("external_id", e, 128))
        .transpose()?;
    let mut secrets = Secrets::new();
    let oidc = match &b.oidc_options {
        Some(o) => {
            for (field, v) in [
                ("oidc_options.discovery_endpoint", &o.discovery_endpoint),
                ("oidc_options.client_id", &o.client_id),
            ] {
                if v.is_none() {
                    return Err(ApiError::invalid(field, "required", format!("{field} is required")));
                }
            }
            Some(merge_oidc(state, OidcOptions::default(), o, &mut secrets)?)
        }
        None => None,
    };
    let saml = match &b.saml_options {
        Some(s) => Some(merge_saml(state, SamlOptions::default(), s, &mut secrets)?),
        None => None,
    };
    let attribute_maps = b.attribute_maps.as_ref().map(attribute_maps).transpose()?;
    Ok(NewConnection {
        command: CreateConnection {
            organization_id: b.organization_id.clone(),
            connection_type,
            name,
            external_id,
            oidc,
            saml,
            attribute_maps,
            secrets: Default::default(),
            at: Utc::now(),
        },
        secrets,
    })
}

#[utoipa::path(post, path = "/connections", tag = "connections",
    operation_id = "create_connection", summary = "Create a connection",
    description = "keyledger's extension (WorkOS creates connections in its dashboard), as the SDKs' \
        `sso.create_connection` sends it. Complete options make it `active` at once (`connection.activated`); \
        otherwise it is a `draft`. Secrets are write-only.",
    request_body = CreateBody,
    responses((status = 201, description = "The new connection", body = schemas::Connection),
        (status = 200, description = "The organization's connection with this external_id", body = schemas::Connection),
        (status = 404, description = "No such organization", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: RequestContext,
    AppJson(b): AppJson<CreateBody>,
) -> Result<Response, ApiError> {
    let (status, doc) = create_connection(&state, &ctx, &b).await?;
    Ok(object(status, doc))
}

/// Creates a connection (the one path for the JSON API and the Admin Portal's forms): 201 and
/// the new connection, or 200 and the organization's connection with the body's `external_id`.
pub(crate) async fn create_connection(
    state: &AppState,
    ctx: &RequestContext,
    b: &CreateBody,
) -> Result<(StatusCode, Value), ApiError> {
    let state = state.clone();
    if b.organization_id.len() > 128 {
        return Err(ApiError::not_found("organization"));
    }
    let org = queries::organization(&state.pool, &b.organization_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    let org_name = org.get("name").and_then(Value::as_str).unwrap_or_default();
    let mut new = parse_create(&state, b, org_name)?;
    if let Some(x) = &new.command.external_id {
        if let Some(existing) = queries::connection_by_external_id(&state.pool, &b.organization_id, x).await? {
            return Ok((StatusCode::OK, find(&state, &existing).await?));
        }
    }
    let id = new_id("conn");
    let refs = connections::seal_all(&state, &id, std::mem::take(&mut new.secrets)).await?;
    new.command.secrets = refs.clone();
    let done = state
        .execute::<Connection>(
            ctx,
            &id,
            ConnectionCommand::Create(new.command),
            SideRows::default(),
            Mode::New,
        )
        .await;
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            connections::discard(&state, &refs).await;
            return Err(command_error(e, connection_error));
        }
    };
    let doc = match queries::connection(&state.pool, &id).await {
        Ok(Some(doc)) => doc,
        // Behind or unavailable: the write landed; answer from its own events.
        _ => {
            let events: Vec<AnyEvent> = done.events.into_iter().map(AnyEvent::Connection).collect();
            created_new(&id, &events, Kind::Connection, &id)?
        }
    };
    Ok((StatusCode::CREATED, doc))
}

fn target_state(s: &str) -> Result<ConnectionState, ApiError> {
    match s {
        "active" => Ok(ConnectionState::Active),
        "inactive" => Ok(ConnectionState::Inactive),
        _ => Err(ApiError::invalid(
            "state",
            "invalid_state",
            "state must be active or inactive",
        )),
    }
}

#[utoipa::path(patch, path = "/connections/{id}", tag = "connections",
    operation_id = "update_connection", summary = "Update a connection",
    description = "As the SDKs' `sso.update_connection` sends it: only the given fields change; options are \
        merged field by field. keyledger's extension `state` (`active`, `inactive`) activates or deactivates it.",
    params(("id" = String, Path, description = ID)),
    request_body = UpdateBody,
    responses((status = 200, description = "The connection", body = schemas::Connection),
        (status = 404, description = "No such connection", body = schemas::ErrorBody),
        (status = 409, description = "Changed concurrently too often", body = schemas::ErrorBody),
        (status = 422, description = "Invalid request", body = schemas::ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
    AppJson(b): AppJson<UpdateBody>,
) -> Result<Response, ApiError> {
    Ok(object(StatusCode::OK, update_connection(&state, &ctx, &id, &b).await?))
}

/// Changes connection `id` (the one path for the JSON API and the Admin Portal's forms) and
/// answers it as it now is.
pub(crate) async fn update_connection(
    state: &AppState,
    ctx: &RequestContext,
    id: &str,
    b: &UpdateBody,
) -> Result<Value, ApiError> {
    let (state, id) = (state.clone(), id.to_string());
    if b.oidc_options.is_some() && b.saml_options.is_some() {
        return Err(ApiError::invalid(
            "oidc_options",
            "mutually_exclusive",
            "give saml_options or oidc_options, not both",
        ));
    }
    let name = b.name.as_deref().map(|n| text("name", n, 255)).transpose()?;
    let external_id = match &b.external_id {
        Some(Some(e)) => Some(Some(text("external_id", e, 128)?)),
        Some(None) => Some(None),
        None => None,
    };
    let attribute_maps = b.attribute_maps.as_ref().map(attribute_maps).transpose()?;
    let target = b.state.as_deref().map(target_state).transpose()?;
    let meta = ctx.metadata();
    let mut refs: Option<SecretRefs> = None;
    let mut landed = None;
    // Options merge onto the state they were read from, and the change is appended right after
    // that state (its sequence), else read, merged and decided again: no concurrent change of
    // another option is lost.
    for _ in 0..MAX_ATTEMPTS {
        let (current, sequence) = match state.bus.load::<Connection>(&id).await {
            Ok(loaded) => loaded,
            Err(e) => return Err(discarding(&state, refs, command_error(e, connection_error)).await),
        };
        if !current.exists() {
            return Err(discarding(&state, refs, ApiError::not_found("connection")).await);
        }
        let mut secrets = Secrets::new();
        let (oidc, saml) = match merge_update(&state, b, &current, &mut secrets) {
            Ok(m) => m,
            Err(e) => return Err(discarding(&state, refs, e).await),
        };
        // Sealed once; a retry names the same rows.
        let sealed = match refs.take() {
            Some(r) => r,
            None => connections::seal_all(&state, &id, secrets).await?,
        };
        let command = ConnectionCommand::Update(UpdateConnection {
            name: name.clone(),
            external_id: external_id.clone(),
            connection_type: b.connection_type.clone(),
            oidc,
            saml,
            attribute_maps: attribute_maps.clone(),
            secrets: sealed.clone(),
            state: target,
            at: Utc::now(),
        });
        let decided = match state.bus.decide::<Connection>(&id, command, &meta, Mode::Once).await {
            Ok(d) => d,
            Err(e) => return Err(discarding(&state, Some(sealed), command_error(e, connection_error)).await),
        };
        if decided.new_events.first().is_some_and(|e| e.sequence != sequence + 1) {
            // Changed between the read and the decision: merge again.
            refs = Some(sealed);
            continue;
        }
        if decided.new_events.is_empty() {
            landed = Some((current.secrets, sealed));
            break;
        }
        let side = SideRows {
            idempotency: ctx.idempotency.clone(),
            ..Default::default()
        };
        match state.bus.store().append(decided.new_events, side).await {
            Ok(position) => {
                state.settle(&[Connection::TYPE], position).await;
                landed = Some((current.secrets, sealed));
                break;
            }
            Err(AppendError::Conflict) => refs = Some(sealed),
            Err(e) => {
                let e = command_error(append_error(e), connection_error);
                return Err(discarding(&state, Some(sealed), e).await);
            }
        }
    }
    let Some((before, replaced)) = landed else {
        let e = ApiError::conflict("the connection was changed concurrently; retry the request");
        return Err(discarding(&state, refs, e).await);
    };
    // Rows the connection no longer names: the secrets this change replaced.
    connections::erase_replaced(&state, &id, &before, &replaced).await;
    find(&state, &id).await
}

/// Removes the sealed rows of a change that did not land, and answers its error.
async fn discarding(state: &AppState, refs: Option<SecretRefs>, e: ApiError) -> ApiError {
    if let Some(r) = refs {
        connections::discard(state, &r).await;
    }
    e
}

/// The whole new options of a change: `b`'s merged onto `current`'s, its secrets collected.
fn merge_update(
    state: &AppState,
    b: &UpdateBody,
    current: &Connection,
    secrets: &mut Secrets,
) -> Result<(Option<OidcOptions>, Option<SamlOptions>), ApiError> {
    let oidc = match &b.oidc_options {
        Some(_) if current.saml.is_some() => {
            return Err(ApiError::invalid(
                "oidc_options",
                "protocol_mismatch",
                "this is a SAML connection",
            ))
        }
        Some(o) => Some(merge_oidc(state, current.oidc.clone().unwrap_or_default(), o, secrets)?),
        None => None,
    };
    let saml = match &b.saml_options {
        Some(_) if current.oidc.is_some() => {
            return Err(ApiError::invalid(
                "saml_options",
                "protocol_mismatch",
                "this is an OIDC connection",
            ))
        }
        Some(s) => Some(merge_saml(state, current.saml.clone().unwrap_or_default(), s, secrets)?),
        None => None,
    };
    Ok((oidc, saml))
}

#[utoipa::path(delete, path = "/connections/{id}", tag = "connections",
    operation_id = "delete_connection", summary = "Delete a connection",
    description = "Publishes `connection.deleted`; its sealed secrets are erased.",
    params(("id" = String, Path, description = ID)),
    responses((status = 204, description = "Deleted"),
        (status = 404, description = "No such connection", body = schemas::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: RequestContext,
    PathParam(id): PathParam,
) -> Result<Response, ApiError> {
    connections::delete(&state, &ctx, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
