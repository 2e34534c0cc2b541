//! Hosted sign-in (AuthKit's pages): `GET /user_management/authorize` and the pages and forms
//! under it, ending in `redirect_uri?code=…&state=…`. The pages call the same sign-in steps
//! as `POST /user_management/authenticate` (`routes::authenticate`); they never redirect to a
//! URI that is not exactly registered, never take a form without its CSRF token, and every
//! answer carries the security headers of [`secured`].

pub mod flow;
pub(crate) mod forms;
pub mod pages;
pub(crate) mod respond;
pub mod sso;

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use keyledger_domain::session::{AuthMethod, Grant};
use keyledger_domain::values::Email;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::flow::Flow;
use self::forms::{checked, current, error_status, field, field_error, form, refused_page};
use self::pages::{FieldError, SignUpValues};
use self::respond::{error_page, page, secure_cookies, secured, see_other};
use self::sso::SsoTarget;
use crate::authorization_codes::{self, Binding};
use crate::error::ApiError;
use crate::routes::authenticate::{self, EndUser, Step};
use crate::state::{AppState, PublicContext, RequestContext};

/// The hosted pages' operations (served without an API key).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(authorize))
        .routes(routes!(sign_in_page))
        .routes(routes!(sign_up_page, sign_up))
        .routes(routes!(password))
        .routes(routes!(magic_auth))
        .routes(routes!(magic_auth_code))
        .routes(routes!(email_verification))
        .routes(routes!(organization))
        .routes(routes!(stylesheet))
}

/// Where a step leaves the browser: the redirect URI with a code, or the next page.
pub(crate) async fn finish(state: &AppState, mut flow: Flow, step: Step) -> Response {
    match step {
        Step::Proved(proof) => {
            let bound = Binding {
                client_id: &flow.client_id,
                redirect_uri: &flow.redirect_uri,
                code_challenge: flow.code_challenge.as_deref(),
            };
            let code = match authorization_codes::issue(state, &bound, &proof).await {
                Ok(c) => c,
                Err(e) => return error_page(state, e.status(), "Sign-in failed", e.message()),
            };
            let Ok(mut to) = url::Url::parse(&flow.redirect_uri) else {
                return error_page(
                    state,
                    StatusCode::BAD_REQUEST,
                    "Sign-in failed",
                    "The redirect URI is invalid.",
                );
            };
            {
                let mut q = to.query_pairs_mut();
                q.append_pair("code", &code);
                if let Some(s) = &flow.state {
                    q.append_pair("state", s);
                }
            }
            see_other(to.as_str(), Some(secure_cookies(state)), &flow.redirect_uri)
        }
        Step::EmailVerification {
            pending_token, user, ..
        } => {
            let email = user
                .get("email")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            flow.pending = Some(pending_token);
            flow.verify_email = Some(email.clone());
            let token = flow.csrf_token(&state.secrets);
            page(
                state,
                StatusCode::OK,
                pages::email_verification(&token, &email, None),
                Some(&flow),
            )
        }
        Step::OrganizationSelection {
            pending_token,
            organizations,
            ..
        } => {
            flow.pending = Some(pending_token);
            flow.choices = organizations.into_iter().take(50).collect();
            let token = flow.csrf_token(&state.secrets);
            page(
                state,
                StatusCode::OK,
                pages::organizations(&token, &flow.choices, None),
                Some(&flow),
            )
        }
        Step::SsoRequired { organization_id, .. } => {
            match sso::sso_redirect(state, &flow, &sso::SsoTarget::Organization(organization_id)).await {
                Ok(Some(idp)) => to_identity_provider(state, &idp),
                Ok(None) => error_page(
                    state,
                    StatusCode::FORBIDDEN,
                    "Single sign-on required",
                    "Your organization requires signing in with its identity provider, and none is set up yet.",
                ),
                Err(e) => error_page(state, e.status(), "Sign-in unavailable", e.message()),
            }
        }
    }
}

/// The sign-in page of a flow, with an error (and its status) when a step was refused.
fn sign_in_with(
    state: &AppState,
    flow: &Flow,
    email: Option<&str>,
    error: Option<(StatusCode, FieldError)>,
) -> Response {
    let token = flow.csrf_token(&state.secrets);
    let email = email.or(flow.login_hint.as_deref());
    let (status, error) = match error {
        Some((s, e)) => (s, Some(e)),
        None => (StatusCode::OK, None),
    };
    page(state, status, pages::sign_in(&token, email, error.as_ref()), Some(flow))
}

