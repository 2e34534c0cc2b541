//! Authorization codes of the hosted sign-in (table `authorization_code`): issued when the
//! pages finish a sign-in, exchanged once by `POST /user_management/authenticate`
//! (`grant_type=authorization_code`) for the session. It owns issuing, the single-use
//! redemption and the PKCE (S256) check; it never stores a code, only its SHA-256, and never
//! lets a refused exchange leave the code usable.

use std::time::Duration;

use base64::Engine as _;
use chrono::Utc;
use keyledger_domain::session::{AuthMethod, Grant};
use keyledger_projections::queries;
use sha2::{Digest, Sha256};

use crate::auth::Actor;
use crate::error::ApiError;
use crate::routes::authenticate::Proof;
use crate::secrets::token_hash;
use crate::state::AppState;

/// How long a code may wait for its exchange.
pub const TTL: Duration = Duration::from_secs(600);

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

/// The S256 challenge of a PKCE verifier: base64url(SHA-256(verifier)), unpadded (RFC 7636).
pub fn s256(verifier: &str) -> String {
    b64().encode(Sha256::digest(verifier.as_bytes()))
}

/// A PKCE verifier or challenge as RFC 7636 shapes them: 43 to 128 of `A-Z a-z 0-9 - . _ ~`.
pub fn pkce_shaped(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn invalid_grant() -> ApiError {
    ApiError::bad_request(
        "invalid_grant",
        "The authorization code is invalid, expired, already used, or was issued for another client or verifier.",
    )
}

fn invalid_client() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::UNAUTHORIZED,
        "invalid_client",
        "Invalid client ID or client secret.",
    )
}

/// The client of a code exchange: `client_id` must be this environment's; a `client_secret`,
/// when sent, must be an API key (a confidential client). Without one the caller is a public
/// client, and the code must carry a PKCE challenge (checked by [`redeem`]).
pub async fn client(state: &AppState, client_id: Option<&str>, client_secret: Option<&str>) -> Result<Actor, ApiError> {
    if client_id != Some(state.tokens.client_id()) {
        return Err(invalid_client());
    }
    match client_secret {
        Some(secret) if secret.starts_with("sk_") => crate::auth::actor_for_key(state, secret)
            .await?
            .ok_or_else(invalid_client),
        Some(_) => Err(invalid_client()),
        None => Ok(Actor {
            id: state.tokens.client_id().to_string(),
            name: "public client".into(),
        }),
    }
}

/// What a code binds.
pub struct Binding<'a> {
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub code_challenge: Option<&'a str>,
}

/// Issues a code for a finished sign-in; returns the code (shown once, in the redirect).
pub(crate) async fn issue(state: &AppState, bound: &Binding<'_>, proof: &Proof) -> Result<String, ApiError> {
    let code = crate::secrets::random_token(32).map_err(|e| {
        tracing::error!(error = %e, "drawing an authorization code failed");
        ApiError::internal()
    })?;
    let expires_at = Utc::now() + chrono::Duration::from_std(TTL).unwrap_or_else(|_| chrono::Duration::minutes(10));
    sqlx::query(
        "insert into authorization_code (code_hash, client_id, redirect_uri, code_challenge, user_id, \
         organization_id, auth_method, grant_type, expires_at) values ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(token_hash(&code))
    .bind(bound.client_id)
    .bind(bound.redirect_uri)
    .bind(bound.code_challenge)
    .bind(proof.user_id())
    .bind(&proof.organization)
    .bind(proof.method.as_str())
    .bind(proof.proved_by().as_str())
    .bind(expires_at)
    .execute(&state.pool)
    .await?;
    Ok(code)
}

#[derive(sqlx::FromRow)]
struct Taken {
    client_id: String,
    code_challenge: Option<String>,
    user_id: String,
    organization_id: Option<String>,
    auth_method: String,
    grant_type: String,
}

/// Redeems a code (single use: it is spent first, so a replay, a wrong verifier or a wrong
/// client all leave it spent) into the sign-in it finished. A code with a PKCE challenge needs
/// its verifier; one without needs a confidential client (`has_secret`).
pub(crate) async fn redeem(
    state: &AppState,
    code: &str,
    has_secret: bool,
    code_verifier: Option<&str>,
) -> Result<Proof, ApiError> {
    let code = code.trim();
    if code.is_empty() || code.len() > 256 {
        return Err(invalid_grant());
    }
    let taken: Option<Taken> = sqlx::query_as(
        "update authorization_code set used_at = now() \
         where code_hash = $1 and used_at is null and expires_at > now() \
         returning client_id, code_challenge, user_id, organization_id, auth_method, grant_type",
    )
    .bind(token_hash(code))
    .fetch_optional(&state.pool)
    .await?;
    let taken = taken.ok_or_else(invalid_grant)?;
    if taken.client_id != state.tokens.client_id() {
        return Err(invalid_grant());
    }
    match (&taken.code_challenge, code_verifier) {
        (Some(challenge), Some(verifier)) => {
            let ok = pkce_shaped(verifier)
                && crate::secrets::constant_time_eq(s256(verifier).as_bytes(), challenge.as_bytes());
            if !ok {
                return Err(invalid_grant());
            }
        }
        (Some(_), None) => return Err(invalid_grant()),
        (None, Some(_)) => return Err(invalid_grant()),
        (None, None) if !has_secret => return Err(invalid_client()),
        (None, None) => {}
    }
    let user = queries::user(&state.pool, &taken.user_id)
        .await?
        .ok_or_else(invalid_grant)?;
    Ok(Proof {
        user,
        method: AuthMethod::from_stored(&taken.auth_method),
        grant: Grant::AuthorizationCode,
        pending_grant: Some(Grant::from_stored(&taken.grant_type)),
        organization: taken.organization_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_the_rfc_7636_example_and_verifiers_are_shape_checked() {
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        assert_eq!(s256(verifier), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
        assert!(pkce_shaped(verifier));
        for bad in ["short", &"a".repeat(129), &format!("{}!", "a".repeat(43))] {
            assert!(!pkce_shaped(bad), "{bad}");
        }
    }
}
