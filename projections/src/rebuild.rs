//! `projections rebuild`: replays the whole log into fresh copies of projections' tables and
//! swaps them in, with the checkpoints, under the checkpoint locks (live workers pause for the
//! swap only).
//!
//! One read of the log feeds every projection being rebuilt. The fresh tables start without
//! indexes; rows go in with `COPY`, streamed from the read as it goes (public events, audit
//! rows) or written once at the end (documents, webhook endpoints: a user updated five times
//! is one row, folded in memory). Indexes are built once, after the data, with the names the
//! migrations gave them. Documents are kept in memory up to [`Options::max_docs`]; past that
//! they are written out (the primary keys are built then, so later events can load them back),
//! which bounds memory on any log. The last events, those appended during the build, are
//! applied by the live path (`Projection::apply_batch`) inside the swap transaction.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use keyledger_domain::audit_log::{AuditLogActionEvent, AuditLogExportEvent};
use keyledger_domain::webhook::WebhookEndpointEvent;
use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::engine::{self, Projection};
use crate::objects::{self, Change, Docs, Kind};
use crate::public_event::PublicEvent;
use keyledger_store::checkpoint;
use keyledger_store::decode::{decode_text, AnyEvent};
use keyledger_store::log::{self, LogPosition, StoredEvent};
use keyledger_store::StorageError;

/// Schema where rebuilds build fresh tables before swapping them in.
pub const SCHEMA: &str = "keyledger_rebuild";
/// Events per read when catching up inside the swap transaction.
const TAIL_BATCH: i64 = 5_000;
/// COPY data buffered per table before it is sent.
const CHUNK: usize = 1 << 18;
/// Index builds running at once, each on its own connection.
const INDEX_BUILDS: usize = 2;

/// How a rebuild runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Documents (users, organizations, domains, memberships) kept in memory before they are
    /// written out: about 3 KB each as JSON values (a rebuild that held 250,000 peaked at 1.6 GB
    /// of process memory). The default, 500,000, folds a log of 10^6 events like the growth
    /// stage's (251,000 documents) without writing any out.
    pub max_docs: usize,
    /// Events per read of the log.
    pub read_batch: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_docs: 500_000,
            read_batch: 10_000,
        }
    }
}

/// Rebuilds `projections` from one read of the log (see the module doc) and swaps their tables
/// in together. `on_progress(done, total)` counts the events replayed (those of the aggregate
/// types the projections consume). Returns how many events of the log the rebuild covered.
pub async fn rebuild_all(
    pool: &PgPool,
    projections: &[Projection],
    on_progress: impl FnMut(u64, u64),
) -> Result<u64, StorageError> {
    rebuild_with(pool, projections, &Options::default(), on_progress).await
}

/// [`rebuild_all`] with explicit [`Options`].
pub async fn rebuild_with(
    pool: &PgPool,
    projections: &[Projection],
    options: &Options,
    mut on_progress: impl FnMut(u64, u64),
) -> Result<u64, StorageError> {
    let selected: Vec<Projection> = engine::ALL
        .into_iter()
        .filter(|p| projections.iter().any(|q| q.name == p.name))
        .collect();
    if selected.is_empty() {
        return Ok(0);
    }
    let opts = pool.connect_options();
    let mut conn = connect(&opts).await?;
    sqlx::query(&format!("create schema if not exists {SCHEMA}"))
        .execute(&mut conn)
        .await?;
    let mut tables = Vec::new();
    for p in &selected {
        for t in p.tables() {
            sqlx::query(&format!("drop table if exists {SCHEMA}.{t}"))
                .execute(&mut conn)
                .await?;
            sqlx::query(&format!(
                "create table {SCHEMA}.{t} (like public.{t} including all excluding indexes)"
            ))
            .execute(&mut conn)
            .await?;
            tables.push(Table {
                name: t,
                indexes: Index::of(&mut conn, t).await?,
            });
        }
    }
    // Everything up to the head now is final: the build reads up to there, only the aggregate
    // types the projections consume; the swap catches up what comes after.
    let head = log::head(&mut conn).await?;
    let targets = Targets::of(&selected);
    let types = targets.aggregate_types();
    let (mut log_events, mut total) = (0u64, 0u64);
    for (t, n) in log::count_by_type(&mut conn, head).await? {
        let n = u64::try_from(n).unwrap_or(0);
        log_events += n;
        if types.contains(&t.as_str()) {
            total += n;
        }
    }
    on_progress(0, total);

    let started = std::time::Instant::now();
    let mut build = Build::new(targets, opts.clone(), options.max_docs, tables).await?;
    let (mut batches, reader) = spawn_reader(connect(&opts).await?, types, head, options.read_batch.max(1));
    let mut done: u64 = 0;
    while let Some(batch) = batches.recv().await {
        let batch = batch?;
        done += batch.len() as u64;
        build.apply(batch).await?;
        on_progress(done, total.max(done));
    }
    reader
        .await
        .map_err(|e| StorageError::Other(format!("log reader: {e}")))??;
    tracing::debug!(elapsed = ?started.elapsed(), events = done, "rebuild: log read and folded");
    let tables = build.finish().await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: rows written");
    build_indexes(&opts, &tables, |_, _| true).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: indexes built");
    conn.close().await?;

    // Swap: catch up the last events and exchange the tables atomically.
    let mut cp = head;
    let mut tx = pool.begin().await?;
    for p in &selected {
        checkpoint::lock(&mut *tx, p.name).await?;
    }
    loop {
        let events = engine::whole_transactions(log::read_after(&mut *tx, cp, TAIL_BATCH).await?, TAIL_BATCH);
        let Some(last) = events.last().map(|e| e.log_position) else {
            break;
        };
        for p in &selected {
            p.apply_batch(&mut tx, SCHEMA, &events).await?;
        }
        cp = last;
        log_events += events.len() as u64;
    }
    for t in &tables {
        let names = index_names(&mut tx, t.name).await?;
        let security = RowSecurity::read(&mut tx, t.name).await?;
        sqlx::query(&format!("drop table public.{}", t.name))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("alter table {SCHEMA}.{} set schema public", t.name))
            .execute(&mut *tx)
            .await?;
        restore_index_names(&mut tx, t.name, &names).await?;
        security.apply(&mut tx, t.name).await?;
    }
    for p in &selected {
        checkpoint::store(&mut *tx, p.name, cp).await?;
    }
    tx.commit().await?;
    tracing::debug!(elapsed = ?started.elapsed(), "rebuild: swapped in");
    on_progress(done, total.max(done));
    Ok(log_events)
}