fn sign_up_with(state: &AppState, flow: &Flow, v: &SignUpValues, error: Option<(StatusCode, FieldError)>) -> Response {
    let token = flow.csrf_token(&state.secrets);
    let (status, error) = match error {
        Some((s, e)) => (s, Some(e)),
        None => (StatusCode::OK, None),
    };
    page(state, status, pages::sign_up(&token, v, error.as_ref()), Some(flow))
}

/// The authorize request's parameters (each at most once).
fn query(raw: Option<&str>) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let pairs = crate::extract::urlencoded(raw.unwrap_or_default().as_bytes())
        .map_err(|p| format!("The parameter {} must not contain NUL characters.", p.0))?;
    for (k, v) in pairs {
        if out.insert(k.clone(), v).is_some() {
            return Err(format!("The parameter {k} was given more than once."));
        }
    }
    Ok(out)
}

/// The authorize request checked: a flow, or the error page's message.
#[allow(clippy::result_large_err, reason = "an error page is returned once per request")]
async fn start(state: &AppState, q: &HashMap<String, String>) -> Result<(Flow, Option<SsoTarget>, bool), Response> {
    let bad = |message: &str| error_page(state, StatusCode::BAD_REQUEST, "Sign-in unavailable", message);
    let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    // The redirect URI first: until it is known good, nothing may be sent there.
    let Some(redirect_uri) = get("redirect_uri") else {
        return Err(bad("The request has no redirect_uri."));
    };
    match crate::redirect_uris::redirect_uri_allowed(state, redirect_uri).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(bad(
                "The redirect_uri is not registered for this application (POST /user_management/redirect_uris).",
            ))
        }
        Err(e) => return Err(error_page(state, e.status(), "Sign-in unavailable", e.message())),
    }
    if get("client_id") != Some(state.tokens.client_id()) {
        return Err(bad("The client_id is not this environment's."));
    }
    if get("response_type") != Some("code") {
        return Err(bad("response_type must be code."));
    }
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, None) => None,
        (Some(c), Some("S256")) if authorization_codes::pkce_shaped(c) => Some(c.to_string()),
        (Some(_), Some("S256")) => {
            return Err(bad(
                "code_challenge must be a base64url S256 challenge (43 characters).",
            ))
        }
        (_, Some(m)) if m != "S256" => {
            return Err(bad(
                "Only the S256 code_challenge_method is supported (plain is refused).",
            ))
        }
        (Some(_), _) => return Err(bad("code_challenge_method must be S256 (plain is refused).")),
        (None, Some(_)) => return Err(bad("code_challenge_method was given without a code_challenge.")),
    };
    let state_param = get("state").map(str::to_string);
    if state_param.as_ref().is_some_and(|s| s.len() > 1024) {
        return Err(bad("state is too long (at most 1024 characters)."));
    }
    let invitation_token = get("invitation_token").map(str::to_string);
    if invitation_token.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(bad("invitation_token is too long."));
    }
    let login_hint = get("login_hint").map(str::to_string);
    if login_hint.as_ref().is_some_and(|s| s.len() > 254) {
        return Err(bad("login_hint is too long."));
    }
    let sign_up = match get("screen_hint") {
        None | Some("sign-in") => false,
        Some("sign-up") => true,
        Some(_) => return Err(bad("screen_hint must be sign-in or sign-up.")),
    };
    let target = match (get("connection_id"), get("organization_id"), get("provider")) {
        (Some(c), _, _) => Some(SsoTarget::Connection(c.to_string())),
        (None, Some(o), _) => Some(SsoTarget::Organization(o.to_string())),
        (None, None, None | Some("authkit")) => None,
        (None, None, Some(p)) => Some(SsoTarget::Provider(p.to_string())),
    };
    let mut flow = Flow::start(
        state.tokens.client_id().to_string(),
        redirect_uri.to_string(),
        state_param,
        code_challenge,
        login_hint,
    )
    .ok_or_else(|| {
        error_page(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "Sign-in unavailable",
            "Please try again.",
        )
    })?;
    flow.invitation_token = invitation_token;
    Ok((flow, target, sign_up))
}

