//! keyledger's read side: the projections that turn the log (`keyledger_store`) into read
//! models, the queries over them (lists, the public event feed, point-in-time history) and the
//! webhook endpoints' delivery state. It knows SQL and events, never HTTP.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::todo)
)]

pub mod audit;
pub mod engine;
pub mod feed;
pub mod history;
pub mod objects;
pub mod public_event;
pub mod queries;
pub mod rebuild;
pub mod webhooks;
