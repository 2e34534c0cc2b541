//! The Admin Portal (issue 10): `POST /portal/generate_link` (API key) hands out a one-time
//! link; `GET /portal/launch` turns it into a sealed session cookie naming one organization and
//! one intent; the pages under `/portal` let an IT admin verify domains, set up SSO connections
//! or read the audit trail of that organization. The organization is only ever taken from the
//! session cookie, never from a URL or a form; every form carries the session's CSRF token; the
//! pages share the hosted sign-in's layout, stylesheet and security headers, and the same code
//! paths as the JSON API (`routes::organization_domains`, `routes::connections`).

pub mod link;
mod pages;
pub mod session;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keyledger_projections::audit::{self, TrailFilter, TrailOutcome};
use keyledger_projections::queries::{self, ConnectionFilter, Order, Page};
use maud::Markup;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::link::NotOpened;
use self::pages::{Frame, SpDetails};
use self::session::{Intent, PortalSession};
use crate::connections::fetch_idp_metadata;
use crate::error::ApiError;
use crate::hosted::forms::{field, form};
use crate::hosted::pages::FieldError;
use crate::hosted::respond::{secure_cookies, secured};
use crate::routes::connections::{
    create_connection, update_connection, url_field, CreateBody, OidcInput, SamlInput, UpdateBody,
};
use crate::routes::organization_domains::{add_domain, verify_domain};
use crate::state::{AppState, PublicContext, RequestContext};

/// Where the portal's pages live (all under the session cookie's path).
pub mod paths {
    pub const GENERATE_LINK: &str = "/portal/generate_link";
    pub const LAUNCH: &str = "/portal/launch";
    pub const DOMAINS: &str = "/portal/domains";
    pub const DOMAINS_VERIFY: &str = "/portal/domains/verify";
    pub const SSO: &str = "/portal/sso";
    pub const SSO_OIDC: &str = "/portal/sso/oidc";
    pub const SSO_SAML: &str = "/portal/sso/saml";
    pub const CONNECTIONS: &str = "/portal/sso/connections";
    pub const AUDIT_LOGS: &str = "/portal/audit_logs";
}

/// The portal's pages (served without an API key; `generate_link` is in `routes::protected`).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(launch))
        .routes(routes!(domains_page, domains_add))
        .routes(routes!(domains_verify))
        .routes(routes!(sso_page))
        .routes(routes!(sso_oidc))
        .routes(routes!(sso_saml))
        .routes(routes!(connection_page))
        .routes(routes!(connection_saml))
        .routes(routes!(connection_state))
        .routes(routes!(audit_logs_page))
        .routes(routes!(test_result_page))
}

/// Where a test sign-in of the portal comes back: a portal page, always an allowed redirect URI
/// of `/sso/authorize` (`crate::sso::redirect_uri_allowed`).
pub fn test_result_url(state: &AppState) -> String {
    format!("{}{TEST_RESULT_PATH}", state.public_base)
}

const TEST_RESULT_PATH: &str = "/portal/sso/test_result";

/// The sign-in link that tests connection `connection_id` (`GET /sso/authorize?connection=…`),
/// coming back to [`test_result_page`].
pub fn portal_test_sign_in_url(state: &AppState, connection_id: &str) -> Option<String> {
    let mut u = url::Url::parse(&format!("{}/sso/authorize", state.public_base)).ok()?;
    u.query_pairs_mut()
        .append_pair("connection", connection_id)
        .append_pair("client_id", state.tokens.client_id())
        .append_pair("redirect_uri", &test_result_url(state))
        .append_pair("response_type", "code")
        .append_pair("state", "portal-test");
    Some(u.to_string())
}

#[utoipa::path(get, path = "/portal/sso/test_result", tag = "portal", operation_id = "portal_sso_test_result",
    summary = "Admin Portal: the profile a test sign-in of a connection produced (HTML)",
    params(("code" = Option<String>, Query, description = "The SSO code of the test sign-in"),
        ("error" = Option<String>, Query, description = "The identity provider's error")),
    responses((status = 200, description = "The page"), (status = 400, description = "No, a spent or a foreign code"),
        (status = 403, description = "No portal session for SSO")))]