#[utoipa::path(get, path = "/user_management/authorize", tag = "user_management",
    operation_id = "authorize", summary = "Hosted sign-in (AuthKit): the sign-in or sign-up page, or SSO",
    params(
        ("client_id" = String, Query, description = "This environment's client id"),
        ("redirect_uri" = String, Query, description = "Exactly a registered redirect URI"),
        ("response_type" = String, Query, description = "`code`"),
        ("state" = Option<String>, Query, description = "Returned unchanged with the code"),
        ("code_challenge" = Option<String>, Query, description = "PKCE challenge (S256)"),
        ("code_challenge_method" = Option<String>, Query, description = "`S256` (plain is refused)"),
        ("provider" = Option<String>, Query, description = "`authkit` (default) or an SSO provider"),
        ("connection_id" = Option<String>, Query, description = "Sign in with this SSO connection"),
        ("organization_id" = Option<String>, Query, description = "Sign in with this organization's SSO"),
        ("login_hint" = Option<String>, Query, description = "Prefills the email"),
        ("invitation_token" = Option<String>, Query, description = "An invitation accepted with the sign-in"),
        ("screen_hint" = Option<String>, Query, description = "`sign-in` (default) or `sign-up`")),
    responses((status = 200, description = "The sign-in (or sign-up) page", content_type = "text/html", body = String),
        (status = 303, description = "To the identity provider (SSO)"),
        (status = 400, description = "An error page (never a redirect): unregistered redirect URI, wrong client, bad PKCE", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String)))]
pub async fn authorize(State(state): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = match query(raw.as_deref()) {
        Ok(q) => q,
        Err(m) => return error_page(&state, StatusCode::BAD_REQUEST, "Sign-in unavailable", &m),
    };
    let (flow, target, sign_up) = match start(&state, &q).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    if let Some(target) = target {
        return match sso::sso_redirect(&state, &flow, &target).await {
            Ok(Some(idp)) => see_other(&idp, None, &idp),
            Ok(None) => error_page(
                &state,
                StatusCode::BAD_REQUEST,
                "Single sign-on unavailable",
                "No single sign-on connection is available for this request.",
            ),
            Err(e) => error_page(&state, e.status(), "Single sign-on unavailable", e.message()),
        };
    }
    if sign_up {
        let v = SignUpValues {
            email: flow.login_hint.clone(),
            ..Default::default()
        };
        sign_up_with(&state, &flow, &v, None)
    } else {
        sign_in_with(&state, &flow, None, None)
    }
}

#[utoipa::path(get, path = "/user_management/authorize/sign_in", tag = "user_management",
    operation_id = "authorize_sign_in_page", summary = "Hosted sign-in: the sign-in page of the current sign-in",
    responses((status = 200, description = "The sign-in page", content_type = "text/html", body = String),
        (status = 403, description = "No sign-in under way in this browser", content_type = "text/html", body = String)))]
pub async fn sign_in_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match current(&state, &headers) {
        Ok(flow) => sign_in_with(&state, &flow, None, None),
        Err(r) => refused_page(&state, r),
    }
}

#[utoipa::path(get, path = "/user_management/authorize/sign_up", tag = "user_management",
    operation_id = "authorize_sign_up_page", summary = "Hosted sign-in: the sign-up page of the current sign-in",
    responses((status = 200, description = "The sign-up page", content_type = "text/html", body = String),
        (status = 403, description = "No sign-in under way in this browser", content_type = "text/html", body = String)))]
pub async fn sign_up_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match current(&state, &headers) {
        Ok(flow) => {
            let v = SignUpValues {
                email: flow.login_hint.clone(),
                ..Default::default()
            };
            sign_up_with(&state, &flow, &v, None)
        }
        Err(r) => refused_page(&state, r),
    }
}

/// After a form post, the way on to an identity provider: a page that moves on by itself (a meta
/// refresh, with a link), because a redirect answering a form may only lead where the form page's
/// `form-action` allows, and that page could not know the identity provider.
fn to_identity_provider(state: &AppState, idp: &str) -> Response {
    page(state, StatusCode::OK, pages::continue_to(idp), None)
}

/// An email at a verified domain whose organization requires SSO goes to its identity provider.
async fn policy_redirect(state: &AppState, flow: &Flow, email: &str) -> Option<Response> {
    match sso::policy_sso_redirect_for_email(state, flow, email).await {
        Ok(Some(idp)) => Some(to_identity_provider(state, &idp)),
        Ok(None) => None,
        Err(e) => Some(error_page(state, e.status(), "Sign-in unavailable", e.message())),
    }
}

