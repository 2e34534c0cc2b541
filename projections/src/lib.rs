//! keyledger's read side: the projections that turn the log (`keyledger_store`) into read
//! models, the queries over them (lists, the public event feed, point-in-time history) and the
//! webhook endpoints' delivery state. It knows SQL and events, never HTTP.

// The workspace lint table denies these everywhere (tests may, see clippy.toml); the crate
// states it too, so the rule is visible where the code is.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod audit;
pub mod engine;
mod event_list;
pub mod feed;
pub mod history;
pub mod objects;
pub mod public_event;
pub mod queries;
pub mod rebuild;
pub mod tenant_reads;
pub mod webhooks;
