//! The projection engine: each projection consumes the ordered log in batches and writes its
//! documents and its checkpoint in one transaction, so a crash never loses or double-applies an
//! event. The same batch code serves live catch-up and the last events of `projections rebuild`
//! (`rebuild.rs`, which folds the rest of the log in memory and writes it with `COPY`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use keyledger_store::lease::{Held, Ownership};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use tokio::sync::watch;

use crate::objects::{self, Docs, Kind};
use crate::public_event::PublicEvent;
use keyledger_store::checkpoint::{self, Progress};
use keyledger_store::decode::{decode, AnyEvent};
use keyledger_store::log::{self, LogPosition, StoredEvent};
use keyledger_store::StorageError;

/// A read model fed from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Projection {
    pub name: &'static str,
    kinds: &'static [Kind],
    aggregate_types: &'static [&'static str],
    /// The public event feed: documents in `feed_object`, one `event_feed` row per change.
    feed: bool,
}

pub const USERS: Projection = Projection {
    name: "users",
    kinds: &[Kind::User],
    aggregate_types: &["User"],
    feed: false,
};
pub const ORGANIZATIONS: Projection = Projection {
    name: "organizations",
    kinds: &[Kind::Organization, Kind::OrganizationDomain, Kind::OrganizationPolicy],
    aggregate_types: &["Organization"],
    feed: false,
};
pub const MEMBERSHIPS: Projection = Projection {
    name: "memberships",
    kinds: &[Kind::Membership],
    aggregate_types: &["OrganizationMembership"],
    feed: false,
};
pub const EVENTS: Projection = Projection {
    name: "events",
    kinds: &Kind::ALL,
    aggregate_types: &[
        "User",
        "Organization",
        "OrganizationMembership",
        "Session",
        "Authentication",
        "Invitation",
        "Connection",
        "OneTimeCode",
    ],
    feed: true,
};

/// Invitations (`invitation_view`): listed by organization and email.
pub const INVITATIONS: Projection = Projection {
    name: "invitations",
    kinds: &[Kind::Invitation],
    aggregate_types: &["Invitation"],
    feed: false,
};

/// SSO connections (`connection_view`): listed by organization, type and name.
pub const CONNECTIONS: Projection = Projection {
    name: "connections",
    kinds: &[Kind::Connection],
    aggregate_types: &["Connection"],
    feed: false,
};

/// Sessions (`session_view`): a user's sessions and their status.
pub const SESSIONS: Projection = Projection {
    name: "sessions",
    kinds: &[Kind::Session],
    aggregate_types: &["Session"],
    feed: false,
};

/// The audit trail's own rows (`audit.rs`): audit events, schemas, exports, and the audit log
/// retention changes of organizations.
pub const AUDIT_LOGS: Projection = Projection {
    name: "audit_logs",
    kinds: &[],
    aggregate_types: &["AuditLogEvent", "AuditLogAction", "AuditLogExport", "Organization"],
    feed: false,
};

/// Webhook endpoints (`webhooks.rs`): the `webhook_endpoint` read model the dispatcher and the
/// webhook endpoint routes read.
pub const WEBHOOKS: Projection = Projection {
    name: "webhooks",
    kinds: &[],
    aggregate_types: &["WebhookEndpoint"],
    feed: false,
};

/// Every projection, in the order they are started and listed.
pub const ALL: [Projection; 9] = [
    USERS,
    ORGANIZATIONS,
    MEMBERSHIPS,
    EVENTS,
    AUDIT_LOGS,
    WEBHOOKS,
    SESSIONS,
    INVITATIONS,
    CONNECTIONS,
];

pub fn by_name(name: &str) -> Option<Projection> {
    ALL.into_iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|p| p.name).collect()
}

