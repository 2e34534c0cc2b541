//! The hosted pages' posted forms: their fields, their CSRF check against the flow cookie, and
//! a refused step's message tied to the field it is about.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::flow::{self, Flow};
use super::pages::FieldError;
use super::respond::{error_page, expired};
use crate::error::ApiError;
use crate::state::AppState;

/// The message of a refused step, tied to the field it concerns (`fallback` when it names
/// none the form has).
pub(super) fn field_error(e: &ApiError, fields: &[&str], fallback: &str) -> FieldError {
    let message = match e.code() {
        "invalid_credentials" => "Incorrect email or password.".to_string(),
        _ if e.status().is_server_error() => "Something went wrong on our side; please try again.".to_string(),
        _ => e.message().to_string(),
    };
    // A wrong password is about the password; anything else about its field, or the form.
    let fallback = match e.code() {
        "invalid_credentials" => "password",
        _ => fallback,
    };
    let field = e.field().filter(|f| fields.contains(f)).unwrap_or(fallback).to_string();
    FieldError { field, message }
}

pub(super) fn error_status(e: &ApiError) -> StatusCode {
    e.status()
}

/// A posted form's fields (first value of each).
pub(crate) fn form(body: &Bytes) -> HashMap<String, String> {
    let mut out = HashMap::new();
    // A form holding a NUL (no browser sends one) counts as empty: without its CSRF token it is
    // refused like any other forged form.
    for (k, v) in crate::extract::urlencoded(body).unwrap_or_default() {
        out.entry(k).or_insert(v);
    }
    out
}

pub(crate) fn field<'a>(f: &'a HashMap<String, String>, name: &str) -> &'a str {
    f.get(name).map(|s| s.trim()).unwrap_or_default()
}

/// Why a form or link of the pages was refused (both 403 pages).
pub(super) enum Refused {
    /// No flow cookie, or one that is expired, forged or from another key.
    Expired,
    /// The form's CSRF token is missing or not this flow's.
    Csrf,
}

pub(super) fn refused_page(state: &AppState, r: Refused) -> Response {
    match r {
        Refused::Expired => expired(state),
        Refused::Csrf => error_page(
            state,
            StatusCode::FORBIDDEN,
            "Request refused",
            "This form was not sent from this sign-in page (its security token is missing or wrong).",
        ),
    }
}

/// The flow of a posted form, its CSRF token checked.
pub(super) fn checked(state: &AppState, headers: &HeaderMap, f: &HashMap<String, String>) -> Result<Flow, Refused> {
    let flow = current(state, headers)?;
    if !flow.csrf_ok(&state.secrets, field(f, "csrf_token")) {
        return Err(Refused::Csrf);
    }
    Ok(flow)
}

/// The flow of a page link (no form): its cookie.
pub(super) fn current(state: &AppState, headers: &HeaderMap) -> Result<Flow, Refused> {
    flow::cookie_value(headers)
        .and_then(|v| Flow::open(&state.secrets, &v))
        .ok_or(Refused::Expired)
}
