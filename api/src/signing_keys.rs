//! The access tokens' signing keys in the database (migration 0016): generating an RSA-2048 key
//! with its self-signed certificate (the JWKS's `x5c`), creating the first one lazily, rotating,
//! listing. Private keys are stored only sealed with the master key (aad = kid) and are never
//! listed or logged; this module never decides what a token says (`crate::tokens` does).

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chrono::{DateTime, Utc};
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::secrets::{MasterKey, SecretError};

/// Modulus size of generated keys.
pub const RSA_BITS: usize = 2048;

/// How long a certificate wrapping a key in the JWKS says it is valid (the key's own life is
/// decided by rotation, not by this date).
const CERT_VALIDITY_DAYS: i64 = 3650;

/// Serializes rotations across processes (a transaction-scoped advisory lock).
const ROTATE_LOCK: &str = "keyledger.signing_keys";

#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    #[error("generating an RSA key failed: {0}")]
    Generate(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A freshly generated key, not yet stored.
pub struct NewKey {
    pub kid: String,
    /// PKCS#1 DER of the private key (plaintext: seal before storing).
    pub private_der: Vec<u8>,
    /// Its JWKS entry.
    pub jwk: Value,
}

/// Generates an RSA-2048 key, its kid and its JWKS entry. CPU-bound (tens to hundreds of ms):
/// call it off the async threads (`spawn_blocking`).
pub fn generate() -> Result<NewKey, SigningKeyError> {
    let err = |e: &dyn std::fmt::Display| SigningKeyError::Generate(e.to_string());
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS).map_err(|e| err(&e))?;
    let private_der = key.to_pkcs1_der().map_err(|e| err(&e))?.as_bytes().to_vec();
    let spki = key
        .to_public_key()
        .to_public_key_der()
        .map_err(|e| err(&e))?
        .as_bytes()
        .to_vec();
    let kid = format!("key_{}", ulid::Ulid::new());
    let cert = self_signed_certificate(&kid, &private_der, &spki, Utc::now())?;
    let jwk = json!({
        "kty": "RSA",
        "alg": "RS256",
        "use": "sig",
        "kid": kid,
        "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        "x5c": [STANDARD.encode(&cert)],
        "x5t#S256": URL_SAFE_NO_PAD.encode(Sha256::digest(&cert)),
    });
    Ok(NewKey { kid, private_der, jwk })
}

/// [`generate`] on the blocking pool.
pub async fn generate_off_thread() -> Result<NewKey, SigningKeyError> {
    tokio::task::spawn_blocking(generate)
        .await
        .map_err(|e| SigningKeyError::Generate(e.to_string()))?
}

// --- a minimal DER writer for the certificate (RFC 5280) ---

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

/// `CN=<cn>` as an X.501 Name.
fn common_name(cn: &str) -> Vec<u8> {
    const CN_OID: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    let attribute = seq(&[CN_OID, &der(0x0c, cn.as_bytes())]);
    seq(&[&der(0x31, &attribute)])
}

fn utc_time(t: DateTime<Utc>) -> Vec<u8> {
    der(0x17, t.format("%y%m%d%H%M%SZ").to_string().as_bytes())
}