pub async fn test_result_page(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let s = match session_for(&state, &headers, Intent::Sso) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    let q = raw
        .as_deref()
        .map(|q| form(&Bytes::copy_from_slice(q.as_bytes())))
        .unwrap_or_default();
    let failed = |m: &str| error_page(&state, StatusCode::BAD_REQUEST, "Test sign-in failed", m);
    if let Some(e) = q.get("error") {
        return failed(&format!("The identity provider answered: {e}"));
    }
    let Some(code) = q.get("code") else {
        return failed("No sign-in came back.");
    };
    let profile = match crate::sso::take_code(&state, code).await {
        Ok(Some(p)) => p,
        Ok(None) => return failed("This test sign-in is unknown, expired or already shown."),
        Err(e) => return failure(&state, &e),
    };
    // Only a connection of this session's organization: another's profile is not shown.
    if profile.get("organization_id").and_then(Value::as_str) != Some(s.organization_id.as_str()) {
        return failed("This test sign-in is not of this organization.");
    }
    let name = match organization_name(&state, &s).await {
        Ok(n) => n,
        Err(e) => return failure(&state, &e),
    };
    let token = s.csrf_token(&state.secrets);
    let frame = Frame {
        session: &s,
        organization_name: &name,
        token: &token,
    };
    html(&state, StatusCode::OK, pages::test_result(&frame, &profile), Some(&s))
}

// --- answers -------------------------------------------------------------------------------------

fn html(state: &AppState, status: StatusCode, markup: Markup, session: Option<&PortalSession>) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    if let Some(cookie) = session.and_then(|s| s.set_cookie(&state.secrets, secure_cookies(state))) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    secured(r, None)
}

fn error_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    html(
        state,
        status,
        crate::hosted::pages::layout(
            title,
            maud::html! {
                p.error role="alert" { (message) }
                p { "Ask the application you came from for a new Admin Portal link." }
            },
        ),
        None,
    )
}

fn see_other(to: &str, session: Option<&PortalSession>, state: &AppState) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(cookie) = session.and_then(|s| s.set_cookie(&state.secrets, secure_cookies(state))) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    secured(r, None)
}

fn not_found(state: &AppState, what: &str) -> Response {
    error_page(
        state,
        StatusCode::NOT_FOUND,
        "Not found",
        &format!("This organization has no such {what}."),
    )
}

fn failure(state: &AppState, e: &ApiError) -> Response {
    let message = if e.status().is_server_error() {
        "Something went wrong on our side; please try again."
    } else {
        e.message()
    };
    error_page(state, e.status(), "Request failed", message)
}

/// Why a page or form was refused.
enum Refused {
    /// No session cookie, or an expired, forged or foreign one.
    NoSession,
    /// The session was opened for another intent.
    WrongIntent,
    /// The form's CSRF token is missing or not this session's.
    Csrf,
}

fn refused(state: &AppState, r: Refused) -> Response {
    match r {
        Refused::NoSession => error_page(
            state,
            StatusCode::FORBIDDEN,
            "Admin Portal session expired",
            "This Admin Portal session has expired or was not opened in this browser.",
        ),
        Refused::WrongIntent => error_page(
            state,
            StatusCode::FORBIDDEN,
            "Not part of this link",
            "This Admin Portal link was not opened for this page.",
        ),
        Refused::Csrf => error_page(
            state,
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not sent from this Admin Portal page (its security token is missing or wrong).",
        ),
    }
}

/// The session of a page, opened for `intent`.
fn session_for(state: &AppState, headers: &HeaderMap, intent: Intent) -> Result<PortalSession, Refused> {
    let s = PortalSession::from_headers(&state.secrets, headers).ok_or(Refused::NoSession)?;
    if s.intent != intent {
        return Err(Refused::WrongIntent);
    }
    Ok(s)
}

/// The session of a posted form, its CSRF token checked.
fn checked(
    state: &AppState,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
    intent: Intent,
) -> Result<PortalSession, Refused> {
    let s = session_for(state, headers, intent)?;
    if !s.csrf_ok(&state.secrets, field(f, "csrf_token")) {
        return Err(Refused::Csrf);
    }
    Ok(s)
}