pub(crate) fn doc_table(kind: Kind) -> &'static str {
    match kind {
        Kind::User => "user_view",
        Kind::Organization => "organization_view",
        Kind::OrganizationDomain => "organization_domain_view",
        Kind::Membership => "organization_membership_view",
        Kind::Session => "session_view",
        // Only the feed keeps sign-in attempts (no projection owns this kind, so no table of
        // its own is ever read or written: every caller asks only for kinds its projection owns).
        Kind::Authentication => "authentication_view",
        Kind::Invitation => "invitation_view",
        Kind::Connection => "connection_view",
        // Like sign-in attempts: the data of a code's public events, kept only by the feed.
        Kind::OneTimeCode => "one_time_code_view",
        Kind::OrganizationPolicy => "organization_policy_view",
    }
}

impl Projection {
    /// The tables this projection owns (rebuilt and swapped together).
    pub fn tables(&self) -> Vec<&'static str> {
        if self.name == AUDIT_LOGS.name {
            crate::audit::TABLES.to_vec()
        } else if self.name == WEBHOOKS.name {
            vec!["webhook_endpoint"]
        } else if self.feed {
            vec!["event_feed", "feed_object"]
        } else {
            self.kinds.iter().map(|k| doc_table(*k)).collect()
        }
    }

    /// The aggregate types whose events change this projection.
    pub fn aggregate_types(&self) -> &'static [&'static str] {
        self.aggregate_types
    }

    /// True when events of this aggregate type change this projection.
    pub fn consumes(&self, aggregate_type: &str) -> bool {
        self.aggregate_types.contains(&aggregate_type)
    }

    fn owns(&self, kind: Kind) -> bool {
        self.kinds.contains(&kind)
    }

    async fn load_docs(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        want: &HashSet<(Kind, String)>,
        docs: &mut Docs,
    ) -> Result<(), StorageError> {
        let mut by_kind: HashMap<Kind, Vec<String>> = HashMap::new();
        for (k, id) in want {
            if self.owns(*k) && !docs.contains_key(&(*k, id.clone())) {
                by_kind.entry(*k).or_default().push(id.clone());
            }
        }
        for (kind, ids) in by_kind {
            let rows: Vec<(String, Value)> = if self.feed {
                sqlx::query_as(&format!(
                    "select id, body from {schema}.feed_object where kind = $1 and id = any($2)"
                ))
                .bind(kind.as_str())
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?
            } else {
                sqlx::query_as(&format!(
                    "select id, body from {schema}.{} where id = any($1)",
                    doc_table(kind)
                ))
                .bind(&ids)
                .fetch_all(&mut *conn)
                .await?
            };
            let mut found: HashMap<String, Value> = rows.into_iter().collect();
            for id in ids {
                let body = found.remove(&id);
                docs.insert((kind, id), body);
            }
        }
        Ok(())
    }

    async fn write_docs(&self, conn: &mut PgConnection, schema: &str, docs: &Docs) -> Result<(), StorageError> {
        let mut upserts: HashMap<Kind, (Vec<String>, Vec<Value>)> = HashMap::new();
        let mut deletes: HashMap<Kind, Vec<String>> = HashMap::new();
        for (key, value) in docs {
            if !self.owns(key.0) {
                continue;
            }
            match value {
                Some(body) => {
                    let e = upserts.entry(key.0).or_default();
                    e.0.push(key.1.clone());
                    e.1.push(body.clone());
                }
                _ => deletes.entry(key.0).or_default().push(key.1.clone()),
            }
        }
        for (kind, (ids, bodies)) in upserts {
            if self.feed {
                sqlx::query(&format!(
                    "insert into {schema}.feed_object (kind, id, body) select $1, * from unnest($2::text[], $3::jsonb[]) \
                     on conflict (kind, id) do update set body = excluded.body"
                ))
                .bind(kind.as_str())
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query(&format!(
                    "insert into {schema}.{} (id, body) select * from unnest($1::text[], $2::jsonb[]) \
                     on conflict (id) do update set body = excluded.body",
                    doc_table(kind)
                ))
                .bind(&ids)
                .bind(&bodies)
                .execute(&mut *conn)
                .await?;
            }
        }
        for (kind, ids) in deletes {
            if self.feed {
                sqlx::query(&format!(
                    "delete from {schema}.feed_object where kind = $1 and id = any($2)"
                ))
                .bind(kind.as_str())
                .bind(&ids)
                .execute(&mut *conn)
                .await?;
            } else {
                sqlx::query(&format!("delete from {schema}.{} where id = any($1)", doc_table(kind)))
                    .bind(&ids)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Applies a batch of events (in log order) to this projection's tables in `schema`.
    /// The caller owns the transaction and the checkpoint.
    pub async fn apply_batch(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        events: &[StoredEvent],
    ) -> Result<(), StorageError> {
        let mut decoded: Vec<(&StoredEvent, AnyEvent)> = Vec::with_capacity(events.len());
        for e in events {
            if !self.aggregate_types.contains(&e.aggregate_type.as_str()) {
                continue;
            }
            let typed = decode(&e.aggregate_type, &e.event_type, &e.event_version, &e.payload).map_err(|message| {
                StorageError::Decode {
                    event_id: e.id.clone(),
                    message,
                }
            })?;
            decoded.push((e, typed));
        }
        if decoded.is_empty() {
            return Ok(());
        }
        if self.name == AUDIT_LOGS.name {
            return crate::audit::apply_batch(conn, schema, &decoded).await;
        }
        if self.name == WEBHOOKS.name {
            return crate::webhooks::apply_batch(conn, schema, &decoded).await;
        }
        let want: HashSet<(Kind, String)> = decoded
            .iter()
            .flat_map(|(e, t)| objects::needs(&e.aggregate_id, t))
            .collect();
        let mut docs = Docs::new();
        self.load_docs(conn, schema, &want, &mut docs).await?;
        let mut feed = FeedRows::default();
        // The public events of one command (same transaction and aggregate) show the objects as
        // they are after the whole command: an organization created with domains has them.
        let mut group: Vec<(&StoredEvent, objects::Change)> = Vec::new();
        let mut group_before: HashMap<(Kind, String), Option<Value>> = HashMap::new();
        for (i, (e, typed)) in decoded.iter().enumerate() {
            let needs = objects::needs(&e.aggregate_id, typed);
            if self.feed {
                for k in &needs {
                    group_before
                        .entry(k.clone())
                        .or_insert_with(|| docs.get(k).cloned().flatten());
                }
            }
            let changes = objects::apply(&e.aggregate_id, typed, &mut docs);
            if !self.feed {
                continue;
            }
            group.extend(changes.into_iter().map(|c| (*e, c)));
            let ends_group = decoded.get(i + 1).is_none_or(|(next, _)| {
                next.log_position.transaction_id != e.log_position.transaction_id || next.aggregate_id != e.aggregate_id
            });
            if ends_group {
                for (seq, (ev, c)) in group.drain(..).enumerate() {
                    let key = (c.kind, c.id.clone());
                    let prior = group_before.get(&key).and_then(Option::as_ref);
                    let after = docs.get(&key).and_then(Option::as_ref);
                    feed.push(ev, seq, &c, prior, after)?;
                }
                group_before.clear();
            }
        }
        // Every document in `docs` was read or written by an event of this batch: write them all
        // back (deleted ones, including an organization's domains, are deletes).
        self.write_docs(conn, schema, &docs).await?;
        if self.feed {
            feed.insert(conn, schema).await?;
        }
        Ok(())
    }
}

/// Public event rows collected during a batch.
#[derive(Default)]
struct FeedRows {
    ids: Vec<String>,
    txids: Vec<i64>,
    positions: Vec<i64>,
    seqs: Vec<i32>,
    names: Vec<String>,
    orgs: Vec<Option<String>>,
    created: Vec<chrono::DateTime<chrono::Utc>>,
    bodies: Vec<Value>,
}

impl FeedRows {
    /// One public event per stored event: `seq` orders them within their command.
    fn push(
        &mut self,
        e: &StoredEvent,
        seq: usize,
        c: &objects::Change,
        prior: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), StorageError> {
        let body = serde_json::to_value(PublicEvent {
            id: &e.id,
            change: c,
            metadata: &e.metadata,
            recorded_at: &e.recorded_at,
            prior,
            after,
        })
        .map_err(|err| StorageError::Other(format!("public event {}: {err}", e.id)))?;
        self.bodies.push(body);
        self.ids.push(e.id.clone());
        self.txids.push(e.log_position.transaction_id);
        self.positions.push(e.log_position.position);
        self.seqs.push(i32::try_from(seq).unwrap_or(i32::MAX));
        self.names.push(c.event.to_string());
        self.orgs.push(e.organization_id.clone());
        self.created.push(e.recorded_at);
        Ok(())
    }

    async fn insert(&self, conn: &mut PgConnection, schema: &str) -> Result<(), StorageError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        // Rows come in feed order; `created_at_max` carries the latest `created_at` so far along
        // the feed (migration 0013): this batch's running maximum and the feed's last row's.
        sqlx::query(&format!(
            "insert into {schema}.event_feed (id, transaction_id, position, seq, event, organization_id, created_at, \
             created_at_max, body) \
             select id, t::text::xid8, p, s, ev, org, c, \
             greatest(max(c) over (order by n), (select created_at_max from {schema}.event_feed \
             order by transaction_id desc, position desc, seq desc limit 1)), b \
             from unnest($1::text[], $2::bigint[], $3::bigint[], $4::int[], $5::text[], $6::text[], \
             $7::timestamptz[], $8::jsonb[]) with ordinality as u(id, t, p, s, ev, org, c, b, n)"
        ))
        .bind(&self.ids)
        .bind(&self.txids)
        .bind(&self.positions)
        .bind(&self.seqs)
        .bind(&self.names)
        .bind(&self.orgs)
        .bind(&self.created)
        .bind(&self.bodies)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// A full batch may end in the middle of a transaction: leave that transaction's events for the
/// next batch (unless it is the whole batch), so one command's events are applied together.
pub(crate) fn whole_transactions(mut events: Vec<StoredEvent>, limit: i64) -> Vec<StoredEvent> {
    if (events.len() as i64) < limit {
        return events;
    }
    let Some(last_tx) = events.last().map(|e| e.log_position.transaction_id) else {
        return events;
    };
    let keep = events
        .iter()
        .rposition(|e| e.log_position.transaction_id != last_tx)
        .map_or(events.len(), |i| i + 1);
    events.truncate(keep);
    events
}

/// Live batch size: small enough to keep transactions short.
const LIVE_BATCH: i64 = 500;
/// Poll interval when no notification arrives (a rolled-back writer sends none).
const POLL: Duration = Duration::from_millis(200);

/// One step of the live worker: one read of the log feeds every projection in `ps`, and their
/// writes and checkpoints commit in one transaction (a crash loses or double-applies nothing).
/// `known` holds the checkpoints as the worker last saw them (None: read them). The checkpoint
/// rows are locked first; a projection whose checkpoint another writer moved further (a
/// rebuild's swap, another process) continues from there.
pub async fn step_all(pool: &PgPool, ps: &[Projection], known: Option<&[LogPosition]>) -> Result<Step, StorageError> {
    let names: Vec<&str> = ps.iter().map(|p| p.name).collect();
    let cps = match known {
        Some(k) if k.len() == ps.len() => k.to_vec(),
        _ => checkpoint::load_all(pool, &names).await?,
    };
    let from = cps.iter().copied().min().unwrap_or_default();
    let events = whole_transactions(log::read_after(pool, from, LIVE_BATCH).await?, LIVE_BATCH);
    let Some(last) = events.last().map(|e| e.log_position) else {
        return Ok(Step::Idle(cps));
    };
    let wanted = |p: &Projection, cp: LogPosition| {
        events
            .iter()
            .any(|e| e.log_position > cp && p.consumes(&e.aggregate_type))
    };
    if !ps.iter().zip(&cps).any(|(p, cp)| wanted(p, *cp)) {
        // Nothing here for any projection: move on without a transaction (saved when idle).
        return Ok(Step::Skipped(cps.iter().map(|cp| (*cp).max(last)).collect()));
    }
    let mut tx = pool.begin().await?;
    // A projection commit need not wait for its WAL flush: if the server crashes before the
    // flush, the batch and its checkpoints are lost together and simply applied again.
    sqlx::query("set local synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let locked = checkpoint::lock_all(&mut *tx, &names).await?;
    let mut moved = Vec::with_capacity(ps.len());
    for ((p, cp), locked) in ps.iter().zip(&cps).zip(&locked) {
        // `locked > cp`: moved by someone else, continue from there; `locked < cp`: this
        // worker's own unsaved progress past events the projection ignores.
        let cp = (*cp).max(*locked);
        let batch: Vec<StoredEvent> = if wanted(p, cp) {
            events.iter().filter(|e| e.log_position > cp).cloned().collect()
        } else {
            Vec::new()
        };
        if !batch.is_empty() {
            p.apply_batch(&mut tx, "public", &batch).await?;
        }
        moved.push(cp.max(last));
    }
    checkpoint::store_all(&mut *tx, &names, &moved).await?;
    tx.commit().await?;
    Ok(Step::Applied(moved))
}

/// What one [`step_all`] did; the checkpoints, in the order of the projections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Applied a batch; the new checkpoints.
    Applied(Vec<LogPosition>),
    /// Nothing to apply; the checkpoints it read from.
    Idle(Vec<LogPosition>),
    /// Only events no projection consumes: the checkpoints to move to (persisted lazily).
    Skipped(Vec<LogPosition>),
}

/// How often a standby process checks whether the live worker's owner has gone.
const STANDBY: Duration = Duration::from_secs(2);

/// The advisory-lock key of the live projection worker's ownership: one process projects.
pub const LEASE_KEY: &str = "keyledger.projections";

/// Runs every projection in `ps` as one live worker until `shutdown` turns true, stopping only
/// between batches (at a checkpoint). Wakes on `wake` (local commits, LISTEN/NOTIFY) or every
/// [`POLL`]. One process runs it (a session advisory lock); others stand by and take over when
/// its connection goes.
pub async fn run_live(
    pool: PgPool,
    ps: Vec<Projection>,
    progress: Progress,
    mut wake: watch::Receiver<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures: u32 = 0;
    let mut owner: Option<Ownership> = None;
    let mut checked = tokio::time::Instant::now();
    // The checkpoints as this worker last saw them (None: read them from the table).
    let mut known: Option<Vec<LogPosition>> = None;
    // Whether `known` moved past skipped events without being saved yet.
    let mut unsaved = false;
    // After a wake that found nothing: the next, growing, delay before reading again.
    let mut chase: Option<Duration> = None;
    let names: Vec<&str> = ps.iter().map(|p| p.name).collect();
    let publish = |cps: &[LogPosition]| {
        for (name, cp) in names.iter().zip(cps) {
            progress.publish(name, *cp);
        }
    };
    loop {
        if *shutdown.borrow() {
            if let Some(o) = owner.take() {
                o.release().await;
            }
            return;
        }
        wake.borrow_and_update();
        // The ownership connection is checked at most every STANDBY, not per batch: a lost lock
        // is still harmless in between, since the checkpoint row locks serialize writers.
        let due = owner.is_none() || checked.elapsed() >= STANDBY;
        if due {
            checked = tokio::time::Instant::now();
        }
        let held = if due {
            Ownership::keep_or_take(&mut owner, &pool, LEASE_KEY).await
        } else {
            Held::Kept
        };
        if held == Held::Taken {
            known = None;
            tracing::info!("running the projections");
        }
        if held == Held::Not {
            known = None;
            // Another process projects; stand by (read-your-writes polls the checkpoint table)
            // and try again in a while.
            if let Ok(cps) = checkpoint::load_all(&pool, &names).await {
                publish(&cps);
            }
            tokio::select! {
                _ = tokio::time::sleep(STANDBY) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        match step_all(&pool, &ps, known.as_deref()).await {
            Ok(Step::Applied(cps)) => {
                failures = 0;
                unsaved = false;
                publish(&cps);
                known = Some(cps);
                continue;
            }
            Ok(Step::Skipped(cps)) => {
                failures = 0;
                unsaved = true;
                publish(&cps);
                known = Some(cps);
                continue;
            }
            Ok(Step::Idle(cps)) => {
                failures = 0;
                if unsaved {
                    let mut saved = true;
                    for (name, cp) in names.iter().zip(&cps) {
                        if let Err(e) = checkpoint::advance(&pool, name, *cp).await {
                            tracing::warn!(projection = name, error = %e, "saving the checkpoint failed");
                            saved = false;
                        }
                    }
                    unsaved = !saved;
                }
                publish(&cps);
                known = Some(cps);
            }
            Err(e) => {
                known = None;
                failures = failures.saturating_add(1);
                tracing::error!(error = %e, failures, "projection batch failed; will retry");
            }
        }
        let backoff = if failures > 0 {
            Duration::from_millis(200u64 << failures.min(6))
        } else if let Some(d) = chase {
            // Woken by a commit but nothing visible yet: the read horizon is cluster-wide, so an
            // older transaction anywhere (another database included) can hold this commit back,
            // and its end sends no wake. Look again soon, then less and less often.
            chase = (d * 2 < POLL).then_some(d * 2);
            d
        } else {
            POLL
        };
        tokio::select! {
            _ = wake.changed() => chase = Some(CHASE),
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// The first re-read after a wake that found nothing visible (doubling up to [`POLL`]).
const CHASE: Duration = Duration::from_millis(2);

/// Replays the whole log into fresh copies of the projection's tables, then swaps them in with
/// the checkpoint (see [`crate::rebuild`]). `on_progress(done, total)` reports events read.
pub async fn rebuild(pool: &PgPool, p: &Projection, on_progress: impl FnMut(u64, u64)) -> Result<u64, StorageError> {
    crate::rebuild::rebuild_all(pool, std::slice::from_ref(p), on_progress).await
}

/// Rebuilds several projections from one read of the log and swaps them in together (see
/// [`crate::rebuild`]).
pub async fn rebuild_all(
    pool: &PgPool,
    projections: &[Projection],
    on_progress: impl FnMut(u64, u64),
) -> Result<u64, StorageError> {
    crate::rebuild::rebuild_all(pool, projections, on_progress).await
}

/// A projection's checkpoint against the head of the log.
#[derive(Debug, Clone)]
pub struct Status {
    pub name: &'static str,
    pub checkpoint: LogPosition,
    pub head: LogPosition,
    pub behind: i64,
}

pub async fn status(pool: &PgPool) -> Result<Vec<Status>, StorageError> {
    status_at_most(pool, i64::MAX).await
}

/// [`status`] with `behind` counted up to `cap` (for frequent callers such as `/health`).
pub async fn status_at_most(pool: &PgPool, cap: i64) -> Result<Vec<Status>, StorageError> {
    let head = log::head(pool).await?;
    let mut out = Vec::new();
    for p in ALL {
        let cp = checkpoint::load(pool, p.name).await?;
        let behind = log::count_after_at_most(pool, cp, cap).await?;
        out.push(Status {
            name: p.name,
            checkpoint: cp,
            head,
            behind,
        });
    }
    Ok(out)
}
