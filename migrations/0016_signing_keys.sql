-- Settings this deployment fixes once (api/src/tokens.rs, api/src/secrets.rs): the generated
-- client id, and a value sealed with the master key that tells at start-up whether the
-- configured key is the one this database's secrets were sealed with. Rows are inserted with
-- `on conflict do nothing` and read back, so concurrent first starts agree.
create table setting (
    name text primary key,
    value text not null,
    created_at timestamptz not null default now()
);

-- The access tokens' signing keys (api/src/signing_keys.rs). Not events: key material is not
-- part of the identity history, and a private key must be deletable for good.
--   private_key  PKCS#1 DER of the RSA key, sealed with the master key (AES-256-GCM, aad = kid)
--   public_jwk   the JWKS entry (kty, n, e, kid, alg, use, x5c, x5t#S256), in clear
--   state        active: signs new tokens (at most one); retiring: still published (and
--                accepted) until retire_after, signs nothing
create table signing_key (
    kid text primary key,
    state text not null check (state in ('active', 'retiring')),
    private_key bytea not null,
    public_jwk jsonb not null,
    created_at timestamptz not null default now(),
    retire_after timestamptz,
    check ((state = 'retiring') = (retire_after is not null))
);

-- At most one active key: two servers racing to create the first key end with one.
create unique index signing_key_one_active on signing_key ((true)) where state = 'active';