/// The portal's actor in event metadata: the organization's IT admin, by the portal session.
fn context(ctx: PublicContext, s: &PortalSession) -> RequestContext {
    ctx.with_actor(crate::auth::Actor {
        id: format!("admin_portal:{}", s.organization_id),
        name: "Admin Portal".into(),
    })
}

async fn organization_name(state: &AppState, s: &PortalSession) -> Result<String, ApiError> {
    let org = queries::organization(&state.pool, &s.organization_id)
        .await?
        .ok_or_else(|| ApiError::not_found("organization"))?;
    Ok(org.get("name").and_then(Value::as_str).unwrap_or_default().to_string())
}

fn field_error(e: &ApiError, fields: &[&str]) -> FieldError {
    let message = if e.status().is_server_error() {
        "Something went wrong on our side; please try again.".to_string()
    } else {
        e.message().to_string()
    };
    let named = e.field().map(|f| f.rsplit('.').next().unwrap_or(f));
    let field = named.filter(|f| fields.contains(f)).unwrap_or("form").to_string();
    FieldError { field, message }
}

fn status_of(e: &ApiError) -> StatusCode {
    e.status()
}

// --- launch --------------------------------------------------------------------------------------

#[utoipa::path(get, path = "/portal/launch", tag = "portal",
    operation_id = "portal_launch", summary = "Open an Admin Portal link",
    description = "Spends the link's secret (once) and opens a 30-minute portal session (cookie) for its \
        organization and intent, then redirects to the intent's page.",
    params(("secret" = String, Query, description = "The link's secret")),
    responses((status = 303, description = "To the intent's page, with the session cookie"),
        (status = 400, description = "Unknown link (HTML)"),
        (status = 410, description = "Expired or already used link (HTML)")))]
pub async fn launch(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let secret = raw
        .as_deref()
        .map(|q| form(&Bytes::copy_from_slice(q.as_bytes())))
        .and_then(|q| q.get("secret").cloned())
        .unwrap_or_default();
    match link::open(&state, &secret).await {
        Ok(Ok(o)) => {
            let Some(s) = PortalSession::start(o.organization_id, o.intent, o.return_url, o.success_url) else {
                return failure(&state, &ApiError::internal());
            };
            see_other(s.intent.home(), Some(&s), &state)
        }
        Ok(Err(NotOpened::Unknown)) => error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid link",
            "This Admin Portal link is not valid.",
        ),
        Ok(Err(NotOpened::Spent)) => error_page(
            &state,
            StatusCode::GONE,
            "Link expired",
            "This Admin Portal link has expired or was already used.",
        ),
        Err(e) => failure(&state, &e),
    }
}

// --- domain verification -------------------------------------------------------------------------

async fn render_domains(
    state: &AppState,
    s: &PortalSession,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&FieldError>,
) -> Response {
    let name = match organization_name(state, s).await {
        Ok(n) => n,
        Err(e) => return failure(state, &e),
    };
    let org = match queries::organization(&state.pool, &s.organization_id).await {
        Ok(Some(o)) => o,
        Ok(None) => return failure(state, &ApiError::not_found("organization")),
        Err(e) => return failure(state, &e.into()),
    };
    let domains = org
        .get("domains")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let token = s.csrf_token(&state.secrets);
    let frame = Frame {
        session: s,
        organization_name: &name,
        token: &token,
    };
    html(state, status, pages::domains(&frame, &domains, message, error), Some(s))
}

#[utoipa::path(get, path = "/portal/domains", tag = "portal", operation_id = "portal_domains",
    summary = "Admin Portal: the organization's domains (HTML)",
    responses((status = 200, description = "The page"), (status = 403, description = "No portal session for this intent")))]
pub async fn domains_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session_for(&state, &headers, Intent::DomainVerification) {
        Ok(s) => render_domains(&state, &s, StatusCode::OK, None, None).await,
        Err(r) => refused(&state, r),
    }
}

#[utoipa::path(post, path = "/portal/domains", tag = "portal", operation_id = "portal_add_domain",
    summary = "Admin Portal: add a domain (form)",
    responses((status = 200, description = "The page, with the new domain"), (status = 403, description = "No session or bad CSRF token"),
        (status = 422, description = "Invalid domain (the page, the error tied to the field)")))]