/// The browser's request as the sign-in's end user, its per-address limit checked.
async fn end_user(state: &AppState, ctx: PublicContext) -> Result<(RequestContext, EndUser), ApiError> {
    let ctx = ctx.anonymous();
    let who = EndUser::of_request(&ctx);
    authenticate::limit_end_user(state, &who).await?;
    Ok((ctx, who))
}

#[utoipa::path(post, path = "/user_management/authorize/password", tag = "user_management",
    operation_id = "authorize_password", summary = "Hosted sign-in: email and password (form)",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf_token, email, password"),
    responses((status = 303, description = "To the redirect URI with code and state"),
        (status = 200, description = "The next step's page (email verification, organization selection)", content_type = "text/html", body = String),
        (status = 400, description = "The sign-in page with the error", content_type = "text/html", body = String),
        (status = 403, description = "Missing or wrong CSRF token, or no sign-in under way", content_type = "text/html", body = String),
        (status = 422, description = "The page again with the error (an invalid field)", content_type = "text/html", body = String),
        (status = 429, description = "The page again with the error (rate limited)", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String),
        (status = 404, description = "The page again with the error (an unknown invitation)", content_type = "text/html", body = String)))]
pub async fn password(State(state): State<AppState>, ctx: PublicContext, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let flow = match checked(&state, &headers, &f) {
        Ok(flow) => flow,
        Err(r) => return refused_page(&state, r),
    };
    let email = field(&f, "email");
    let refused = |e: ApiError| {
        let status = error_status(&e);
        sign_in_with(
            &state,
            &flow,
            Some(email),
            Some((status, field_error(&e, &["email", "password"], "form"))),
        )
    };
    if email.is_empty() {
        return refused(ApiError::invalid("email", "required", "Enter your email."));
    }
    if let Some(r) = policy_redirect(&state, &flow, email).await {
        return r;
    }
    let candidate = f.get("password").cloned().unwrap_or_default();
    if candidate.is_empty() {
        return refused(ApiError::invalid("password", "required", "Enter your password."));
    }
    let (ctx, who) = match end_user(&state, ctx).await {
        Ok(x) => x,
        Err(e) => return refused(e),
    };
    match authenticate::password(&state, &ctx, email, candidate, flow.invitation_token.as_deref(), &who).await {
        Ok(step) => finish(&state, flow, step).await,
        Err(e) => refused(e),
    }
}

#[utoipa::path(post, path = "/user_management/authorize/sign_up", tag = "user_management",
    operation_id = "authorize_sign_up", summary = "Hosted sign-in: create an account (form)",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf_token, email, password, first_name, last_name"),
    responses((status = 200, description = "The next step's page (email verification)", content_type = "text/html", body = String),
        (status = 303, description = "To the redirect URI with code and state"),
        (status = 422, description = "The sign-up page with the error", content_type = "text/html", body = String),
        (status = 403, description = "Missing or wrong CSRF token, or no sign-in under way", content_type = "text/html", body = String),
        (status = 400, description = "The page again with the error (a refused step)", content_type = "text/html", body = String),
        (status = 409, description = "The page with the error (a concurrent change)", content_type = "text/html", body = String),
        (status = 429, description = "The page again with the error (rate limited)", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String)))]
pub async fn sign_up(State(state): State<AppState>, ctx: PublicContext, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let flow = match checked(&state, &headers, &f) {
        Ok(flow) => flow,
        Err(r) => return refused_page(&state, r),
    };
    let optional = |name: &str| Some(field(&f, name).to_string()).filter(|s| !s.is_empty());
    let values = SignUpValues {
        email: optional("email"),
        first_name: optional("first_name"),
        last_name: optional("last_name"),
    };
    let fields = ["email", "password", "first_name", "last_name"];
    let refused = |e: ApiError| {
        let status = error_status(&e);
        sign_up_with(&state, &flow, &values, Some((status, field_error(&e, &fields, "form"))))
    };
    let email = field(&f, "email");
    if email.is_empty() {
        return refused(ApiError::invalid("email", "required", "Enter your email."));
    }
    if let Some(r) = policy_redirect(&state, &flow, email).await {
        return r;
    }
    let candidate = f.get("password").cloned().unwrap_or_default();
    if candidate.is_empty() {
        return refused(ApiError::invalid("password", "required", "Choose a password."));
    }
    let (ctx, _who) = match end_user(&state, ctx).await {
        Ok(x) => x,
        Err(e) => return refused(e),
    };
    let body = crate::routes::users::CreateBody::sign_up(
        email.to_string(),
        candidate,
        values.first_name.clone(),
        values.last_name.clone(),
    );
    let user = match crate::routes::users::create_user(&state, ctx.clone(), body).await {
        Ok(u) => u,
        Err(e) => return refused(e),
    };
    match authenticate::complete(&state, &ctx, user, AuthMethod::Password, Grant::Password, None).await {
        Ok(step) => finish(&state, flow, step).await,
        Err(e) => error_page(&state, e.status(), "Sign-up failed", e.message()),
    }
}

