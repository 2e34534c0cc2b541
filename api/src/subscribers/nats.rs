//! The NATS JetStream publisher: reads the public feed from its durable checkpoint (`nats`) and
//! publishes each event to `<prefix>.<organization id or "global">.<event name>` with
//! `Nats-Msg-Id` = event id. The checkpoint moves only past acknowledged publishes, so delivery
//! is at-least-once (JetStream drops duplicates within its window). It never writes the feed.

use std::time::Duration;

use anyhow::{bail, Context as _};
use async_nats::jetstream;
use async_nats::HeaderMap;
use keyledger_projections::feed::{self, FeedCursor, FeedEvent, FeedFilter};
use keyledger_store::log::LogPosition;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::watch;

use super::Context;
use crate::NatsConfig;
use keyledger_store::lease::Ownership;

/// The publisher's checkpoint name in `subscriber_checkpoint`.
pub const NAME: &str = "nats";

/// The advisory lock that makes one process the publisher.
const LOCK_KEY: &str = "keyledger.subscriber.nats";

/// Events read and published per round (their acks are awaited together).
const BATCH: i64 = 256;

/// Fallback poll for feed rows written by other processes.
const POLL: Duration = Duration::from_millis(500);

/// How often a standby process checks whether the publisher's owner has gone (and the owner
/// that its lock is still held).
const STANDBY: Duration = Duration::from_secs(2);

/// Upper bound on JetStream requests and publish acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest pause between attempts while NATS (or the database) is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

fn valid_token(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !matches!(c, '.' | '*' | '>'))
}

/// Bytes escaped in a subject token: all but ASCII letters, digits, `_` and `-`.
const TOKEN_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// A subject token from arbitrary text: ASCII letters, digits, `_` and `-` stay, every other
/// byte becomes `%XX` (so `.`, spaces and wildcards never reach the subject, and distinct
/// inputs stay distinct).
pub fn escape_token(s: &str) -> String {
    if s.is_empty() {
        return "%".to_string();
    }
    utf8_percent_encode(s, TOKEN_ESCAPED).to_string()
}

impl NatsConfig {
    /// Refuses a stream name or subject prefix JetStream would reject or misread.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.url.trim().is_empty() {
            bail!("the NATS URL is empty");
        }
        if !valid_token(&self.stream) || self.stream.contains(['/', '\\']) {
            bail!(
                "NATS stream name {:?} is invalid: it must be non-empty, without spaces, '.', '*', '>', '/' or '\\'",
                self.stream
            );
        }
        if !self.subject_prefix.split('.').all(valid_token) {
            bail!(
                "NATS subject prefix {:?} is invalid: dot-separated non-empty tokens without spaces, '*' or '>'",
                self.subject_prefix
            );
        }
        Ok(())
    }

    /// `<prefix>.<organization id or "global">.<event name>`; the event name's dots separate
    /// tokens (`user.created` → `….user.created`), so consumers can filter with wildcards.
    pub fn subject(&self, e: &FeedEvent) -> String {
        let org = e.organization_id.as_deref().map(escape_token);
        let name: Vec<String> = e.event.split('.').map(escape_token).collect();
        format!(
            "{}.{}.{}",
            self.subject_prefix,
            org.as_deref().unwrap_or("global"),
            name.join(".")
        )
    }
}

/// Connects and makes sure the stream exists (created with subjects `<prefix>.>` if absent).
async fn connect(cfg: &NatsConfig) -> anyhow::Result<jetstream::Context> {
    let client = tokio::time::timeout(
        ACK_TIMEOUT,
        async_nats::ConnectOptions::new()
            .name("keyledger")
            .connection_timeout(ACK_TIMEOUT)
            .connect(cfg.url.as_str()),
    )
    .await
    .context("connecting to NATS timed out")?
    .context("connecting to NATS")?;
    let mut js = jetstream::new(client);
    js.set_timeout(ACK_TIMEOUT);
    let stream = jetstream::stream::Config {
        name: cfg.stream.clone(),
        subjects: vec![format!("{}.>", cfg.subject_prefix)],
        ..Default::default()
    };
    js.get_or_create_stream(stream)
        .await
        .with_context(|| format!("creating or opening the JetStream stream {}", cfg.stream))?;
    Ok(js)
}

/// Publishes `batch` in order (pipelined), then awaits the acks in order, recording in `acked`
/// the last event JetStream has stored. Stops at the first failure.
async fn publish(
    js: &jetstream::Context,
    cfg: &NatsConfig,
    batch: &[FeedEvent],
    acked: &mut Option<FeedCursor>,
) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(batch.len());
    for e in batch {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, e.id.as_str());
        let body = serde_json::to_vec(&e.body).context("encoding an event")?;
        let ack = js
            .publish_with_headers(cfg.subject(e), headers, body.into())
            .await
            .with_context(|| format!("publishing event {}", e.id))?;
        pending.push((e.cursor, ack));
    }
    for (cursor, ack) in pending {
        ack.await.context("waiting for a publish acknowledgement")?;
        *acked = Some(cursor);
    }
    Ok(())
}

fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.min(6)).min(MAX_BACKOFF)
}

/// Sleeps for `d` unless the process stops first.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.changed() => {}
    }
}