pub async fn domains_add(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let s = match checked(&state, &headers, &f, Intent::DomainVerification) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    let ctx = context(ctx, &s);
    match add_domain(&state, &ctx, &s.organization_id, field(&f, "domain")).await {
        Ok(d) => {
            let m = format!("Added {}.", d.get("domain").and_then(Value::as_str).unwrap_or_default());
            render_domains(&state, &s, StatusCode::OK, Some(&m), None).await
        }
        Err(e) => render_domains(&state, &s, status_of(&e), None, Some(&field_error(&e, &["domain"]))).await,
    }
}

#[utoipa::path(post, path = "/portal/domains/verify", tag = "portal", operation_id = "portal_verify_domain",
    summary = "Admin Portal: check a domain's DNS TXT record now (form)",
    responses((status = 200, description = "The page, with the outcome"), (status = 403, description = "No session or bad CSRF token"),
        (status = 404, description = "Not a domain of this organization")))]
pub async fn domains_verify(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let s = match checked(&state, &headers, &f, Intent::DomainVerification) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    let id = field(&f, "domain_id");
    let d = match queries::organization_domain(&state.pool, id).await {
        Ok(Some(d)) if d.get("organization_id").and_then(Value::as_str) == Some(s.organization_id.as_str()) => d,
        Ok(_) => return not_found(&state, "domain"),
        Err(e) => return failure(&state, &e.into()),
    };
    let ctx = context(ctx, &s);
    match verify_domain(&state, &ctx, d).await {
        Ok(d) => {
            let name = d.get("domain").and_then(Value::as_str).unwrap_or_default();
            let m = match d.get("state").and_then(Value::as_str) {
                Some("verified") => format!("{name} is verified."),
                _ => format!("{name} could not be verified yet: the TXT record was not found. DNS changes can take a while; check again later."),
            };
            render_domains(&state, &s, StatusCode::OK, Some(&m), None).await
        }
        Err(e) => render_domains(&state, &s, status_of(&e), None, Some(&field_error(&e, &[]))).await,
    }
}

// --- SSO -----------------------------------------------------------------------------------------

fn oidc_callback(state: &AppState) -> String {
    format!("{}/sso/oidc/callback", state.public_base)
}

async fn render_sso(
    state: &AppState,
    s: &PortalSession,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&FieldError>,
) -> Response {
    let name = match organization_name(state, s).await {
        Ok(n) => n,
        Err(e) => return failure(state, &e),
    };
    let filter = ConnectionFilter {
        organization_id: Some(s.organization_id.clone()),
        ..Default::default()
    };
    let page = Page {
        limit: 100,
        before: None,
        after: None,
        order: Order::Desc,
    };
    let list = match queries::connections(&state.pool, &filter, &page).await {
        Ok(l) => l,
        Err(e) => return failure(state, &e.into()),
    };
    let token = s.csrf_token(&state.secrets);
    let frame = Frame {
        session: s,
        organization_name: &name,
        token: &token,
    };
    html(
        state,
        status,
        pages::sso(&frame, &list.data, &oidc_callback(state), message, error),
        Some(s),
    )
}

#[utoipa::path(get, path = "/portal/sso", tag = "portal", operation_id = "portal_sso",
    summary = "Admin Portal: the organization's SSO connections (HTML)",
    responses((status = 200, description = "The page"), (status = 403, description = "No portal session for this intent")))]
pub async fn sso_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session_for(&state, &headers, Intent::Sso) {
        Ok(s) => render_sso(&state, &s, StatusCode::OK, None, None).await,
        Err(r) => refused(&state, r),
    }
}

fn optional(f: &HashMap<String, String>, name: &str) -> Option<String> {
    Some(field(f, name).to_string()).filter(|v| !v.is_empty())
}

#[utoipa::path(post, path = "/portal/sso/oidc", tag = "portal", operation_id = "portal_create_oidc",
    summary = "Admin Portal: create an OIDC connection (form)",
    responses((status = 303, description = "To the new connection's page"), (status = 403, description = "No session or bad CSRF token"),
        (status = 422, description = "Invalid options (the page, the error tied to the field)")))]
