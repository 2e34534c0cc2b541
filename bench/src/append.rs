//! Appends: one `UserCreated` per command through keyledger's `CommandBus` (load, decide, append
//! with the email claim), against stock postgres-es running the same `User` aggregate and command
//! through `CqrsFramework` on its own schema, and against a pgbench single-row insert.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::CqrsFramework;
use keyledger_domain::ids::new_id;
use keyledger_domain::user::{CreateUser, User, UserCommand};
use keyledger_domain::values::{Email, Metadata};
use keyledger_domain::NoServices;
use keyledger_store::append::SideRows;
use keyledger_store::commands::{CommandBus, Mode};
use keyledger_store::EventStore;
use postgres_es::PostgresEventRepository;
use sqlx::PgPool;

use crate::load::{closed_loop, Stats};
use crate::report::Row;
use crate::support::Bench;

/// The schema postgres-es expects, as in its `db/init.sql` (events and snapshots tables).
const POSTGRES_ES_SCHEMA: &str = "\
create table events (
    aggregate_type text not null,
    aggregate_id   text not null,
    sequence       bigint check (sequence >= 0) not null,
    event_type     text not null,
    event_version  text not null,
    payload        json not null,
    metadata       json not null,
    primary key (aggregate_type, aggregate_id, sequence)
);
create table snapshots (
    aggregate_type   text not null,
    aggregate_id     text not null,
    last_sequence    bigint check (last_sequence >= 0) not null,
    current_snapshot bigint check (current_snapshot >= 0) not null,
    payload          json not null,
    primary key (aggregate_type, aggregate_id, last_sequence)
);";

/// A new user with a unique email (the id doubles as the local part).
pub fn create_command(id: &str) -> anyhow::Result<UserCommand> {
    Ok(UserCommand::Create(CreateUser {
        email: Email::parse("email", &format!("{}@bench.example.com", id.to_lowercase()))
            .context("building an email")?,
        first_name: None,
        last_name: None,
        name: None,
        email_verified: false,
        external_id: None,
        metadata: Metadata::new(),
        with_password: false,
        at: chrono::Utc::now(),
    }))
}

/// Metadata like the API records on every event (actor, request id, IP, time).
pub fn request_metadata() -> HashMap<String, String> {
    HashMap::from([
        ("actor_id".to_string(), "key_01M8DKYRS3ERZQ97DX7Y9214Y6".to_string()),
        ("actor_name".to_string(), "bench".to_string()),
        ("ip".to_string(), "127.0.0.1".to_string()),
        ("request_id".to_string(), ulid::Ulid::new().to_string()),
        (
            "occurred_at".to_string(),
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    ])
}

/// keyledger: `CommandBus::execute::<User>` creating users, `writers` at a time.
pub async fn keyledger(bus: &CommandBus, writers: usize, warmup: Duration, window: Duration) -> anyhow::Result<Stats> {
    let bus = bus.clone();
    closed_loop(writers, warmup, window, move |_, _| {
        let bus = bus.clone();
        async move {
            let id = new_id("user");
            let cmd = create_command(&id)?;
            bus.execute::<User>(&id, cmd, &request_metadata(), SideRows::default(), Mode::Once)
                .await
                .context("CommandBus::execute")?;
            Ok(())
        }
    })
    .await
}

type StockCqrs = CqrsFramework<User, PersistedEventStore<PostgresEventRepository, User>>;

/// Stock postgres-es: the same aggregate and command through `CqrsFramework`.
pub async fn postgres_es(pool: &PgPool, writers: usize, warmup: Duration, window: Duration) -> anyhow::Result<Stats> {
    let store = PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
    let cqrs: Arc<StockCqrs> = Arc::new(CqrsFramework::new(store, vec![], NoServices));
    closed_loop(writers, warmup, window, move |_, _| {
        let cqrs = cqrs.clone();
        async move {
            let id = new_id("user");
            let cmd = create_command(&id)?;
            cqrs.execute_with_metadata(&id, cmd, request_metadata())
                .await
                .context("CqrsFramework::execute_with_metadata")?;
            Ok(())
        }
    })
    .await
}

/// The stage: 1 and 8 writers, each against pgbench insert and stock postgres-es.
pub async fn run(b: &mut Bench) -> anyhow::Result<()> {
    let kl_url = b.create_database("append").await?;
    let kl_pool = keyledger_api::connect(&kl_url).await?;
    keyledger_api::migrate(&kl_pool).await?;
    let bus = CommandBus::new(EventStore::new(kl_pool.clone()));

    let stock_url = b.create_database("postgres_es").await?;
    let stock_pool = keyledger_api::connect(&stock_url).await?;
    sqlx::raw_sql(POSTGRES_ES_SCHEMA)
        .execute(&stock_pool)
        .await
        .context("creating the postgres-es schema")?;

    for writers in [1usize, 8] {
        eprintln!("  keyledger CommandBus, {writers} writer(s)...");
        let kl = keyledger(&bus, writers, b.warmup, b.window).await?;
        eprintln!("  stock postgres-es, {writers} writer(s)...");
        let stock = postgres_es(&stock_pool, writers, b.warmup, b.window).await?;
        let pg = b.insert_baseline(writers).await?;
        let stage = format!("append, {writers} writer{}", if writers == 1 { "" } else { "s" });
        let (pg_text, pg_tps) = match &pg {
            Some(r) => (
                format!(
                    "pgbench insert `-c {writers}`: {:.0} tps ({:.2} ms avg)",
                    r.tps, r.latency_ms
                ),
                Some(r.tps),
            ),
            None => (b.pgbench_note.clone().unwrap_or_else(|| "skipped".into()), None),
        };
        b.rows.push(Row::versus(
            stage.clone(),
            kl.summary("cmd"),
            kl.rate(),
            pg_text,
            pg_tps,
            (writers == 8).then_some(0.8),
        ));
        b.rows.push(Row::versus(
            stage,
            kl.summary("cmd"),
            kl.rate(),
            format!("stock postgres-es: {}", stock.summary("cmd")),
            Some(stock.rate()),
            Some(2.0),
        ));
    }
    kl_pool.close().await;
    stock_pool.close().await;
    Ok(())
}