/// A connection of the rebuild's own (not the pool's: its session settings die with it).
/// Commits need not wait for their WAL flush: a crash loses an unfinished rebuild anyway.
async fn connect(opts: &PgConnectOptions) -> Result<PgConnection, StorageError> {
    let mut conn = PgConnection::connect_with(opts).await?;
    sqlx::query("set synchronous_commit = off").execute(&mut conn).await?;
    Ok(conn)
}

/// Which projections a rebuild feeds.
#[derive(Debug, Clone, Copy, Default)]
struct Targets {
    users: bool,
    organizations: bool,
    memberships: bool,
    events: bool,
    audit: bool,
    webhooks: bool,
    sessions: bool,
    invitations: bool,
    connections: bool,
}

impl Targets {
    fn of(selected: &[Projection]) -> Self {
        let has = |p: Projection| selected.iter().any(|s| s.name == p.name);
        Self {
            users: has(engine::USERS),
            organizations: has(engine::ORGANIZATIONS),
            memberships: has(engine::MEMBERSHIPS),
            events: has(engine::EVENTS),
            audit: has(engine::AUDIT_LOGS),
            webhooks: has(engine::WEBHOOKS),
            sessions: has(engine::SESSIONS),
            invitations: has(engine::INVITATIONS),
            connections: has(engine::CONNECTIONS),
        }
    }

    fn projections(&self) -> Vec<Projection> {
        let flags = [
            self.users,
            self.organizations,
            self.memberships,
            self.events,
            self.audit,
            self.webhooks,
            self.sessions,
            self.invitations,
            self.connections,
        ];
        engine::ALL
            .into_iter()
            .zip(flags)
            .filter_map(|(p, f)| f.then_some(p))
            .collect()
    }

    /// The aggregate types the projections consume.
    fn aggregate_types(&self) -> Vec<&'static str> {
        let mut types: Vec<&'static str> = self
            .projections()
            .iter()
            .flat_map(|p| p.aggregate_types().iter().copied())
            .collect();
        types.sort_unstable();
        types.dedup();
        types
    }

    /// Whether the document table of `kind` (its own projection's) is rebuilt.
    fn own_table(&self, kind: Kind) -> bool {
        match kind {
            Kind::User => self.users,
            Kind::Organization | Kind::OrganizationDomain | Kind::OrganizationPolicy => self.organizations,
            Kind::Membership => self.memberships,
            Kind::Session => self.sessions,
            Kind::Authentication | Kind::OneTimeCode => false,
            Kind::Invitation => self.invitations,
            Kind::Connection => self.connections,
        }
    }

    /// Whether the documents of an aggregate type are folded (for a document table or the feed).
    fn folds(&self, aggregate_type: &str) -> bool {
        let kind = match aggregate_type {
            "User" => Kind::User,
            "Organization" => Kind::Organization,
            "OrganizationMembership" => Kind::Membership,
            "Session" => Kind::Session,
            "Authentication" | "OneTimeCode" => return self.events,
            "Invitation" => Kind::Invitation,
            "Connection" => Kind::Connection,
            _ => return false,
        };
        self.events || self.own_table(kind)
    }

    /// The tables a document of `kind` is written to: `(table, with a kind column)`.
    fn doc_tables(&self, kind: Kind) -> impl Iterator<Item = (&'static str, bool)> {
        let own = self.own_table(kind).then_some((engine::doc_table(kind), false));
        let feed = self.events.then_some(("feed_object", true));
        own.into_iter().chain(feed)
    }
}

/// A table being rebuilt and the indexes it will get.
struct Table {
    name: &'static str,
    indexes: Vec<Index>,
}

/// An index of a table in `public`, to be built on its fresh copy under the same name.
struct Index {
    name: String,
    unique: bool,
    /// The definition after `USING` (method, columns, predicate).
    using: String,
    /// The constraint the index backs: (name, type `p`/`u`/`x`, definition).
    constraint: Option<(String, String, String)>,
    built: bool,
}

