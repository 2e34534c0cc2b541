-- One-time codes and tokens of the sign-in flows (issue 9): Magic Auth codes, email
-- verification codes, password reset tokens, email change codes. Each issue is an event in the
-- log (aggregate `OneTimeCode`, never with the secret); the secret lives here, sealed with the
-- master key (AES-GCM, the row's id as associated data) so that `GET` can show it as WorkOS
-- does, beside what its checks need: attempts, expiry, use.
--
-- email:      the email the code is for, as given; email_key: normalized (Magic Auth looks
--             codes up by it).
-- new_email:  an email change's target, as given.
-- token_mac:  a password reset token's HMAC under a key derived from the master key: the
--             confirm request carries only the token, and this finds its row without storing
--             anything that could be replayed.
-- attempts:   every check reserves one first (`attempts < max`), so concurrent guesses never
--             get more than the limit between them.
create table one_time_code (
    id         text primary key,
    purpose    text not null check (purpose in ('magic_auth', 'email_verification', 'password_reset', 'email_change')),
    user_id    text not null,
    email      text not null,
    email_key  text not null,
    new_email  text,
    sealed     bytea not null,
    token_mac  bytea unique,
    attempts   integer not null default 0,
    expires_at timestamptz not null,
    used_at    timestamptz,
    created_at timestamptz not null default now()
);
create index one_time_code_email_idx on one_time_code (purpose, email_key, created_at desc);
create index one_time_code_user_idx on one_time_code (purpose, user_id, created_at desc);
