//! How the hosted pages answer: HTML pages, error pages and redirects, each with the security
//! headers of [`secured`] and, on a page of a sign-in under way, its re-sealed flow cookie.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::Markup;

use super::flow::{self, Flow};
use super::pages;
use crate::state::AppState;

/// The headers of every hosted answer: no script, style only from this server, forms post only
/// here (and, after a form, redirect only to the flow's redirect URI's origin), never framed,
/// no referrer, never cached.
pub(crate) fn secured(mut r: Response, form_target: Option<&str>) -> Response {
    let form_action = match form_target
        .and_then(|u| url::Url::parse(u).ok())
        .map(|u| u.origin().ascii_serialization())
        .filter(|o| o != "null")
    {
        Some(origin) => format!("'self' {origin}"),
        None => "'self'".to_string(),
    };
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

pub(crate) fn secure_cookies(state: &AppState) -> bool {
    state.public_url.as_deref().is_some_and(|u| u.starts_with("https://"))
}

/// An HTML page; with a flow, its (re-sealed) cookie and its redirect URI's origin in the CSP.
pub(super) fn page(state: &AppState, status: StatusCode, markup: Markup, flow: Option<&Flow>) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response();
    if let Some(cookie) = flow.and_then(|f| f.set_cookie(&state.secrets, secure_cookies(state))) {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    secured(r, flow.map(|f| f.redirect_uri.as_str()))
}

/// An error page (never a redirect).
pub(crate) fn error_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    page(state, status, pages::error(title, message), None)
}

pub(super) fn expired(state: &AppState) -> Response {
    error_page(
        state,
        StatusCode::FORBIDDEN,
        "Sign-in expired",
        "This sign-in has expired or was not started in this browser.",
    )
}

/// A 303 to `to` (after a form); the flow's cookie cleared when it is done.
pub(super) fn see_other(to: &str, clear: Option<bool>, form_target: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    if let Some(secure) = clear {
        if let Ok(v) = HeaderValue::from_str(&flow::clear_cookie(secure)) {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    secured(r, Some(form_target))
}