impl Index {
    async fn of(conn: &mut PgConnection, table: &str) -> Result<Vec<Index>, StorageError> {
        // (index, unique, definition, constraint, constraint type, constraint definition)
        type IndexRow = (String, bool, String, Option<String>, Option<String>, Option<String>);
        let rows: Vec<IndexRow> = sqlx::query_as(
            "select i.relname::text, x.indisunique, pg_get_indexdef(x.indexrelid), c.conname::text, c.contype::text, \
             pg_get_constraintdef(c.oid) from pg_index x join pg_class i on i.oid = x.indexrelid \
             left join pg_constraint c on c.conindid = x.indexrelid and c.conrelid = x.indrelid \
               and c.contype in ('p', 'u', 'x') \
             where x.indrelid = ('public.' || $1)::regclass order by 1",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        rows.into_iter()
            .map(|(name, unique, def, conname, contype, condef)| {
                let using = def
                    .split_once(" USING ")
                    .map(|(_, u)| u.to_string())
                    .ok_or_else(|| StorageError::Other(format!("index {name}: unexpected definition {def}")))?;
                let constraint = match (conname, contype, condef) {
                    (Some(n), Some(t), Some(d)) => Some((n, t, d)),
                    _ => None,
                };
                Ok(Index {
                    name,
                    unique,
                    using,
                    constraint,
                    built: false,
                })
            })
            .collect()
    }

    /// Builds the index (and its constraint) on `SCHEMA.table`.
    async fn build(&self, conn: &mut PgConnection, table: &str) -> Result<(), StorageError> {
        if let Some((conname, kind, def)) = &self.constraint {
            if kind == "x" {
                // An exclusion constraint builds its own index.
                sqlx::query(&format!(
                    "alter table {SCHEMA}.{table} add constraint \"{conname}\" {def}"
                ))
                .execute(&mut *conn)
                .await?;
                return Ok(());
            }
        }
        let create = format!(
            "create {}index \"{}\" on {SCHEMA}.{table} using {}",
            if self.unique { "unique " } else { "" },
            self.name,
            self.using
        );
        match sqlx::query(&create).execute(&mut *conn).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") && table == "audit_log_event" => {
                // The live projection skips an audit row whose id it already has; so does a
                // rebuild, here, in the rare log that has one twice: the first in log order stays.
                sqlx::query(&format!(
                    "delete from {SCHEMA}.audit_log_event a using {SCHEMA}.audit_log_event b \
                     where a.id = b.id and (a.transaction_id, a.position) > (b.transaction_id, b.position)"
                ))
                .execute(&mut *conn)
                .await?;
                sqlx::query(&create).execute(&mut *conn).await?;
            }
            other => {
                other?;
            }
        }
        if let Some((conname, kind, _)) = &self.constraint {
            let what = if kind == "p" { "primary key" } else { "unique" };
            sqlx::query(&format!(
                "alter table {SCHEMA}.{table} add constraint \"{conname}\" {what} using index \"{}\"",
                self.name
            ))
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }
}

/// Builds every index not built yet. (The tables are not analyzed: sampling them costs as much
/// as a third of the rebuild, the index builds give the planner their sizes, and autovacuum
/// analyzes them soon after the swap.)
async fn build_indexes(
    opts: &Arc<PgConnectOptions>,
    tables: &[Table],
    which: impl Fn(&Table, &Index) -> bool,
) -> Result<(), StorageError> {
    let mut conn = connect(opts).await?;
    // Largest tables first, so the last builds to finish are short ones.
    let mut sized = Vec::new();
    for t in tables {
        let (bytes,): (i64,) = sqlx::query_as("select pg_relation_size(($1 || '.' || $2)::regclass)")
            .bind(SCHEMA)
            .bind(t.name)
            .fetch_one(&mut conn)
            .await?;
        sized.push((bytes, t));
    }
    sized.sort_by_key(|(bytes, _)| std::cmp::Reverse(*bytes));
    let jobs: std::collections::VecDeque<(&str, &Index)> = sized
        .iter()
        .flat_map(|(_, t)| {
            t.indexes
                .iter()
                .filter(|i| !i.built && which(t, i))
                .map(move |i| (t.name, i))
        })
        .collect();
    let jobs = tokio::sync::Mutex::new(jobs);
    let mut workers = vec![conn];
    for _ in 1..INDEX_BUILDS {
        workers.push(connect(opts).await?);
    }
    futures::future::try_join_all(workers.into_iter().map(|mut conn| {
        let jobs = &jobs;
        async move {
            // Builds run side by side already: no parallel workers within one.
            sqlx::raw_sql("set maintenance_work_mem = '256MB'; set max_parallel_maintenance_workers = 0")
                .execute(&mut conn)
                .await?;
            loop {
                let Some((table, index)) = jobs.lock().await.pop_front() else {
                    break;
                };
                let started = std::time::Instant::now();
                index.build(&mut conn, table).await?;
                tracing::debug!(table, index = index.name, elapsed = ?started.elapsed(), "rebuild: index built");
            }
            conn.close().await?;
            Ok::<_, StorageError>(())
        }
    }))
    .await?;
    Ok(())
}

type Batch = Vec<(StoredEvent, AnyEvent)>;
/// The reader's batches (an error ends them) and its task.
type Reader = (
    mpsc::Receiver<Result<Batch, StorageError>>,
    JoinHandle<Result<(), StorageError>>,
);

/// Reads the log up to `head` on its own connection, only the events of `types`, and decodes
/// them, a batch ahead of the build.
fn spawn_reader(mut conn: PgConnection, types: Vec<&'static str>, head: LogPosition, read_batch: i64) -> Reader {
    let (tx, rx) = mpsc::channel(2);
    let handle = tokio::spawn(async move {
        let mut cp = LogPosition::START;
        loop {
            let events = match log::read_range_of_types(&mut conn, cp, head, &types, read_batch).await {
                Ok(events) => events,
                Err(e) => {
                    let _ = tx.send(Err(e.into())).await;
                    break;
                }
            };
            let Some(last) = events.last().map(|(e, _)| e.log_position) else {
                break;
            };
            cp = last;
            let batch: Result<Batch, StorageError> = events
                .into_iter()
                .map(
                    |(e, payload)| match decode_text(&e.aggregate_type, &e.event_type, &e.event_version, &payload) {
                        Ok(t) => Ok((e, t)),
                        Err(message) => Err(StorageError::Decode {
                            event_id: e.id.clone(),
                            message,
                        }),
                    },
                )
                .collect();
            let stop = batch.is_err();
            if tx.send(batch).await.is_err() || stop {
                break;
            }
        }
        conn.close().await?;
        Ok(())
    });
    (rx, handle)
}