#[utoipa::path(post, path = "/user_management/authorize/magic_auth", tag = "user_management",
    operation_id = "authorize_magic_auth", summary = "Hosted sign-in: email me a code (form)",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf_token, magic_email"),
    responses((status = 200, description = "The code entry page", content_type = "text/html", body = String),
        (status = 422, description = "The sign-in page with the error", content_type = "text/html", body = String),
        (status = 403, description = "Missing or wrong CSRF token, or no sign-in under way", content_type = "text/html", body = String),
        (status = 400, description = "The page again with the error (a refused step)", content_type = "text/html", body = String),
        (status = 429, description = "The page again with the error (rate limited)", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String)))]
pub async fn magic_auth(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let mut flow = match checked(&state, &headers, &f) {
        Ok(flow) => flow,
        Err(r) => return refused_page(&state, r),
    };
    let raw = field(&f, "magic_email");
    let refused = |flow: &Flow, e: ApiError| {
        let mut fe = field_error(&e, &[], "magic_email");
        fe.field = "magic_email".into();
        sign_in_with(&state, flow, Some(raw), Some((error_status(&e), fe)))
    };
    let email = match Email::parse("magic_email", raw) {
        Ok(e) => e,
        Err(_) => {
            return refused(
                &flow,
                ApiError::invalid("magic_email", "invalid_email", "Enter a valid email."),
            )
        }
    };
    if let Some(r) = policy_redirect(&state, &flow, email.as_str()).await {
        return r;
    }
    let (ctx, _who) = match end_user(&state, ctx).await {
        Ok(x) => x,
        Err(e) => return refused(&flow, e),
    };
    if let Err(e) = crate::routes::codes::send_magic_auth(&state, &ctx, email.clone()).await {
        return refused(&flow, e);
    }
    flow.magic_email = Some(email.as_str().to_string());
    let token = flow.csrf_token(&state.secrets);
    page(
        &state,
        StatusCode::OK,
        pages::magic_code(&token, email.as_str(), None),
        Some(&flow),
    )
}

#[utoipa::path(post, path = "/user_management/authorize/magic_auth/code", tag = "user_management",
    operation_id = "authorize_magic_auth_code", summary = "Hosted sign-in: the emailed code (form)",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf_token, code"),
    responses((status = 303, description = "To the redirect URI with code and state"),
        (status = 200, description = "The next step's page (organization selection)", content_type = "text/html", body = String),
        (status = 400, description = "The code page with the error", content_type = "text/html", body = String),
        (status = 403, description = "Missing or wrong CSRF token, or no sign-in under way", content_type = "text/html", body = String),
        (status = 409, description = "The page with the error (a concurrent change)", content_type = "text/html", body = String),
        (status = 422, description = "The page again with the error (an invalid field)", content_type = "text/html", body = String),
        (status = 429, description = "The page again with the error (rate limited)", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String),
        (status = 404, description = "The page again with the error (an unknown invitation)", content_type = "text/html", body = String)))]
pub async fn magic_auth_code(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let flow = match checked(&state, &headers, &f) {
        Ok(flow) => flow,
        Err(r) => return refused_page(&state, r),
    };
    let Some(email) = flow.magic_email.clone() else {
        return sign_in_with(&state, &flow, None, None);
    };
    let refused = |e: ApiError| {
        let token = flow.csrf_token(&state.secrets);
        let fe = field_error(&e, &["code"], "code");
        page(
            &state,
            error_status(&e),
            pages::magic_code(&token, &email, Some(&fe)),
            Some(&flow),
        )
    };
    let code = field(&f, "code");
    if code.is_empty() {
        return refused(ApiError::invalid("code", "required", "Enter the code from the email."));
    }
    let (ctx, who) = match end_user(&state, ctx).await {
        Ok(x) => x,
        Err(e) => return refused(e),
    };
    match authenticate::magic_auth(&state, &ctx, &email, code, flow.invitation_token.as_deref(), &who).await {
        Ok(step) => finish(&state, flow.clone(), step).await,
        Err(e) => refused(e),
    }
}

