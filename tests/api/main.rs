//! HTTP integration tests: every test gets a fresh database on the PostgreSQL named by
//! `DATABASE_URL` (scripts/test.sh starts a throwaway one) and a server on port 0.

// clippy.toml exempts `#[test]` functions only; the helpers here fail a test the same way.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking, helpers included"
)]

mod dns_server;
mod helpers;
mod pages;
mod smtp;

mod api_keys;
mod as_of;
mod audit_logs;
mod authenticate;
mod bad_input;
mod binary;
mod cascade;
mod codes;
mod connections;
mod contract;
mod events;
mod events_cursor;
mod group_commit;
mod hosted;
mod idempotency;
mod invitations;
mod jit;
mod log_properties;
mod mail;
mod memberships;
mod metrics;
mod nats;
mod openapi;
mod organization_domains;
mod organizations;
mod outage;
mod passwords;
mod policy;
mod portal;
mod protocol;
mod rate_limits;
mod saml;
mod sso;
mod stored_versions;
mod stream;
mod tenant_tokens;
mod tokens;
mod users;
mod webhooks;
