//! `/sso/authorize`, `/sso/oidc/callback`, `/sso/token`, `/sso/profile`: the OIDC sign-in of SSO
//! connections (`crate::sso`), as the SDKs' `get_authorization_url`, `get_profile_and_token`
//! and `get_profile` use it. The browser endpoints answer an error page, never a redirect, until
//! the application's `redirect_uri` is known to be registered.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::error::ApiError;
use crate::extract::QueryPairs;
use crate::schemas;
use crate::sso::{self, FlowError, Selector};
use crate::state::{AppState, PublicContext};

/// The page a browser sees when a sign-in cannot go on (status 400, or 500 for our failures):
/// the hosted pages' error page (layout, security headers), naming the refusal's code.
fn error_page(state: &AppState, e: &FlowError) -> Response {
    let status = if matches!(e.code, "internal_error" | "saml_unavailable") {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::BAD_REQUEST
    };
    crate::hosted::respond::error_page(state, status, "Sign-in error", &format!("{} ({})", e.message, e.code))
}

/// `url` with the pairs added to its query.
fn with_query(url: &str, pairs: &[(&str, Option<&str>)]) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            {
                let mut q = u.query_pairs_mut();
                for (k, v) in pairs {
                    if let Some(v) = v {
                        q.append_pair(k, v);
                    }
                }
            }
            u.to_string()
        }
        Err(_) => url.to_string(),
    }
}

/// `GET /sso/authorize`'s parameters (as `sso.get_authorization_url` sends them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuthorizeParams {
    /// This environment's client id.
    pub client_id: String,
    /// Where the browser returns with `code` and `state`; must be a registered redirect URI.
    pub redirect_uri: String,
    /// `code`.
    pub response_type: String,
    /// Returned to the application unchanged.
    pub state: Option<String>,
    /// A connection id (`conn_...`).
    pub connection: Option<String>,
    /// An organization id: its (first) active connection.
    pub organization: Option<String>,
    /// A domain of an organization with an active connection (deprecated by WorkOS).
    pub domain: Option<String>,
    /// OAuth providers (`GoogleOAuth`, ...) are not supported.
    pub provider: Option<String>,
    /// Passed to the identity provider.
    pub login_hint: Option<String>,
    /// Accepted and ignored.
    pub domain_hint: Option<String>,
}

async fn authorize_flow(state: &AppState, q: &QueryPairs) -> Result<String, FlowError> {
    let one = |k: &str| q.one(k).map_err(FlowError::from);
    let redirect_uri =
        one("redirect_uri")?.ok_or_else(|| FlowError::new("invalid_redirect_uri", "redirect_uri is required"))?;
    if !sso::redirect_uri_allowed(state, &redirect_uri).await? {
        return Err(FlowError::new(
            "invalid_redirect_uri",
            "redirect_uri is not a registered redirect URI",
        ));
    }
    if one("client_id")?.as_deref() != Some(state.tokens.client_id()) {
        return Err(FlowError::new(
            "invalid_client_id",
            "client_id is not this environment's",
        ));
    }
    if one("response_type")?.as_deref() != Some("code") {
        return Err(FlowError::new("invalid_response_type", "response_type must be code"));
    }
    let selector = match (
        one("connection")?,
        one("organization")?,
        one("domain")?,
        one("provider")?,
    ) {
        (Some(c), _, _, _) => Selector::Connection(c),
        (None, Some(o), _, _) => Selector::Organization(o),
        (None, None, Some(d), _) => Selector::Domain(d),
        (None, None, None, Some(_)) => {
            return Err(FlowError::new(
                "provider_unsupported",
                "OAuth providers are not supported",
            ))
        }
        _ => {
            return Err(FlowError::new(
                "connection_required",
                "one of connection, organization, domain or provider is required",
            ))
        }
    };
    let conn = sso::select(state, &selector).await?;
    let app_state = one("state")?;
    let login_hint = one("login_hint")?;
    if conn.saml.is_some() && conn.oidc.is_none() {
        return crate::sso_saml::start(state, &conn, &redirect_uri, app_state.as_deref(), None).await;
    }
    sso::start(
        state,
        &conn,
        &redirect_uri,
        app_state.as_deref(),
        login_hint.as_deref(),
        None,
    )
    .await
}

/// Where a finished SSO sign-in goes: the hosted sign-in that started it (a user, a session, its
/// authorization code), or the application's redirect_uri with a code for `POST /sso/token`.
async fn complete(state: &AppState, ctx: PublicContext, pending: &sso::Pending, profile: &Value) -> Response {
    // PostgreSQL stores no NUL character, and no claim needs one: the identity provider's
    // answer is refused rather than failing at the insert.
    if profile.to_string().contains("\\u0000") {
        return error_page(
            state,
            &FlowError::new(
                "profile_invalid",
                "the identity provider's answer holds a NUL character",
            ),
        );
    }
    match crate::hosted::sso::authkit_flow(state, &pending.sealed) {
        Some(Some(flow)) => return crate::hosted::sso::finish_sso(state, &ctx.anonymous(), flow, profile).await,
        Some(None) => {
            return error_page(
                state,
                &FlowError::new(
                    "invalid_state",
                    "the hosted sign-in that started this sign-in has expired",
                ),
            )
        }
        None => {}
    }
    match sso::issue_code(state, &pending.redirect_uri, profile).await {
        Ok(code) => Redirect::to(&with_query(
            &pending.redirect_uri,
            &[("code", Some(&code)), ("state", pending.app_state.as_deref())],
        ))
        .into_response(),
        Err(e) => error_page(state, &e),
    }
}