#[utoipa::path(post, path = "/user_management/authorize/email_verification", tag = "user_management",
    operation_id = "authorize_email_verification", summary = "Hosted sign-in: the email verification code (form)",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf_token, code"),
    responses((status = 303, description = "To the redirect URI with code and state"),
        (status = 200, description = "The next step's page (organization selection)", content_type = "text/html", body = String),
        (status = 400, description = "The code page with the error", content_type = "text/html", body = String),
        (status = 403, description = "Missing or wrong CSRF token, or no sign-in under way", content_type = "text/html", body = String),
        (status = 409, description = "The page with the error (a concurrent change)", content_type = "text/html", body = String),
        (status = 422, description = "The page again with the error (an invalid field)", content_type = "text/html", body = String),
        (status = 429, description = "The page again with the error (rate limited)", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String)))]
pub async fn email_verification(
    State(state): State<AppState>,
    ctx: PublicContext,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = form(&body);
    let flow = match checked(&state, &headers, &f) {
        Ok(flow) => flow,
        Err(r) => return refused_page(&state, r),
    };
    let (Some(pending), Some(email)) = (flow.pending.clone(), flow.verify_email.clone()) else {
        return sign_in_with(&state, &flow, None, None);
    };
    let refused = |e: ApiError| {
        let token = flow.csrf_token(&state.secrets);
        let fe = field_error(&e, &["code"], "code");
        page(
            &state,
            error_status(&e),
            pages::email_verification(&token, &email, Some(&fe)),
            Some(&flow),
        )
    };
    let code = field(&f, "code");
    if code.is_empty() {
        return refused(ApiError::invalid("code", "required", "Enter the code from the email."));
    }
    let (ctx, who) = match end_user(&state, ctx).await {
        Ok(x) => x,
        Err(e) => return refused(e),
    };
    match authenticate::email_verification(&state, &ctx, &pending, code, &who).await {
        Ok(step) => {
            let mut next = flow.clone();
            next.pending = None;
            finish(&state, next, step).await
        }
        Err(e) => refused(e),
    }
}

#[utoipa::path(post, path = "/user_management/authorize/organization", tag = "user_management",
    operation_id = "authorize_organization", summary = "Hosted sign-in: the organization to sign in to (form)",
    request_body(content = String, content_type = "application/x-www-form-urlencoded", description = "csrf_token, organization_id"),
    responses((status = 303, description = "To the redirect URI with code and state"),
        (status = 400, description = "The selection page with the error", content_type = "text/html", body = String),
        (status = 403, description = "Missing or wrong CSRF token, or no sign-in under way", content_type = "text/html", body = String),
        (status = 409, description = "The page with the error (a concurrent change)", content_type = "text/html", body = String),
        (status = 503, description = "An error page (the database is unavailable)", content_type = "text/html", body = String)))]
pub async fn organization(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let f = form(&body);
    let flow = match checked(&state, &headers, &f) {
        Ok(flow) => flow,
        Err(r) => return refused_page(&state, r),
    };
    let Some(pending) = flow.pending.clone() else {
        return sign_in_with(&state, &flow, None, None);
    };
    let chosen = field(&f, "organization_id");
    if !flow.choices.iter().any(|(id, _)| id == chosen) {
        let token = flow.csrf_token(&state.secrets);
        let fe = FieldError {
            field: "organization_id".into(),
            message: "Choose one of the organizations listed.".into(),
        };
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            pages::organizations(&token, &flow.choices, Some(&fe)),
            Some(&flow),
        );
    }
    match authenticate::organization_selection(&state, &pending, chosen).await {
        Ok(step) => finish(&state, flow, step).await,
        Err(e) => error_page(&state, e.status(), "Sign-in failed", e.message()),
    }
}

#[utoipa::path(get, path = "/user_management/authorize/hosted.css", tag = "user_management",
    operation_id = "authorize_stylesheet", summary = "Hosted sign-in: the pages' stylesheet",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub async fn stylesheet() -> Response {
    secured(
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
            pages::CSS,
        )
            .into_response(),
        None,
    )
}