pub async fn sso_oidc(State(state): State<AppState>, ctx: PublicContext, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let s = match checked(&state, &headers, &f, Intent::Sso) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    let ctx = context(ctx, &s);
    let b = CreateBody {
        organization_id: s.organization_id.clone(),
        name: optional(&f, "name"),
        oidc_options: Some(OidcInput {
            discovery_endpoint: Some(field(&f, "discovery_endpoint").to_string()),
            client_id: Some(field(&f, "client_id").to_string()),
            client_secret: Some(f.get("client_secret").cloned().unwrap_or_default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    match create_connection(&state, &ctx, &b).await {
        Ok((_, c)) => see_other(&connection_path(&c), Some(&s), &state),
        Err(e) => {
            let fe = field_error(&e, &["name", "discovery_endpoint", "client_id", "client_secret"]);
            render_sso(&state, &s, status_of(&e), None, Some(&fe)).await
        }
    }
}

fn connection_path(c: &Value) -> String {
    format!(
        "{}/{}",
        paths::CONNECTIONS,
        c.get("id").and_then(Value::as_str).unwrap_or_default()
    )
}

#[utoipa::path(post, path = "/portal/sso/saml", tag = "portal", operation_id = "portal_create_saml",
    summary = "Admin Portal: start a SAML connection, as a draft (form)",
    responses((status = 303, description = "To the new connection's page (its SP details)"),
        (status = 403, description = "No session or bad CSRF token")))]
pub async fn sso_saml(State(state): State<AppState>, ctx: PublicContext, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let s = match checked(&state, &headers, &f, Intent::Sso) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    let ctx = context(ctx, &s);
    let b = CreateBody {
        organization_id: s.organization_id.clone(),
        name: optional(&f, "saml_name"),
        connection_type: Some("GenericSAML".into()),
        ..Default::default()
    };
    match create_connection(&state, &ctx, &b).await {
        Ok((_, c)) => see_other(&connection_path(&c), Some(&s), &state),
        Err(e) => {
            let fe = field_error(&e, &["saml_name"]);
            render_sso(&state, &s, status_of(&e), None, Some(&fe)).await
        }
    }
}

/// Connection `id` when it is the session's organization's (else `None`: another organization's
/// connection is answered exactly like one that does not exist).
async fn own_connection(state: &AppState, s: &PortalSession, id: &str) -> Result<Option<Value>, ApiError> {
    if id.len() > 128 {
        return Ok(None);
    }
    Ok(queries::connection(&state.pool, id)
        .await?
        .filter(|c| c.get("organization_id").and_then(Value::as_str) == Some(s.organization_id.as_str())))
}

async fn render_connection(
    state: &AppState,
    s: &PortalSession,
    id: &str,
    status: StatusCode,
    message: Option<&str>,
    error: Option<&FieldError>,
) -> Response {
    let c = match own_connection(state, s, id).await {
        Ok(Some(c)) => c,
        Ok(None) => return not_found(state, "connection"),
        Err(e) => return failure(state, &e),
    };
    let name = match organization_name(state, s).await {
        Ok(n) => n,
        Err(e) => return failure(state, &e),
    };
    let base = &state.public_base;
    let sp = SpDetails {
        acs_url: format!("{base}/sso/saml/acs/{id}"),
        entity_id: format!("{base}/sso/saml/metadata/{id}"),
        metadata_url: format!("{base}/sso/saml/metadata/{id}"),
        oidc_callback: oidc_callback(state),
    };
    let test = portal_test_sign_in_url(state, id);
    let token = s.csrf_token(&state.secrets);
    let frame = Frame {
        session: s,
        organization_name: &name,
        token: &token,
    };
    html(
        state,
        status,
        pages::connection(&frame, &c, &sp, test.as_deref(), message, error),
        Some(s),
    )
}

#[utoipa::path(get, path = "/portal/sso/connections/{id}", tag = "portal", operation_id = "portal_connection",
    summary = "Admin Portal: one connection, its SP details and IdP form (HTML)",
    params(("id" = String, Path, description = "A connection of the session's organization")),
    responses((status = 200, description = "The page"), (status = 403, description = "No portal session for this intent"),
        (status = 404, description = "Not a connection of this organization")))]