#[utoipa::path(get, path = "/sso/authorize", tag = "sso", operation_id = "sso_authorize",
    summary = "Start an SSO sign-in",
    description = "No API key (the user's browser). Redirects to the connection's identity provider; \
        an error page (never a redirect) for an unregistered redirect_uri or another problem.",
    params(AuthorizeParams),
    responses((status = 302, description = "To the identity provider"),
        (status = 400, description = "An error page", content_type = "text/html", body = String)))]
pub async fn authorize(State(state): State<AppState>, q: QueryPairs) -> Response {
    match authorize_flow(&state, &q).await {
        Ok(url) => Redirect::to(&url).into_response(),
        Err(e) => error_page(&state, &e),
    }
}

#[utoipa::path(get, path = "/sso/oidc/callback", tag = "sso", operation_id = "sso_oidc_callback",
    summary = "The identity providers' OIDC callback",
    description = "No API key. `state` names the sign-in (single use); the browser goes on to the \
        application's redirect_uri with a keyledger `code` and its `state`.",
    params(("code" = Option<String>, Query, description = "The identity provider's code"),
        ("state" = String, Query, description = "keyledger's state"),
        ("error" = Option<String>, Query, description = "The identity provider's error")),
    responses((status = 302, description = "To the application's redirect_uri"),
        (status = 400, description = "An error page: unknown, expired or replayed state", content_type = "text/html", body = String)))]
pub async fn oidc_callback(State(state): State<AppState>, ctx: PublicContext, q: QueryPairs) -> Response {
    let token = match q.one("state") {
        Ok(Some(t)) => t,
        _ => return error_page(&state, &FlowError::new("invalid_state", "the sign-in state is missing")),
    };
    let pending = match sso::take_state(&state, &token).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return error_page(
                &state,
                &FlowError::new("invalid_state", "the sign-in is unknown, expired or already finished"),
            )
        }
        Err(e) => return error_page(&state, &e),
    };
    let back = |pairs: &[(&str, Option<&str>)]| {
        let mut all = pairs.to_vec();
        all.push(("state", pending.app_state.as_deref()));
        Redirect::to(&with_query(&pending.redirect_uri, &all)).into_response()
    };
    if let Ok(Some(err)) = q.one("error") {
        return back(&[
            ("error", Some(&err)),
            ("error_description", Some("the identity provider refused the sign-in")),
        ]);
    }
    let code = match q.one("code") {
        Ok(Some(c)) => c,
        _ => {
            return error_page(
                &state,
                &FlowError::new("invalid_code", "the identity provider sent no code"),
            )
        }
    };
    let profile = match sso::finish(&state, &pending, &code).await {
        Ok(p) => p,
        Err(e) => return error_page(&state, &e),
    };
    complete(&state, ctx, &pending, &profile).await
}

#[utoipa::path(post, path = "/sso/saml/acs/{connection_id}", tag = "sso", operation_id = "sso_saml_acs",
    summary = "The SAML assertion consumer service of a connection",
    description = "No API key: the identity provider's HTML form posts `SAMLResponse` and `RelayState` \
        (the single-use state of the sign-in). The browser goes on to the application's redirect_uri \
        with a keyledger `code`, or to the hosted sign-in's.",
    params(("connection_id" = String, Path, description = "The connection")),
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "SAMLResponse, RelayState"),
    responses((status = 302, description = "To the application's redirect_uri"),
        (status = 303, description = "To the application's redirect_uri (hosted sign-in)"),
        (status = 400, description = "An error page: a refused response, an unknown or replayed state", content_type = "text/html", body = String),
        (status = 500, description = "An error page: the server cannot check SAML signatures", content_type = "text/html", body = String)))]
pub async fn saml_acs(
    State(state): State<AppState>,
    ctx: PublicContext,
    axum::extract::Path(connection_id): axum::extract::Path<String>,
    body: Bytes,
) -> Response {
    let mut saml_response = None;
    let mut relay_state = None;
    for (k, v) in crate::extract::urlencoded(&body).unwrap_or_default() {
        match k.as_str() {
            "SAMLResponse" => saml_response = Some(v),
            "RelayState" => relay_state = Some(v),
            _ => {}
        }
    }
    let (Some(saml_response), Some(relay_state)) = (saml_response, relay_state) else {
        return error_page(
            &state,
            &FlowError::new(
                "invalid_request",
                "SAMLResponse and RelayState are required (sign-ins the identity provider starts are not accepted)",
            ),
        );
    };
    let pending = match sso::take_state(&state, &relay_state).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return error_page(
                &state,
                &FlowError::new("invalid_state", "the sign-in is unknown, expired or already finished"),
            )
        }
        Err(e) => return error_page(&state, &e),
    };
    let conn = match sso::select(&state, &sso::Selector::Connection(connection_id)).await {
        Ok(c) => c,
        Err(e) => return error_page(&state, &e),
    };
    match crate::sso_saml::consume(&state, &conn, &pending, &saml_response).await {
        Ok(profile) => complete(&state, ctx, &pending, &profile).await,
        Err(e) => {
            tracing::info!(code = e.code, connection_id = conn.id, "a SAML response was refused");
            error_page(&state, &e)
        }
    }
}