/// An X.509 v3 certificate of the key, issued by and to `CN=<kid>`, signed by the key itself
/// (sha256WithRSAEncryption): what the WorkOS JWKS carries as `x5c`.
fn self_signed_certificate(
    kid: &str,
    private_pkcs1: &[u8],
    spki: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<u8>, SigningKeyError> {
    const SHA256_WITH_RSA: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
    ];
    let mut serial = [0u8; 16];
    ring::rand::SecureRandom::fill(&SystemRandom::new(), &mut serial).map_err(|_| SecretError::Random)?;
    serial[0] &= 0x7f; // positive
    serial[0] |= 0x01; // and minimally encoded (no leading zero byte)
    let name = common_name(kid);
    let validity = seq(&[
        &utc_time(now - chrono::Duration::minutes(5)),
        &utc_time(now + chrono::Duration::days(CERT_VALIDITY_DAYS)),
    ]);
    let tbs = seq(&[
        &[0xa0, 0x03, 0x02, 0x01, 0x02], // [0] version v3
        &der(0x02, &serial),
        SHA256_WITH_RSA,
        &name,
        &validity,
        &name,
        spki,
    ]);
    let pair = RsaKeyPair::from_der(private_pkcs1).map_err(|e| SigningKeyError::Generate(e.to_string()))?;
    let mut signature = vec![0u8; pair.public().modulus_len()];
    pair.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), &tbs, &mut signature)
        .map_err(|e| SigningKeyError::Generate(e.to_string()))?;
    let mut bits = vec![0u8]; // no unused bits
    bits.extend(signature);
    Ok(seq(&[&tbs, SHA256_WITH_RSA, &der(0x03, &bits)]))
}

// --- storage ---

/// A stored key as the cache needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub state: String,
    /// Sealed PKCS#1 DER (open with the master key, aad = kid).
    pub private_key: Vec<u8>,
    pub public_jwk: Value,
    pub created_at: DateTime<Utc>,
    pub retire_after: Option<DateTime<Utc>>,
}

impl StoredKey {
    pub fn is_active(&self) -> bool {
        self.state == "active"
    }

    /// The private key's PKCS#1 DER; [`SecretError::KeyChanged`] when the master key is not
    /// the one it was sealed with.
    pub fn open(&self, master: &MasterKey) -> Result<Vec<u8>, SecretError> {
        master.open(self.kid.as_bytes(), &self.private_key)
    }
}

/// The keys still published: the active one and those retiring whose overlap has not ended,
/// active first, then newest first.
pub async fn published(pool: &PgPool) -> Result<Vec<StoredKey>, sqlx::Error> {
    sqlx::query_as(
        "select kid, state, private_key, public_jwk, created_at, retire_after from signing_key \
         where state = 'active' or retire_after > now() \
         order by state = 'active' desc, created_at desc, kid desc",
    )
    .fetch_all(pool)
    .await
}

async fn has_active(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let (n,): (bool,) = sqlx::query_as("select exists (select 1 from signing_key where state = 'active')")
        .fetch_one(pool)
        .await?;
    Ok(n)
}

/// Makes sure an active key exists, generating the first one. Racing callers (other servers)
/// all end with the one key that won the unique index; returns whether this call created it.
pub async fn ensure_active(pool: &PgPool, master: &MasterKey) -> Result<bool, SigningKeyError> {
    if has_active(pool).await? {
        return Ok(false);
    }
    let key = generate_off_thread().await?;
    let sealed = master.seal(key.kid.as_bytes(), &key.private_der)?;
    let inserted = sqlx::query(
        "insert into signing_key (kid, state, private_key, public_jwk) values ($1, 'active', $2, $3) \
         on conflict do nothing",
    )
    .bind(&key.kid)
    .bind(&sealed)
    .bind(&key.jwk)
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        tracing::info!(kid = %key.kid, "created the first access-token signing key");
    }
    Ok(inserted == 1)
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rotated {
    pub kid: String,
    /// The key that was active before, now retiring until `retire_after`.
    pub retiring: Option<(String, DateTime<Utc>)>,
}