async fn feed_moved(wake: &mut Option<watch::Receiver<LogPosition>>) {
    match wake.as_mut() {
        Some(w) => {
            if w.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Runs the publisher until `ctx.shutdown` turns true, stopping between batches (at a
/// checkpoint). Reconnects with back-off while NATS is unavailable.
#[tracing::instrument(skip_all, fields(stream = %cfg.stream, prefix = %cfg.subject_prefix))]
pub async fn run(ctx: Context, cfg: NatsConfig) {
    let pool = ctx.pool.clone();
    let mut shutdown = ctx.shutdown.clone();
    let mut wake = ctx.progress.watch(keyledger_projections::engine::EVENTS.name);
    let mut owner: Option<Ownership> = None;
    let mut checked = tokio::time::Instant::now();
    let mut js: Option<jetstream::Context> = None;
    // The checkpoint as this publisher last stored it (None: read it from the table).
    let mut cursor: Option<FeedCursor> = None;
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            if let Some(o) = owner.take() {
                o.release().await;
            }
            return;
        }
        if owner.is_none() || checked.elapsed() >= STANDBY {
            checked = tokio::time::Instant::now();
            let alive = match owner.as_mut() {
                Some(o) => o.alive().await,
                None => false,
            };
            if !alive {
                if let Some(o) = owner.take() {
                    o.abandon();
                }
                cursor = None;
                owner = Ownership::try_take(&pool, LOCK_KEY).await;
                if owner.is_none() {
                    // Another process publishes; stand by.
                    pause(STANDBY, &mut shutdown).await;
                    continue;
                }
                tracing::info!("publishing the event feed to NATS JetStream");
            }
        }
        let Some(context) = js.as_ref() else {
            match connect(&cfg).await {
                Ok(c) => {
                    tracing::info!(url = %cfg.url, "connected to NATS");
                    js = Some(c);
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = format!("{e:#}"), failures, "NATS unavailable; retrying");
                    pause(backoff(failures), &mut shutdown).await;
                }
            }
            continue;
        };
        let from = match cursor {
            Some(c) => c,
            None => match feed::load_checkpoint(&pool, NAME).await {
                Ok(c) => c,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, "reading the NATS checkpoint failed; retrying");
                    pause(backoff(failures), &mut shutdown).await;
                    continue;
                }
            },
        };
        cursor = Some(from);
        if let Some(w) = wake.as_mut() {
            w.borrow_and_update();
        }
        let batch = match feed::read_after(&pool, from, &FeedFilter::default(), BATCH).await {
            Ok(b) => b,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "reading the feed failed; retrying");
                pause(backoff(failures), &mut shutdown).await;
                continue;
            }
        };
        if batch.is_empty() {
            failures = 0;
            // Make sure the checkpoint row exists, so status and health list the publisher.
            if from == FeedCursor::START {
                let _ = feed::store_checkpoint(&pool, NAME, from, false).await;
            }
            tokio::select! {
                _ = feed_moved(&mut wake) => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let mut acked = None;
        let outcome = match tokio::time::timeout(ACK_TIMEOUT * 2, publish(context, &cfg, &batch, &mut acked)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("publishing a batch timed out")),
        };
        if let Some(at) = acked {
            match feed::store_checkpoint(&pool, NAME, at, false).await {
                Ok(()) => cursor = Some(at),
                Err(e) => {
                    // Published but not recorded: republished later, deduplicated by NATS.
                    tracing::warn!(error = %e, "saving the NATS checkpoint failed");
                    cursor = None;
                }
            }
        }
        match outcome {
            Ok(()) => failures = 0,
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    error = format!("{e:#}"),
                    failures,
                    "publishing to NATS failed; reconnecting"
                );
                js = None;
                pause(backoff(failures), &mut shutdown).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(stream: &str, prefix: &str) -> NatsConfig {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            stream: stream.into(),
            subject_prefix: prefix.into(),
        }
    }

    fn event(name: &str, org: Option<&str>) -> FeedEvent {
        FeedEvent {
            id: "event_01".into(),
            cursor: FeedCursor::START,
            event: name.into(),
            organization_id: org.map(str::to_string),
            created_at: chrono::Utc::now(),
            body: serde_json::json!({}),
        }
    }

    #[test]
    fn subjects_name_the_organization_and_the_event() {
        let c = cfg("KEYLEDGER", "keyledger");
        assert_eq!(c.subject(&event("user.created", None)), "keyledger.global.user.created");
        assert_eq!(
            c.subject(&event("organization_membership.created", Some("org_01AB"))),
            "keyledger.org_01AB.organization_membership.created"
        );
    }

    #[test]
    fn unsafe_characters_never_reach_a_subject() {
        let c = cfg("KEYLEDGER", "a.b");
        let s = c.subject(&event("user.cre*ted", Some("org x.>")));
        assert_eq!(s, "a.b.org%20x%2E%3E.user.cre%2Ated");
        assert!(s.split('.').all(valid_token), "{s}");
        assert_eq!(escape_token(""), "%");
    }

    #[test]
    fn bad_stream_names_and_prefixes_are_refused() {
        assert!(cfg("KEYLEDGER", "keyledger.events").validate().is_ok());
        for (stream, prefix) in [
            ("", "p"),
            ("A.B", "p"),
            ("A B", "p"),
            ("A/B", "p"),
            ("S", ""),
            ("S", "a..b"),
            ("S", "a.*"),
            ("S", "a.>"),
            ("S", "a b"),
        ] {
            assert!(cfg(stream, prefix).validate().is_err(), "{stream:?} {prefix:?}");
        }
    }
}
