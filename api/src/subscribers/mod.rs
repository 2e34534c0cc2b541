//! Subscribers: durable consumers of the public event feed (DESIGN.md §4). Each keeps its own
//! checkpoint in `subscriber_checkpoint` (see `keyledger_projections::feed`) and is woken when
//! the `events` projection moves, with a slow poll as a fallback for other processes' writes.

pub mod nats;

use keyledger_store::checkpoint::Progress;
use keyledger_store::commands::CommandBus;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Config;

pub mod webhooks;

/// What a subscriber task needs from the process.
#[derive(Clone)]
pub struct Context {
    pub pool: PgPool,
    /// Projection checkpoints as this process sees them; the feed moves with `events`.
    pub progress: Progress,
    /// The process's command bus (the dispatcher records an automatic disable through it).
    pub bus: CommandBus,
    pub config: Config,
    /// Turns true when the process stops: finish the current delivery, then return.
    pub shutdown: watch::Receiver<bool>,
}

/// Starts every configured subscriber.
pub fn spawn(ctx: &Context) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(webhooks::run(ctx.clone()))];
    if let Some(cfg) = ctx.config.nats.clone() {
        tasks.push(tokio::spawn(nats::run(ctx.clone(), cfg)));
    }
    tasks
}