/// A new key becomes active at once; the previously active one is published (and accepted)
/// for `overlap` more, then dropped. Keys whose overlap ended are deleted for good.
pub async fn rotate(pool: &PgPool, master: &MasterKey, overlap: Duration) -> Result<Rotated, SigningKeyError> {
    let key = generate_off_thread().await?;
    let sealed = master.seal(key.kid.as_bytes(), &key.private_der)?;
    let overlap_secs = overlap.as_secs_f64();
    // A first key created lazily by a server at the same moment can take the active slot
    // between our update and insert: then demote it as well and try again.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut tx = pool.begin().await?;
        sqlx::query("select pg_advisory_xact_lock(hashtext($1))")
            .bind(ROTATE_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query("delete from signing_key where state = 'retiring' and retire_after <= now()")
            .execute(&mut *tx)
            .await?;
        let retiring: Option<(String, DateTime<Utc>)> = sqlx::query_as(
            "update signing_key set state = 'retiring', \
               retire_after = now() + make_interval(secs => $1) \
             where state = 'active' returning kid, retire_after",
        )
        .bind(overlap_secs)
        .fetch_optional(&mut *tx)
        .await?;
        let inserted =
            sqlx::query("insert into signing_key (kid, state, private_key, public_jwk) values ($1, 'active', $2, $3)")
                .bind(&key.kid)
                .bind(&sealed)
                .bind(&key.jwk)
                .execute(&mut *tx)
                .await;
        match inserted {
            Ok(_) => {
                tx.commit().await?;
                return Ok(Rotated { kid: key.kid, retiring });
            }
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() && attempts < 3 => {
                let _ = tx.rollback().await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// What `keyledger signing-keys list` shows: never private material.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyInfo {
    pub kid: String,
    /// `active`, `retiring` or `retired` (overlap over; deleted at the next rotation).
    pub state: String,
    pub created_at: DateTime<Utc>,
    pub retire_after: Option<DateTime<Utc>>,
}

pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as(
        "select kid, case when state = 'retiring' and retire_after <= now() then 'retired' else state end \
           as state, created_at, retire_after \
         from signing_key order by created_at desc, kid desc",
    )
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (header length, content length) of the TLV at the start of `b` (lengths < 64 KiB).
    fn tlv_header(b: &[u8]) -> (usize, usize) {
        match b[1] {
            l if l < 0x80 => (2, l as usize),
            0x81 => (3, b[2] as usize),
            0x82 => (4, (b[2] as usize) << 8 | b[3] as usize),
            other => panic!("length form {other:#x}"),
        }
    }

    #[test]
    fn der_lengths_use_the_short_and_long_forms() {
        assert_eq!(der(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = der(0x04, &[0u8; 300]);
        assert_eq!(&long[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn a_generated_key_has_a_jwk_whose_certificate_wraps_the_same_public_key() {
        let started = std::time::Instant::now();
        let key = generate().unwrap();
        let took = started.elapsed();
        assert!(key.kid.starts_with("key_"), "{}", key.kid);
        let jwk = &key.jwk;
        assert_eq!(jwk["kty"], "RSA");
        assert_eq!(jwk["alg"], "RS256");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["e"], "AQAB");
        let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
        assert_eq!(n.len(), 256, "2048-bit modulus");
        let cert = STANDARD.decode(jwk["x5c"][0].as_str().unwrap()).unwrap();
        assert_eq!(
            jwk["x5t#S256"].as_str().unwrap(),
            URL_SAFE_NO_PAD.encode(Sha256::digest(&cert))
        );
        assert!(
            cert.windows(n.len()).any(|w| w == &n[..]),
            "certificate lacks the modulus"
        );
        assert!(cert.windows(key.kid.len()).any(|w| w == key.kid.as_bytes()), "no CN");
        // The certificate's signature (its last 256 bytes) over the TBS part (the first
        // element of the outer sequence) verifies with the key's public half.
        let pair = RsaKeyPair::from_der(&key.private_der).unwrap();
        let (header, len) = tlv_header(&cert);
        assert_eq!((header, header + len), (4, cert.len()), "one outer sequence");
        let body = &cert[header..];
        let (tbs_header, tbs_len) = tlv_header(body);
        let tbs = &body[..tbs_header + tbs_len];
        let signature = &cert[cert.len() - 256..];
        ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, pair.public().as_ref())
            .verify(tbs, signature)
            .expect("certificate signature verifies");
        eprintln!("RSA-2048 key and certificate generated in {took:?}");
    }
}