#[utoipa::path(get, path = "/sso/saml/metadata/{connection_id}", tag = "sso", operation_id = "sso_saml_metadata",
    summary = "keyledger's SAML service provider metadata for a connection",
    description = "No API key: what the customer's identity provider is given (entity id, ACS URL).",
    params(("connection_id" = String, Path, description = "A SAML connection")),
    responses((status = 200, description = "SAML 2.0 metadata", content_type = "application/samlmetadata+xml", body = String),
        (status = 404, description = "No such SAML connection", body = schemas::ErrorBody)))]
pub async fn saml_metadata(
    State(state): State<AppState>,
    axum::extract::Path(connection_id): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let conn = crate::connections::for_sign_in(&state, &connection_id).await?;
    if conn.saml.is_none() {
        return Err(ApiError::not_found("connection"));
    }
    let sp = crate::sso_saml::service_provider(&state, &conn.id, conn.saml.as_ref());
    Ok((
        [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
        crate::saml::sp_metadata(&sp),
    )
        .into_response())
}

/// `POST /sso/token` (as `sso.get_profile_and_token` sends it; JSON or a form).
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = SsoTokenRequest)]
pub struct TokenBody {
    grant_type: Option<String>,
    client_id: Option<String>,
    /// An API key of this environment.
    client_secret: Option<String>,
    code: Option<String>,
}

#[utoipa::path(post, path = "/sso/token", tag = "sso", operation_id = "sso_token",
    summary = "Exchange an SSO code for a profile and an access token",
    description = "No API key header: the body's client_id and client_secret (an API key) authenticate.",
    request_body = TokenBody,
    responses((status = 200, description = "The profile and an access token", body = schemas::SsoTokenResponse),
        (status = 400, description = "Unknown, expired or used code; wrong grant type", body = schemas::ErrorBody),
        (status = 401, description = "Wrong client id or secret", body = schemas::ErrorBody)))]
pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(crate::extract::is_json_media_type);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "invalid_body",
            "a body is required: grant_type, client_id, client_secret, code",
        ));
    }
    let b: TokenBody = if json_body {
        serde_json::from_slice(&body)
            .map_err(|_| ApiError::bad_request("invalid_body", "the body is not the expected JSON object"))?
    } else {
        serde_urlencoded_like(&body)
    };
    let invalid_client = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client ID or client secret.",
        )
    };
    if b.client_id.as_deref() != Some(state.tokens.client_id()) {
        return Err(invalid_client());
    }
    let secret = b.client_secret.as_deref().ok_or_else(invalid_client)?;
    if crate::auth::actor_for_key(&state, secret).await?.is_none() {
        return Err(invalid_client());
    }
    if b.grant_type.as_deref() != Some("authorization_code") {
        return Err(ApiError::bad_request(
            "unsupported_grant_type",
            "grant_type must be authorization_code",
        ));
    }
    let code = b.code.as_deref().unwrap_or_default();
    let (profile, access_token) = sso::redeem_code(&state, code)
        .await?
        .ok_or_else(|| ApiError::bad_request("invalid_grant", "The code is invalid, expired or already used."))?;
    Ok(Json(json!({
        "token_type": "Bearer",
        "access_token": access_token,
        "expires_in": sso::ACCESS_TOKEN_TTL_SECONDS,
        "profile": profile,
    }))
    .into_response())
}

fn serde_urlencoded_like(body: &[u8]) -> TokenBody {
    let mut b = TokenBody {
        grant_type: None,
        client_id: None,
        client_secret: None,
        code: None,
    };
    for (k, v) in crate::extract::urlencoded(body).unwrap_or_default() {
        let v = Some(v);
        match k.as_str() {
            "grant_type" => b.grant_type = v,
            "client_id" => b.client_id = v,
            "client_secret" => b.client_secret = v,
            "code" => b.code = v,
            _ => {}
        }
    }
    b
}

#[utoipa::path(get, path = "/sso/profile", tag = "sso", operation_id = "sso_profile",
    summary = "The profile of an SSO access token",
    description = "`Authorization: Bearer <access_token of POST /sso/token>` (not an API key).",
    responses((status = 200, description = "The profile", body = schemas::SsoProfile),
        (status = 401, description = "Missing, unknown or expired access token", body = schemas::ErrorBody)))]
pub async fn profile(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "The access token is invalid or expired.",
        )
    };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer_token)
        .ok_or_else(invalid)?;
    let profile = sso::profile_of(&state, token).await?.ok_or_else(invalid)?;
    Ok(Json(profile).into_response())
}
