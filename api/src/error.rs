//! The API's one error type: a stable machine `code`, a human `message` and, for validation,
//! per-field `errors`. 5xx bodies never carry internals; those are logged instead.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use keyledger_domain::values::InvalidValue;
use keyledger_domain::ClaimKind;
use keyledger_store::commands::CommandError;
use keyledger_store::StorageError;
use serde::Serialize;

/// The top-level code of every validation failure (the WorkOS spec's 422 body).
pub const INVALID_REQUEST_PARAMETERS: &str = "invalid_request_parameters";

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    errors: Vec<FieldError>,
    /// Seconds for a `Retry-After` header (503s of an unavailable database, 429s).
    retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// This error with a `Retry-After: <secs>` header (e.g. a 429 of `crate::rate_limit`).
    pub fn with_retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// The machine code (`invalid_credentials`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The human message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The first invalid field, if the error names one.
    pub fn field(&self) -> Option<&str> {
        self.errors.first().map(|e| e.field.as_str())
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "entity_not_found", format!("{what} not found"))
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid API key is required: Authorization: Bearer sk_...",
        )
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// One invalid field, in the spec's 422 shape: the top-level code is
    /// `invalid_request_parameters`, the field's own code sits in `errors`.
    pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::field_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            INVALID_REQUEST_PARAMETERS,
            field,
            code,
            message,
        )
    }

    /// One invalid field where the spec names the top-level code of that endpoint's answer
    /// (e.g. `invalid_role` on membership create): the code is both top-level and in `errors`.
    pub fn invalid_as(status: StatusCode, field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::field_error(status, code, field, code, message)
    }

    /// One invalid field under the top-level `top` code (e.g. `password_reset_error`).
    pub fn field_error(
        status: StatusCode,
        top: &'static str,
        field: &str,
        code: &'static str,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        Self {
            status,
            code: top,
            message: message.clone(),
            errors: vec![FieldError {
                field: field.to_string(),
                code: code.to_string(),
                message,
            }],
            retry_after: None,
        }
    }

    /// This error with the field errors of `other` added (several invalid fields at once).
    pub fn also(mut self, other: ApiError) -> Self {
        self.errors.extend(other.errors);
        self
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; it has been logged",
        )
    }

    /// 503 `database_unavailable` with `Retry-After`: the database is unreachable, shutting
    /// down or out of connections (`keyledger_store::availability`). Nothing about the
    /// request was wrong; a retry may succeed.
    pub fn database_unavailable() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database is unavailable; retry later",
        );
        e.retry_after = Some(DATABASE_RETRY_AFTER_SECS);
        e
    }
}

impl ApiError {
    /// 503 `server_busy` with `Retry-After`: too many password hashes already wait for a turn
    /// (`crate::password::Hashing`). Nothing about the request was wrong; a retry may succeed.
    pub fn server_busy(retry_after_secs: u32) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_busy",
            "the server is busy hashing passwords; retry later",
        );
        e.retry_after = Some(retry_after_secs);
        e
    }
}

impl From<InvalidValue> for ApiError {
    fn from(v: InvalidValue) -> Self {
        Self::invalid(v.field, v.code, v.message)
    }
}

/// `Retry-After` of a `database_unavailable` answer.
pub const DATABASE_RETRY_AFTER_SECS: u32 = 1;

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "database unavailable");
            return Self::database_unavailable();
        }
        tracing::error!(error = %e, "storage error");
        Self::internal()
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if keyledger_store::availability::is_unavailable(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return Self::database_unavailable();
        }
        tracing::error!(error = %e, "database error");
        Self::internal()
    }
}

/// Maps command failures: domain refusals by kind (the caller supplies that mapping), claims to
/// the field they protect, lost races to 409, storage failures to a logged 500.
pub fn command_error<E: std::error::Error>(e: CommandError<E>, domain: impl FnOnce(E) -> ApiError) -> ApiError {
    match e {
        CommandError::Domain(d) => domain(d),
        CommandError::Claim(c) => match c.kind.as_str() {
            "user_email" => ApiError::invalid(
                "email",
                "email_not_available",
                format!("the email {} is already taken", c.value),
            ),
            "user_external_id" => ApiError::invalid(
                "external_id",
                "external_id_not_available",
                "the external_id is already taken",
            ),
            "organization_external_id" => ApiError::new(
                StatusCode::CONFLICT,
                "external_id_not_available",
                "an organization with this external_id already exists",
            ),
            "verified_domain" => ApiError::new(
                StatusCode::CONFLICT,
                "domain_verified_by_another_organization",
                format!("the domain {} is already verified by another organization", c.value),
            ),
            "membership" => ApiError::invalid(
                "user_id",
                "organization_membership_already_exists",
                "the user is already a member of this organization",
            ),
            "webhook_endpoint_url" => ApiError::new(
                StatusCode::CONFLICT,
                "duplicate_endpoint",
                "a webhook endpoint with this endpoint_url already exists",
            ),
            _ => ApiError::conflict(c.to_string()),
        },
        // A membership's user or organization is gone (deleted concurrently): its liveness claim.
        CommandError::Missing(m) => match ClaimKind::parse(&m.kind) {
            Some(ClaimKind::LiveUser) => ApiError::not_found("user"),
            Some(ClaimKind::LiveOrganization) => ApiError::not_found("organization"),
            _ => ApiError::not_found("object"),
        },
        CommandError::Conflict => ApiError::conflict("the object was changed concurrently; retry the request"),
        CommandError::Unavailable(m) => {
            tracing::warn!(error = %m, "database unavailable during a command");
            ApiError::database_unavailable()
        }
        CommandError::Storage(m) => {
            tracing::error!(error = %m, "command storage failure");
            ApiError::internal()
        }
    }
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    errors: &'a [FieldError],
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.code,
            message: &self.message,
            errors: &self.errors,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        response
    }
}
