//! Password hashing: argon2id at OWASP's parameters (m=19 MiB, t=2, p=1), on the blocking pool,
//! with a semaphore bounding how many run at once.

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::error::ApiError;
use crate::state::AppState;

fn argon2() -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|_| ApiError::internal())?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Checks the password policy: 8 to 1024 characters.
pub fn validate(field: &str, password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if !(8..=1024).contains(&n) {
        return Err(ApiError::invalid(
            field,
            "password_strength_error",
            "password must be between 8 and 1024 characters",
        ));
    }
    Ok(())
}

/// Returns the PHC string of the password's argon2id hash.
pub async fn hash(state: &AppState, password: String) -> Result<String, ApiError> {
    let _permit = state.hashing.acquire().await.map_err(|_| ApiError::internal())?;
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut salt);
        let salt = SaltString::encode_b64(&salt).map_err(|_| ApiError::internal())?;
        let h = argon2()?
            .hash_password(password.as_bytes(), &salt)
            .map_err(|_| ApiError::internal())?;
        Ok(h.to_string())
    })
    .await
    .map_err(|_| ApiError::internal())?
}

/// Accepts an imported argon2 PHC hash (`password_hash_type: argon2`) after checking its form.
pub fn imported(hash: &str) -> Result<String, ApiError> {
    match argon2::PasswordHash::new(hash) {
        Ok(h) if h.algorithm.as_str().starts_with("argon2") => Ok(hash.to_string()),
        _ => Err(ApiError::invalid(
            "password_hash",
            "invalid_password_hash",
            "password_hash is not a valid argon2 PHC string",
        )),
    }
}
