//! Events an older release stored in an older version of their shape, read by this one: the
//! upcaster (`keyledger_store::decode`) makes the HTTP reads, the commands and a projection
//! rebuild see them as the current version. The rows are written with SQL, as that release did.

use keyledger_domain::ids::new_id;
use keyledger_projections::engine;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Appends `payload` to organization `org` as the next event, stored as version `version` of
/// `event_type`, with the metadata of the organization's last event (the same API key wrote it).
async fn append_as_an_older_release(app: &TestApp, org: &str, event_type: &str, version: &str, payload: Value) {
    sqlx::query(
        "insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, \
         organization_id) \
         select $1, aggregate_type, aggregate_id, sequence + 1, $3, $4, $5, metadata, organization_id from event \
         where aggregate_type = 'Organization' and aggregate_id = $2 order by sequence desc limit 1",
    )
    .bind(new_id("event"))
    .bind(org)
    .bind(event_type)
    .bind(version)
    .bind(payload)
    .execute(&app.pool)
    .await
    .expect("an older release's append");
}

/// The retention changes of the organization's audit trail, oldest first.
async fn retention_trail(app: &TestApp, org: &str) -> Vec<Value> {
    app.all_pages(&format!("/audit_logs/events?organization_id={org}&order=asc&limit=100"))
        .await
        .into_iter()
        .filter(|e| e["action"] == "audit_logs_retention.updated")
        .collect()
}

#[tokio::test]
async fn version_1_retention_changes_of_an_older_release_are_read_as_version_2_by_reads_commands_and_rebuilds() {
    let app = TestApp::spawn().await;
    let org = id_of(&app.create_organization("Older Release Co", json!([])).await);
    // Version 1 called `previous_retention_period_in_days` `previous`.
    let t = "OrganizationAuditLogsRetentionChanged";
    for (days, previous) in [(json!(365), Value::Null), (json!(30), json!(365))] {
        let payload = json!({ t: { "retention_period_in_days": days, "previous": previous, "at": "2026-01-02T03:04:05.123456Z" } });
        append_as_an_older_release(&app, &org, t, "1", payload).await;
    }
    // Every projection decodes the log (one that could not would stay behind).
    wait_caught_up(&app.pool).await;

    // Reads: the value, and the renamed field in the trail.
    let retention = format!("/organizations/{org}/audit_logs_retention");
    assert_eq!(
        app.get(&retention).await,
        (StatusCode::OK, json!({ "retention_period_in_days": 30 }))
    );
    let shown = |trail: &[Value]| -> Vec<(Value, Value)> {
        trail
            .iter()
            .map(|e| {
                (
                    e["metadata"]["retention_period_in_days"].clone(),
                    e["metadata"]["previous_retention_period_in_days"].clone(),
                )
            })
            .collect()
    };
    let trail = retention_trail(&app, &org).await;
    assert_eq!(
        shown(&trail),
        [(json!(365), Value::Null), (json!(30), json!(365))],
        "{trail:?}"
    );

    // Commands: the organization loads from its version 1 events (30 days), so setting 30 changes
    // nothing, and setting 365 appends a version 2 event that says it was 30.
    let before = app.log_len().await;
    assert_eq!(
        app.put(&retention, json!({ "retention_period_in_days": 30 })).await,
        (StatusCode::OK, json!({ "retention_period_in_days": 30 }))
    );
    assert_eq!(app.log_len().await, before, "setting the current value appends nothing");
    assert_eq!(
        app.put(&retention, json!({ "retention_period_in_days": 365 })).await,
        (StatusCode::OK, json!({ "retention_period_in_days": 365 }))
    );
    let (version, payload): (String, Value) = sqlx::query_as(
        "select event_version, payload from event where aggregate_id = $1 order by sequence desc limit 1",
    )
    .bind(&org)
    .fetch_one(&app.pool)
    .await
    .expect("the new event");
    assert_eq!(version, "2");
    assert_eq!(
        (
            &payload[t]["retention_period_in_days"],
            &payload[t]["previous_retention_period_in_days"]
        ),
        (&json!(365), &json!(30)),
        "{payload}"
    );
    assert!(payload[t].get("previous").is_none(), "{payload}");
    wait_caught_up(&app.pool).await;
    let trail = retention_trail(&app, &org).await;
    assert_eq!(
        shown(&trail),
        [
            (json!(365), Value::Null),
            (json!(30), json!(365)),
            (json!(365), json!(30))
        ],
        "{trail:?}"
    );

    // A rebuild from the log, versions 1 and 2 together, while the server runs.
    engine::rebuild(&app.pool, &engine::AUDIT_LOGS, |_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(
        retention_trail(&app, &org).await,
        trail,
        "the rebuilt trail equals the incremental one"
    );
    assert_eq!(
        app.get(&retention).await,
        (StatusCode::OK, json!({ "retention_period_in_days": 365 }))
    );
}