/// `COPY ... from stdin` into a fresh table, on its own connection, fed in chunks of whole rows
/// (one statement per chunk).
struct CopyStream {
    buf: CopyBuf,
    tx: Option<mpsc::Sender<Vec<u8>>>,
    task: JoinHandle<Result<u64, StorageError>>,
}

impl CopyStream {
    fn spawn(opts: &Arc<PgConnectOptions>, table: &str, columns: &str) -> Self {
        let statement = format!("copy {SCHEMA}.{table} ({columns}) from stdin");
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(4);
        let opts = opts.clone();
        let task = tokio::spawn(async move {
            let mut conn = connect(&opts).await?;
            let mut rows = 0;
            // One short `COPY` (one transaction) per chunk, never one for the whole build: the
            // log's read horizon is the oldest transaction running anywhere in the cluster, so
            // a transaction held open through the build would hide every event appended
            // meanwhile from the live workers until it ended.
            while let Some(chunk) = rx.recv().await {
                let mut copy = conn.copy_in_raw(&statement).await?;
                copy.send(chunk).await?;
                rows += copy.finish().await?;
            }
            conn.close().await?;
            Ok(rows)
        });
        Self {
            buf: CopyBuf::default(),
            tx: Some(tx),
            task,
        }
    }

    /// Sends the buffered rows once there are enough of them.
    async fn send_full(&mut self) -> Result<(), StorageError> {
        if self.buf.0.len() >= CHUNK {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), StorageError> {
        if self.buf.0.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf.0, Vec::with_capacity(CHUNK + CHUNK / 4));
        let sent = match &self.tx {
            Some(tx) => tx.send(chunk).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        // The COPY has stopped: its error says why.
        self.tx = None;
        match (&mut self.task).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(StorageError::Other("COPY ended early".into())),
            Err(e) => Err(StorageError::Other(format!("COPY task: {e}"))),
        }
    }

    /// Sends the rest and ends the COPY; returns the rows copied.
    async fn finish(mut self) -> Result<u64, StorageError> {
        self.send().await?;
        self.tx = None;
        self.task
            .await
            .map_err(|e| StorageError::Other(format!("COPY task: {e}")))?
    }
}

/// Rows in `COPY`'s text format.
#[derive(Default)]
struct CopyBuf(Vec<u8>);

impl CopyBuf {
    fn sep(&mut self) {
        if !matches!(self.0.last(), None | Some(b'\n')) {
            self.0.push(b'\t');
        }
    }

    fn text(&mut self, s: &str) -> &mut Self {
        self.bytes(s.as_bytes())
    }

    fn opt(&mut self, s: Option<&str>) -> &mut Self {
        match s {
            Some(s) => self.text(s),
            None => {
                self.sep();
                self.0.extend_from_slice(b"\\N");
                self
            }
        }
    }

    fn int(&mut self, n: i64) -> &mut Self {
        use std::io::Write;
        self.sep();
        // Writing to a Vec cannot fail.
        let _ = write!(self.0, "{n}");
        self
    }

    /// A timestamp to the microsecond, truncated (as sqlx binds one).
    fn time(&mut self, at: &DateTime<Utc>) -> &mut Self {
        self.text(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    /// A value as JSON, serialized in place.
    fn json(&mut self, v: &impl serde::Serialize) -> Result<&mut Self, StorageError> {
        self.sep();
        let start = self.0.len();
        serde_json::to_writer(&mut self.0, v).map_err(|e| StorageError::Other(format!("serializing a row: {e}")))?;
        // JSON text has no raw tab or line break; a backslash (an escape in a string) is the
        // one byte COPY reserves that it may hold.
        if self.0[start..].contains(&b'\\') {
            let raw = self.0.split_off(start);
            escape_into(&mut self.0, &raw);
        }
        Ok(self)
    }

    /// Unescaped bytes (UTF-8 text) as a field.
    fn bytes(&mut self, raw: &[u8]) -> &mut Self {
        self.sep();
        escape_into(&mut self.0, raw);
        self
    }

    /// A `text[]` literal.
    fn array(&mut self, items: &[String]) -> &mut Self {
        let mut lit = String::from("{");
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                lit.push(',');
            }
            lit.push('"');
            for ch in item.chars() {
                if ch == '"' || ch == '\\' {
                    lit.push('\\');
                }
                lit.push(ch);
            }
            lit.push('"');
        }
        lit.push('}');
        self.text(&lit)
    }

    fn end(&mut self) {
        self.0.push(b'\n');
    }
}