pub async fn connection_page(State(state): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    match session_for(&state, &headers, Intent::Sso) {
        Ok(s) => render_connection(&state, &s, &id, StatusCode::OK, None, None).await,
        Err(r) => refused(&state, r),
    }
}

/// The SAML options of the IdP form: pasted metadata XML, a metadata URL, or the three fields.
fn saml_input(f: &HashMap<String, String>) -> Result<SamlInput, ApiError> {
    let xml = f.get("metadata_xml").map(|v| v.trim()).unwrap_or_default();
    if !xml.is_empty() {
        if xml.len() > 256 * 1024 {
            return Err(ApiError::invalid(
                "metadata_xml",
                "invalid_metadata",
                "the metadata XML is too large",
            ));
        }
        let idp = crate::saml::idp_metadata(xml).map_err(|_| {
            ApiError::invalid(
                "metadata_xml",
                "invalid_metadata",
                "this is not IdP metadata keyledger can read (an EntityDescriptor with an IDPSSODescriptor, its \
                 HTTP-Redirect SingleSignOnService and a signing certificate)",
            )
        })?;
        return Ok(SamlInput {
            idp_entity_id: Some(idp.entity_id),
            idp_sso_url: Some(idp.sso_url),
            idp_signing_certs: Some(idp.certificates),
            ..Default::default()
        });
    }
    if let Some(u) = optional(f, "metadata_url") {
        return Ok(SamlInput {
            idp_metadata_url: Some(u),
            ..Default::default()
        });
    }
    let cert = optional(f, "idp_certificate");
    let (entity, sso) = (optional(f, "idp_entity_id"), optional(f, "idp_sso_url"));
    if entity.is_none() && sso.is_none() && cert.is_none() {
        return Err(ApiError::invalid(
            "metadata_xml",
            "required",
            "give the IdP metadata XML, its metadata URL, or its entity ID, sign-on URL and certificate",
        ));
    }
    for (name, v) in [
        ("idp_entity_id", &entity),
        ("idp_sso_url", &sso),
        ("idp_certificate", &cert),
    ] {
        if v.is_none() {
            return Err(ApiError::invalid(
                name,
                "required",
                format!("{name} is required with the other IdP fields"),
            ));
        }
    }
    let cert = cert
        .map(|c| crate::saml::normalize_certificate(&c))
        .transpose()
        .map_err(|_| {
            ApiError::invalid(
                "idp_certificate",
                "invalid_pem",
                "the certificate must be PEM or base64 DER",
            )
        })?;
    Ok(SamlInput {
        idp_entity_id: entity,
        idp_sso_url: sso,
        idp_signing_certs: cert.map(|c| vec![c]),
        ..Default::default()
    })
}

#[utoipa::path(post, path = "/portal/sso/connections/{id}/saml", tag = "portal", operation_id = "portal_connection_saml",
    summary = "Admin Portal: set a SAML connection's IdP (metadata XML, metadata URL, or fields) (form)",
    params(("id" = String, Path, description = "A connection of the session's organization")),
    responses((status = 200, description = "The page; the connection active when complete"),
        (status = 403, description = "No session or bad CSRF token"), (status = 404, description = "Not a connection of this organization"),
        (status = 422, description = "Invalid IdP details (the page, the error tied to the field)")))]
pub async fn connection_saml(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let s = match checked(&state, &headers, &f, Intent::Sso) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    match own_connection(&state, &s, &id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(&state, "connection"),
        Err(e) => return failure(&state, &e),
    }
    let fields = [
        "metadata_xml",
        "metadata_url",
        "idp_entity_id",
        "idp_sso_url",
        "idp_certificate",
    ];
    let saml = match saml_input(&f) {
        Ok(v) => v,
        Err(e) => {
            return render_connection(&state, &s, &id, status_of(&e), None, Some(&field_error(&e, &fields))).await
        }
    };
    // A metadata URL is read now (through the SSRF guard), so a wrong one is said here.
    if let Some(u) = &saml.idp_metadata_url {
        let checked = match url_field(&state, "metadata_url", u, true) {
            Ok(u) => fetch_idp_metadata(&state, "metadata_url", &u).await,
            Err(e) => Err(e),
        };
        if let Err(e) = checked {
            return render_connection(&state, &s, &id, status_of(&e), None, Some(&field_error(&e, &fields))).await;
        }
    }
    let ctx = context(ctx, &s);
    let b = UpdateBody {
        saml_options: Some(saml),
        ..Default::default()
    };
    match update_connection(&state, &ctx, &id, &b).await {
        Ok(c) => {
            let m = match c.get("state").and_then(Value::as_str) {
                Some("active") => "Saved. The connection is active.",
                _ => "Saved.",
            };
            render_connection(&state, &s, &id, StatusCode::OK, Some(m), None).await
        }
        Err(e) => {
            // The JSON API's field names (`saml_options.idp_metadata_url`) map onto the form's.
            let mut fe = field_error(&e, &fields);
            if e.field() == Some("saml_options.idp_metadata_url") {
                fe.field = "metadata_url".into();
            } else if e.field() == Some("saml_options.idp_signing_certs") {
                fe.field = "idp_certificate".into();
            }
            render_connection(&state, &s, &id, status_of(&e), None, Some(&fe)).await
        }
    }
}

#[utoipa::path(post, path = "/portal/sso/connections/{id}/state", tag = "portal", operation_id = "portal_connection_state",
    summary = "Admin Portal: activate or deactivate a connection (form)",
    params(("id" = String, Path, description = "A connection of the session's organization")),
    responses((status = 200, description = "The page"), (status = 403, description = "No session or bad CSRF token"),
        (status = 404, description = "Not a connection of this organization"), (status = 422, description = "Not possible in its state")))]
pub async fn connection_state(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let s = match checked(&state, &headers, &f, Intent::Sso) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    match own_connection(&state, &s, &id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(&state, "connection"),
        Err(e) => return failure(&state, &e),
    }
    let ctx = context(ctx, &s);
    let b = UpdateBody {
        state: Some(field(&f, "state").to_string()),
        ..Default::default()
    };
    match update_connection(&state, &ctx, &id, &b).await {
        Ok(_) => render_connection(&state, &s, &id, StatusCode::OK, Some("Saved."), None).await,
        Err(e) => render_connection(&state, &s, &id, status_of(&e), None, Some(&field_error(&e, &[]))).await,
    }
}

// --- audit logs ----------------------------------------------------------------------------------

#[utoipa::path(get, path = "/portal/audit_logs", tag = "portal", operation_id = "portal_audit_logs",
    summary = "Admin Portal: the organization's audit trail, newest first (HTML)",
    params(("before" = Option<String>, Query, description = "Newer than this event id"),
        ("after" = Option<String>, Query, description = "Older than this event id")),
    responses((status = 200, description = "The page"), (status = 403, description = "No portal session for this intent"),
        (status = 422, description = "Unknown cursor")))]
pub async fn audit_logs_page(State(state): State<AppState>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let s = match session_for(&state, &headers, Intent::AuditLogs) {
        Ok(s) => s,
        Err(r) => return refused(&state, r),
    };
    let q = raw
        .as_deref()
        .map(|q| form(&Bytes::copy_from_slice(q.as_bytes())))
        .unwrap_or_default();
    let cursor = |k: &str| q.get(k).filter(|v| !v.is_empty() && v.len() <= 128).cloned();
    let page = Page {
        limit: 25,
        before: cursor("before"),
        after: cursor("after"),
        order: Order::Desc,
    };
    let filter = TrailFilter {
        organization_id: s.organization_id.clone(),
        ..Default::default()
    };
    let list = match audit::trail(&state.pool, &filter, &page).await {
        Ok(TrailOutcome::Page(l)) => l,
        Ok(TrailOutcome::UnknownCursor) => {
            return error_page(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                "Unknown page",
                "This page of the audit trail does not exist.",
            )
        }
        Err(e) => return failure(&state, &e.into()),
    };
    let name = match organization_name(&state, &s).await {
        Ok(n) => n,
        Err(e) => return failure(&state, &e),
    };
    let token = s.csrf_token(&state.secrets);
    let frame = Frame {
        session: &s,
        organization_name: &name,
        token: &token,
    };
    html(
        &state,
        StatusCode::OK,
        pages::audit_logs(&frame, &list.data, list.before.as_deref(), list.after.as_deref()),
        Some(&s),
    )
}