/// Escapes a value for `COPY`'s text format: backslash, tab, newline and carriage return.
fn escape_into(out: &mut Vec<u8>, s: &[u8]) {
    if !s.iter().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.extend_from_slice(s);
        return;
    }
    for &b in s {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

fn key_hash(kind: Kind, id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    kind.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

/// A public event waiting for the end of its command (the objects as they are after it).
struct PendingEvent {
    id: String,
    position: LogPosition,
    organization_id: Option<String>,
    recorded_at: DateTime<Utc>,
    metadata: Value,
    change: Change,
}

/// The public events of one command (same transaction and aggregate), as the live projection
/// groups them.
#[derive(Default)]
struct Group {
    key: Option<(i64, String)>,
    /// The documents as they were before the command (a handful: a list beats a map).
    before: Vec<((Kind, String), Option<Value>)>,
    events: Vec<PendingEvent>,
}

impl Group {
    fn has(&self, key: &(Kind, String)) -> bool {
        self.before.iter().any(|(k, _)| k == key)
    }

    fn before(&self, key: &(Kind, String)) -> Option<&Value> {
        self.before.iter().find(|(k, _)| k == key).and_then(|(_, v)| v.as_ref())
    }
}

/// A webhook endpoint row.
struct Endpoint {
    endpoint_url: String,
    events: Vec<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    created: LogPosition,
}

/// The state of a rebuild between batches.
struct Build {
    targets: Targets,
    opts: Arc<PgConnectOptions>,
    /// For loading documents back and writing them again once they have been written out.
    conn: PgConnection,
    max_docs: usize,
    tables: Vec<Table>,
    docs: Docs,
    /// Hashes of the documents written out so far: one whose hash is not here is in no table.
    written: HashSet<u64>,
    group: Group,
    /// A scratch document key (looked up without allocating one per public event).
    key: (Kind, String),
    feed: Option<CopyStream>,
    /// The latest `created_at` along the feed so far: each row's `created_at_max` (migration 0013).
    feed_max: Option<DateTime<Utc>>,
    audit_events: Option<CopyStream>,
    audit_schemas: Option<CopyStream>,
    audit_exports: Option<CopyStream>,
    schema_keys: HashSet<(String, i32)>,
    export_ids: HashSet<String>,
    endpoints: HashMap<String, Endpoint>,
    deleted_endpoints: Vec<String>,
}

impl Build {
    async fn new(
        targets: Targets,
        opts: Arc<PgConnectOptions>,
        max_docs: usize,
        tables: Vec<Table>,
    ) -> Result<Self, StorageError> {
        let conn = connect(&opts).await?;
        let stream = |on: bool, table: &str, columns: &str| on.then(|| CopyStream::spawn(&opts, table, columns));
        Ok(Self {
            feed: stream(
                targets.events,
                "event_feed",
                "id, transaction_id, position, seq, event, organization_id, created_at, created_at_max, body",
            ),
            feed_max: None,
            audit_events: stream(
                targets.audit,
                "audit_log_event",
                "id, organization_id, transaction_id, position, action, actor_id, actor_name, target_types, \
                 occurred_at, body",
            ),
            audit_schemas: stream(targets.audit, "audit_log_schema", "action, version, created_at, body"),
            audit_exports: stream(
                targets.audit,
                "audit_log_export",
                "id, organization_id, transaction_id, position, filter, created_at",
            ),
            targets,
            opts,
            conn,
            max_docs,
            tables,
            docs: Docs::new(),
            written: HashSet::new(),
            group: Group::default(),
            key: (Kind::User, String::new()),
            schema_keys: HashSet::new(),
            export_ids: HashSet::new(),
            endpoints: HashMap::new(),
            deleted_endpoints: Vec::new(),
        })
    }

    async fn apply(&mut self, batch: Batch) -> Result<(), StorageError> {
        self.load_written(&batch).await?;
        for (e, typed) in batch {
            if self.targets.audit {
                self.audit(&e, &typed)?;
            }
            if self.targets.webhooks {
                if let AnyEvent::WebhookEndpoint(w) = &typed {
                    self.webhook(&e, w);
                }
            }
            if self.targets.folds(&e.aggregate_type) {
                self.fold(e, &typed)?;
            }
        }
        for s in [
            &mut self.feed,
            &mut self.audit_events,
            &mut self.audit_schemas,
            &mut self.audit_exports,
        ]
        .into_iter()
        .flatten()
        {
            s.send_full().await?;
        }
        if self.docs.len() > self.max_docs {
            let started = std::time::Instant::now();
            let docs = self.docs.len();
            // The command still open (its public events are written when it ends, with the
            // documents as they are then) keeps its documents in memory: one it changed but did
            // not read (an `authentication` attempt's) would not be loaded back.
            let open: Vec<((Kind, String), Option<Value>)> = self
                .group
                .events
                .iter()
                .map(|p| (p.change.kind, p.change.id.clone()))
                .filter_map(|k| self.docs.get(&k).cloned().map(|v| (k, v)))
                .collect();
            self.write_docs(false).await?;
            self.docs.extend(open);
            tracing::debug!(docs, elapsed = ?started.elapsed(), "rebuild: documents written out");
        }
        Ok(())
    }

    /// Loads the documents this batch needs that were written out earlier.
    async fn load_written(&mut self, batch: &Batch) -> Result<(), StorageError> {
        if self.written.is_empty() {
            return Ok(());
        }
        let mut want: HashMap<Kind, HashSet<String>> = HashMap::new();
        for (e, typed) in batch {
            if !self.targets.folds(&e.aggregate_type) {
                continue;
            }
            for key in objects::needs(&e.aggregate_id, typed) {
                if !self.docs.contains_key(&key) && self.written.contains(&key_hash(key.0, &key.1)) {
                    want.entry(key.0).or_default().insert(key.1);
                }
            }
        }
        for (kind, ids) in want {
            let ids: Vec<String> = ids.into_iter().collect();
            let rows: Vec<(String, Value)> = if self.targets.own_table(kind) {
                sqlx::query_as(&format!(
                    "select id, body from {SCHEMA}.{} where id = any($1)",
                    engine::doc_table(kind)
                ))
                .bind(&ids)
                .fetch_all(&mut self.conn)
                .await?
            } else {
                sqlx::query_as(&format!(
                    "select id, body from {SCHEMA}.feed_object where kind = $1 and id = any($2)"
                ))
                .bind(kind.as_str())
                .bind(&ids)
                .fetch_all(&mut self.conn)
                .await?
            };
            let mut found: HashMap<String, Value> = rows.into_iter().collect();
            for id in ids {
                let body = found.remove(&id);
                self.docs.insert((kind, id), body);
            }
        }
        Ok(())
    }

    /// Folds an event into the documents and, for the feed, its public event.
    fn fold(&mut self, e: StoredEvent, typed: &AnyEvent) -> Result<(), StorageError> {
        if !self.targets.events {
            objects::apply(&e.aggregate_id, typed, &mut self.docs);
            return Ok(());
        }
        let same = self
            .group
            .key
            .as_ref()
            .is_some_and(|(t, a)| *t == e.log_position.transaction_id && *a == e.aggregate_id);
        if !same {
            self.end_group()?;
            self.group.key = Some((e.log_position.transaction_id, e.aggregate_id.clone()));
        }
        for key in objects::needs(&e.aggregate_id, typed) {
            if !self.group.has(&key) {
                let before = self.docs.get(&key).cloned().flatten();
                self.group.before.push((key, before));
            }
        }
        let changes = objects::apply(&e.aggregate_id, typed, &mut self.docs);
        let n = changes.len();
        let mut rest = Some((e.id, e.metadata, e.organization_id));
        for (i, change) in changes.into_iter().enumerate() {
            // One change per event in practice: its fields move, no copy.
            let (id, metadata, organization_id) = if i + 1 == n {
                rest.take().unwrap_or_default()
            } else {
                rest.clone().unwrap_or_default()
            };
            self.group.events.push(PendingEvent {
                id,
                position: e.log_position,
                organization_id,
                recorded_at: e.recorded_at,
                metadata,
                change,
            });
        }
        Ok(())
    }

    /// Writes the public events of the command that just ended.
    fn end_group(&mut self) -> Result<(), StorageError> {
        let group = &mut self.group;
        if let Some(feed) = self.feed.as_mut() {
            let key = &mut self.key;
            for (seq, p) in group.events.iter().enumerate() {
                key.0 = p.change.kind;
                key.1.clear();
                key.1.push_str(&p.change.id);
                let body = PublicEvent {
                    id: &p.id,
                    change: &p.change,
                    metadata: &p.metadata,
                    recorded_at: &p.recorded_at,
                    prior: group.before(key),
                    after: self.docs.get(key).and_then(Option::as_ref),
                };
                let max = self.feed_max.map_or(p.recorded_at, |m| m.max(p.recorded_at));
                self.feed_max = Some(max);
                feed.buf
                    .text(&p.id)
                    .int(p.position.transaction_id)
                    .int(p.position.position)
                    .int(i64::try_from(seq).unwrap_or(i64::MAX))
                    .text(p.change.event)
                    .opt(p.organization_id.as_deref())
                    .time(&p.recorded_at)
                    .time(&max)
                    .json(&body)?
                    .end();
            }
        }
        group.key = None;
        group.before.clear();
        group.events.clear();
        Ok(())
    }

    fn audit(&mut self, e: &StoredEvent, typed: &AnyEvent) -> Result<(), StorageError> {
        if let Some(row) = crate::audit::row_of(e, typed) {
            if let Some(s) = self.audit_events.as_mut() {
                s.buf
                    .text(&row.id)
                    .text(&row.organization_id)
                    .int(e.log_position.transaction_id)
                    .int(e.log_position.position)
                    .text(&row.action)
                    .text(&row.actor_id)
                    .opt(row.actor_name.as_deref())
                    .array(&row.target_types)
                    .time(&row.occurred_at)
                    .json(&row.body)?
                    .end();
            }
            return Ok(());
        }
        match typed {
            AnyEvent::AuditLogAction(AuditLogActionEvent::AuditLogSchemaCreated { version, schema, at }) => {
                let v = i32::try_from(*version).unwrap_or(i32::MAX);
                let new = self.schema_keys.insert((e.aggregate_id.clone(), v));
                let (true, Some(s)) = (new, self.audit_schemas.as_mut()) else {
                    return Ok(());
                };
                s.buf
                    .text(&e.aggregate_id)
                    .int(i64::from(v))
                    .time(at)
                    .json(&crate::audit::schema_body(*version, schema, at))?
                    .end();
            }
            AnyEvent::AuditLogExport(AuditLogExportEvent::AuditLogExportCreated { filter, at }) => {
                let new = self.export_ids.insert(e.aggregate_id.clone());
                let (true, Some(s)) = (new, self.audit_exports.as_mut()) else {
                    return Ok(());
                };
                s.buf
                    .text(&e.aggregate_id)
                    .text(&filter.organization_id)
                    .int(e.log_position.transaction_id)
                    .int(e.log_position.position)
                    .json(filter)?
                    .time(at)
                    .end();
            }
            _ => {}
        }
        Ok(())
    }

    /// Webhook endpoints as `webhooks::apply_batch` writes them.
    fn webhook(&mut self, e: &StoredEvent, w: &WebhookEndpointEvent) {
        let id = &e.aggregate_id;
        match w {
            WebhookEndpointEvent::WebhookEndpointCreated {
                endpoint_url,
                events,
                at,
            } => {
                self.endpoints.insert(
                    id.clone(),
                    Endpoint {
                        endpoint_url: endpoint_url.clone(),
                        events: events.clone(),
                        enabled: true,
                        disabled_reason: None,
                        created_at: *at,
                        updated_at: *at,
                        created: e.log_position,
                    },
                );
            }
            WebhookEndpointEvent::WebhookEndpointUpdated { changes, at, .. } => {
                if let Some(ep) = self.endpoints.get_mut(id) {
                    if let Some(url) = &changes.endpoint_url {
                        ep.endpoint_url = url.clone();
                    }
                    if let Some(events) = &changes.events {
                        ep.events = events.clone();
                    }
                    ep.updated_at = *at;
                }
            }
            WebhookEndpointEvent::WebhookEndpointEnabled { at } => {
                if let Some(ep) = self.endpoints.get_mut(id) {
                    ep.enabled = true;
                    ep.disabled_reason = None;
                    ep.updated_at = *at;
                }
            }
            WebhookEndpointEvent::WebhookEndpointDisabled { reason, at, .. } => {
                if let Some(ep) = self.endpoints.get_mut(id) {
                    ep.enabled = false;
                    ep.disabled_reason = Some(reason.clone());
                    ep.updated_at = *at;
                }
            }
            WebhookEndpointEvent::WebhookEndpointDeleted { .. } => {
                self.endpoints.remove(id);
                self.deleted_endpoints.push(id.clone());
            }
        }
    }

    /// Writes the documents in memory out: new ones with `COPY`, ones written before as upserts
    /// and deletes (by primary key). `last`: the build is over, keep nothing.
    async fn write_docs(&mut self, last: bool) -> Result<(), StorageError> {
        let first = self.written.is_empty();
        // The first write, into empty tables: `feed_object` is filled from the document tables,
        // when those are rebuilt too.
        let derive_feed = first && self.targets.events;
        let mut copies: HashMap<&'static str, CopyStream> = HashMap::new();
        // (kinds, ids, bodies) per table.
        type Rows = (Vec<&'static str>, Vec<String>, Vec<String>);
        let mut upserts: HashMap<&'static str, Rows> = HashMap::new();
        let mut deletes: HashMap<&'static str, Rows> = HashMap::new();
        let mut written = Vec::new();
        let mut json = Vec::new();
        for ((kind, id), body) in &self.docs {
            let h = key_hash(*kind, id);
            let known = self.written.contains(&h);
            match body {
                Some(body) => {
                    json.clear();
                    serde_json::to_writer(&mut json, body)
                        .map_err(|e| StorageError::Other(format!("serializing a document: {e}")))?;
                    for (table, with_kind) in self.targets.doc_tables(*kind) {
                        if with_kind && derive_feed && self.targets.own_table(*kind) {
                            continue;
                        }
                        if known {
                            let r = upserts.entry(table).or_default();
                            r.0.push(kind.as_str());
                            r.1.push(id.clone());
                            r.2.push(String::from_utf8_lossy(&json).into_owned());
                            continue;
                        }
                        let s = copies.entry(table).or_insert_with(|| {
                            let columns = if with_kind { "kind, id, body" } else { "id, body" };
                            CopyStream::spawn(&self.opts, table, columns)
                        });
                        if with_kind {
                            s.buf.text(kind.as_str());
                        }
                        s.buf.text(id).bytes(&json).end();
                        s.send_full().await?;
                    }
                    written.push(h);
                }
                None if known => {
                    for (table, _) in self.targets.doc_tables(*kind) {
                        let r = deletes.entry(table).or_default();
                        r.0.push(kind.as_str());
                        r.1.push(id.clone());
                    }
                }
                None => {}
            }
        }
        for (_, s) in copies {
            s.finish().await?;
        }
        if derive_feed {
            // The feed's copy of documents whose own table was just written: copied there on
            // the server, without sending and parsing them again.
            for kind in Kind::ALL.into_iter().filter(|k| self.targets.own_table(*k)) {
                sqlx::query(&format!(
                    "insert into {SCHEMA}.feed_object (kind, id, body) select $1, id, body from {SCHEMA}.{}",
                    engine::doc_table(kind)
                ))
                .bind(kind.as_str())
                .execute(&mut self.conn)
                .await?;
            }
        }
        for (table, (kinds, ids, bodies)) in upserts {
            if table == "feed_object" {
                sqlx::query(&format!(
                    "insert into {SCHEMA}.feed_object (kind, id, body) \
                     select * from unnest($1::text[], $2::text[], $3::text[]::jsonb[]) \
                     on conflict (kind, id) do update set body = excluded.body"
                ))
                .bind(&kinds)
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut self.conn)
                .await?;
            } else {
                sqlx::query(&format!(
                    "insert into {SCHEMA}.{table} (id, body) select * from unnest($1::text[], $2::text[]::jsonb[]) \
                     on conflict (id) do update set body = excluded.body"
                ))
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut self.conn)
                .await?;
            }
        }
        for (table, (kinds, ids, _)) in deletes {
            if table == "feed_object" {
                sqlx::query(&format!(
                    "delete from {SCHEMA}.feed_object t using unnest($1::text[], $2::text[]) as d(kind, id) \
                     where t.kind = d.kind and t.id = d.id"
                ))
                .bind(&kinds)
                .bind(&ids)
                .execute(&mut self.conn)
                .await?;
            } else {
                sqlx::query(&format!("delete from {SCHEMA}.{table} where id = any($1)"))
                    .bind(&ids)
                    .execute(&mut self.conn)
                    .await?;
            }
        }
        self.written.extend(written);
        if last {
            // Freeing a few hundred thousand documents takes a while: not on the way to the swap.
            let docs = std::mem::take(&mut self.docs);
            tokio::task::spawn_blocking(move || drop(docs));
            return Ok(());
        }
        if first {
            // From now on documents are loaded back and rewritten by primary key.
            let doc_table = |t: &Table| t.name == "feed_object" || t.name.ends_with("_view");
            let primary = |i: &Index| i.constraint.as_ref().is_some_and(|c| c.1 == "p");
            build_indexes(&self.opts, &self.tables, |t, i| doc_table(t) && primary(i)).await?;
            for t in self.tables.iter_mut().filter(|t| doc_table(t)) {
                for i in t.indexes.iter_mut().filter(|i| primary(i)) {
                    i.built = true;
                }
            }
        }
        // The open command's documents stay: its public events are written with them.
        let group = &self.group;
        self.docs.retain(|k, _| group.has(k));
        Ok(())
    }

    /// Ends the build: the last command's public events, the documents, the endpoints; waits for
    /// every COPY. Returns the tables, with the indexes still to build.
    async fn finish(mut self) -> Result<Vec<Table>, StorageError> {
        self.end_group()?;
        self.write_docs(true).await?;
        for s in [
            self.feed.take(),
            self.audit_events.take(),
            self.audit_schemas.take(),
            self.audit_exports.take(),
        ]
        .into_iter()
        .flatten()
        {
            s.finish().await?;
        }
        if self.targets.webhooks {
            let mut s = CopyStream::spawn(
                &self.opts,
                "webhook_endpoint",
                "id, endpoint_url, events, status, disabled_reason, created_at, updated_at, \
                 created_transaction_id, created_position",
            );
            for (id, ep) in &self.endpoints {
                s.buf
                    .text(id)
                    .text(&ep.endpoint_url)
                    .array(&ep.events)
                    .text(if ep.enabled { "enabled" } else { "disabled" })
                    .opt(ep.disabled_reason.as_deref())
                    .time(&ep.created_at)
                    .time(&ep.updated_at)
                    .int(ep.created.transaction_id)
                    .int(ep.created.position)
                    .end();
                s.send_full().await?;
            }
            s.finish().await?;
            // A deleted endpoint's secret and delivery checkpoint go with it (as live).
            if !self.deleted_endpoints.is_empty() {
                for sql in [
                    "delete from public.webhook_endpoint_secret where endpoint_id = any($1)",
                    "delete from public.subscriber_checkpoint where name = any(select 'webhook:' || unnest($1::text[]))",
                ] {
                    sqlx::query(sql)
                        .bind(&self.deleted_endpoints)
                        .execute(&mut self.conn)
                        .await?;
                }
            }
        }
        self.conn.close().await?;
        Ok(self.tables)
    }
}

/// Index name by index shape (its definition after `USING`) of a table in `public`.
async fn index_names(conn: &mut PgConnection, table: &str) -> Result<HashMap<String, String>, StorageError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "select regexp_replace(indexdef, '^.* USING ', ''), indexname from pg_indexes \
         where schemaname = 'public' and tablename = $1",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// The fresh indexes already have the migrations' names; this keeps them if a table was
/// created some other way (e.g. by `like ... including all` in an older rebuild).
async fn restore_index_names(
    conn: &mut PgConnection,
    table: &str,
    names: &HashMap<String, String>,
) -> Result<(), StorageError> {
    for (shape, current) in index_names(conn, table).await? {
        if let Some(wanted) = names.get(&shape).filter(|w| **w != current) {
            sqlx::query(&format!("alter index public.\"{current}\" rename to \"{wanted}\""))
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// A table's row-level security (flags and policies), which `like ... including all` does not
/// copy: read from the old table, re-applied to the swapped-in one.
struct RowSecurity {
    enabled: bool,
    forced: bool,
    /// (name, command, using expression)
    policies: Vec<(String, String, Option<String>)>,
}

impl RowSecurity {
    async fn read(conn: &mut PgConnection, table: &str) -> Result<Self, StorageError> {
        let (enabled, forced): (bool, bool) = sqlx::query_as(
            "select relrowsecurity, relforcerowsecurity from pg_class where oid = ('public.' || $1)::regclass",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        let policies = sqlx::query_as(
            "select policyname::text, cmd, qual from pg_policies where schemaname = 'public' and tablename = $1",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Self {
            enabled,
            forced,
            policies,
        })
    }

    async fn apply(&self, conn: &mut PgConnection, table: &str) -> Result<(), StorageError> {
        if self.enabled {
            sqlx::query(&format!("alter table public.{table} enable row level security"))
                .execute(&mut *conn)
                .await?;
        }
        if self.forced {
            sqlx::query(&format!("alter table public.{table} force row level security"))
                .execute(&mut *conn)
                .await?;
        }
        // Grants are not copied either: the tenant reader role reads every read model.
        sqlx::query(&format!(
            "do $$ begin if to_regrole('keyledger_tenant_reader') is not null then \
             grant select on public.{table} to keyledger_tenant_reader; end if; end $$"
        ))
        .execute(&mut *conn)
        .await?;
        for (name, cmd, qual) in &self.policies {
            let using = qual.as_deref().map(|q| format!(" using ({q})")).unwrap_or_default();
            sqlx::query(&format!("create policy \"{name}\" on public.{table} for {cmd}{using}"))
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_the_format_reserves() {
        let mut b = CopyBuf::default();
        b.text("a\\b\tc").opt(None).int(-3).array(&["x\"y".into(), "z".into()]);
        b.end();
        assert_eq!(
            String::from_utf8_lossy(&b.0),
            "a\\\\b\\tc\t\\N\t-3\t{\"x\\\\\"y\",\"z\"}\n"
        );
    }

    #[test]
    fn timestamps_are_truncated_to_the_microsecond() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap_or_default();
        let mut b = CopyBuf::default();
        b.time(&at);
        assert_eq!(String::from_utf8_lossy(&b.0), "2023-11-14T22:13:20.123456Z");
    }
}
