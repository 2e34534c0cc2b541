//! Tests: point-in-time reads (`?as_of=`): every GET recorded during a history of writes is
//! answered again, at its instant, from the event log; with and without history snapshots; 404
//! before creation and after deletion; the membership list's filters and cursors; bad input.

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use keyledger_projections::history::{self, History, SNAPSHOT_FORMAT};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::*;

const MEMBERSHIPS: &str = "/user_management/organization_memberships";

/// `path` with `as_of` added to its query.
fn at(path: &str, instant: &str) -> String {
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}as_of={instant}")
}

/// Waits until the clock (the log's clock too: the same machine's, with microseconds) has moved
/// past `t`.
async fn clock_past(t: chrono::DateTime<Utc>) {
    while Utc::now() <= t {
        tokio::task::yield_now().await;
    }
}

/// An instant strictly between writes: the last write has committed before it (its response
/// came back), the clock has moved on since, and the next one starts after it.
async fn instant() -> String {
    let answered = Utc::now();
    clock_past(answered).await;
    let t = Utc::now();
    clock_past(t).await;
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// What the live endpoints answered at one instant, by path.
struct Point {
    at: String,
    answers: BTreeMap<String, (StatusCode, Value)>,
}

/// The live answers of `paths` at a fresh instant.
async fn record(app: &TestApp, paths: &[String]) -> Point {
    let at = instant().await;
    let mut answers = BTreeMap::new();
    for p in paths {
        answers.insert(p.clone(), app.get(p).await);
    }
    clock_past(Utc::now()).await;
    Point { at, answers }
}

/// Checks every path at every point: the recorded answer, or 404 (an empty list) where the path
/// was not recorded yet (its object did not exist then). Returns the number of comparisons.
async fn check_all(app: &TestApp, points: &[Point], ctx: &str) -> usize {
    let all: Vec<String> = points
        .iter()
        .flat_map(|p| p.answers.keys().cloned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut n = 0;
    for (i, p) in points.iter().enumerate() {
        for path in &all {
            let (s, body) = app.get(&at(path, &p.at)).await;
            match p.answers.get(path) {
                Some((ws, wb)) => {
                    assert_eq!(
                        (s, &body),
                        (*ws, wb),
                        "{ctx}: point {i} ({}) {path}: as_of answer differs from the recorded one",
                        p.at
                    );
                }
                None if path.starts_with(&format!("{MEMBERSHIPS}?")) => {
                    // A list of an organization that did not exist yet is empty, as live.
                    assert_eq!(s, StatusCode::OK, "{ctx}: point {i} {path}: {body}");
                    assert_eq!(body["data"], json!([]), "{ctx}: point {i} {path}");
                }
                None => assert_error(
                    s,
                    &body,
                    StatusCode::NOT_FOUND,
                    "entity_not_found",
                    &format!("{ctx}: point {i} {path} before creation"),
                ),
            }
            n += 1;
        }
    }
    n
}

async fn snapshot_count(app: &TestApp) -> i64 {
    let (n,): (i64,) = sqlx::query_as("select count(*) from history_snapshot")
        .fetch_one(&app.pool)
        .await
        .expect("count snapshots");
    n
}

async fn ok(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> Value {
    let (s, b) = app.request(method.clone(), path, body).await;
    assert!(s.is_success(), "{method} {path}: {s} {b}");
    b
}

#[tokio::test]
async fn as_of_answers_every_recorded_state_of_every_kind_with_and_without_snapshots() {
    let app = TestApp::spawn().await;
    let mut paths: Vec<String> = Vec::new();
    let mut points = vec![record(&app, &paths).await];

    let user = app.create_user("ann@example.com").await;
    let u = id_of(&user);
    let pu = format!("/user_management/users/{u}");
    paths.push(pu.clone());
    points.push(record(&app, &paths).await);

    let org = app
        .create_organization("Acme", json!([{ "domain": "d0.example.com", "state": "pending" }]))
        .await;
    let o = id_of(&org);
    let d0 = id_of(&org["domains"][0]);
    let po = format!("/organizations/{o}");
    let list = format!("{MEMBERSHIPS}?organization_id={o}&limit=100");
    paths.extend([
        po.clone(),
        format!("/organization_domains/{d0}"),
        list.clone(),
        format!("{list}&statuses=inactive"),
        format!("{list}&user_id={u}&order=asc"),
    ]);
    points.push(record(&app, &paths).await);

    ok(&app, Method::PUT, &po, Some(json!({ "name": "Acme 2" }))).await;
    points.push(record(&app, &paths).await);
    ok(&app, Method::PUT, &po, Some(json!({ "metadata": { "tier": "gold" } }))).await;
    points.push(record(&app, &paths).await);
    ok(&app, Method::PUT, &pu, Some(json!({ "first_name": "Ann" }))).await;
    points.push(record(&app, &paths).await);

    let d1 = ok(
        &app,
        Method::POST,
        "/organization_domains",
        Some(json!({ "domain": "d1.example.com", "organization_id": o })),
    )
    .await;
    let d1_id = id_of(&d1);
    let pd1 = format!("/organization_domains/{d1_id}");
    paths.push(pd1.clone());
    points.push(record(&app, &paths).await);
    app.dns.set_txt(
        "_keyledger-challenge.d1.example.com",
        vec![d1["verification_token"].as_str().expect("token").to_string()],
    );
    let verified = ok(&app, Method::POST, &format!("{pd1}/verify"), Some(json!({}))).await;
    assert_eq!(verified["state"], "verified");
    points.push(record(&app, &paths).await);

    let m = app.create_membership(&u, &o, None).await;
    let pm = format!("{MEMBERSHIPS}/{}", id_of(&m));
    paths.push(pm.clone());
    points.push(record(&app, &paths).await);
    ok(&app, Method::PUT, &pm, Some(json!({ "role_slug": "admin" }))).await;
    points.push(record(&app, &paths).await);
    ok(&app, Method::PUT, &po, Some(json!({ "name": "Acme 3" }))).await;
    points.push(record(&app, &paths).await);
    ok(&app, Method::PUT, &format!("{pm}/deactivate"), None).await;
    points.push(record(&app, &paths).await);

    // A future instant answers the current state, from the log.
    for p in &paths {
        let live = app.get(p).await;
        assert_eq!(
            app.get(&at(p, "2999-01-01T00:00:00Z")).await,
            live,
            "future as_of of {p}"
        );
    }

    ok(&app, Method::PUT, &pu, Some(json!({ "last_name": "Lee" }))).await;
    points.push(record(&app, &paths).await);
    let (s, _) = app.delete(&pd1).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    points.push(record(&app, &paths).await);
    ok(&app, Method::PUT, &format!("{pm}/reactivate"), None).await;
    points.push(record(&app, &paths).await);
    ok(&app, Method::DELETE, &pm, None).await;
    points.push(record(&app, &paths).await);

    let user2 = app.create_user("bob@example.com").await;
    let pu2 = format!("/user_management/users/{}", id_of(&user2));
    let m2 = app.create_membership(&id_of(&user2), &o, Some("admin")).await;
    paths.extend([pu2.clone(), format!("{MEMBERSHIPS}/{}", id_of(&m2))]);
    points.push(record(&app, &paths).await);
    ok(&app, Method::DELETE, &pu2, None).await; // takes its membership with it
    points.push(record(&app, &paths).await);
    ok(&app, Method::DELETE, &po, None).await; // takes its domains with it
    points.push(record(&app, &paths).await);
    ok(&app, Method::DELETE, &pu, None).await;
    points.push(record(&app, &paths).await);

    // The history really changed along the way (a check that cannot pass on constant answers).
    let names: Vec<Value> = points
        .iter()
        .filter_map(|p| p.answers.get(&po))
        .map(|(_, b)| b["name"].clone())
        .collect();
    assert!(
        names.contains(&json!("Acme 2")) && names.contains(&json!("Acme 3")),
        "{names:?}"
    );
    let last = points.last().expect("points");
    for p in &paths {
        let (s, _) = &last.answers[p];
        assert!(
            *s == StatusCode::NOT_FOUND || p.starts_with(&format!("{MEMBERSHIPS}?")),
            "{p} still exists at the end: {s}"
        );
    }

    assert_eq!(
        snapshot_count(&app).await,
        0,
        "short streams write no snapshot by default"
    );
    let n = check_all(&app, &points, "from the log").await;
    assert!(n > 150, "only {n} comparisons");

    // Snapshots after every event of every stream: the same answers.
    let mut streams = vec![
        ("Organization", o.clone()),
        ("User", u.clone()),
        ("User", id_of(&user2)),
    ];
    streams.push(("OrganizationMembership", id_of(&m)));
    streams.push(("OrganizationMembership", id_of(&m2)));
    for (t, id) in &streams {
        let written = history::write_snapshots(&app.pool, t, id, 1).await.expect("snapshots");
        assert!(written >= 2, "{t} {id}: {written} snapshots");
    }
    assert!(snapshot_count(&app).await > 20);
    check_all(&app, &points, "from snapshots").await;

    // Snapshots are only a cache: deleting them changes no answer.
    sqlx::query("delete from history_snapshot")
        .execute(&app.pool)
        .await
        .expect("delete snapshots");
    check_all(&app, &points, "after deleting the snapshots").await;
}

/// Reads the organization as of `t` through the HTTP API.
async fn org_at(app: &TestApp, id: &str, t: &str) -> (StatusCode, Value) {
    app.get(&at(&format!("/organizations/{id}"), t)).await
}

#[tokio::test]
async fn snapshots_are_used_written_lazily_and_ignored_when_of_another_format_or_unreadable() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("V1", json!([])).await;
    let o = id_of(&org);
    let po = format!("/organizations/{o}");
    let mut points = vec![record(&app, std::slice::from_ref(&po)).await];
    for v in 2..=7 {
        ok(&app, Method::PUT, &po, Some(json!({ "name": format!("V{v}") }))).await;
        points.push(record(&app, std::slice::from_ref(&po)).await);
    }

    // A fold writes a snapshot at every multiple of `snapshot_every` it passes, lazily.
    let h = History { snapshot_every: 2 };
    let now = Utc::now();
    let doc = h.organization(&app.pool, &o, now).await.expect("read").expect("exists");
    assert_eq!(doc["name"], "V7");
    let seqs: Vec<(i64,)> = sqlx::query_as("select sequence from history_snapshot order by sequence")
        .fetch_all(&app.pool)
        .await
        .expect("snapshots");
    assert_eq!(seqs, vec![(2,), (4,), (6,)]);
    check_all(&app, &points, "lazily written snapshots").await;

    // The snapshot really is where a read starts: doctor the one at sequence 4 (name V4) and the
    // instant right after it answers the doctored name; later instants start from sequence 6.
    let (docs,): (Value,) = sqlx::query_as("select documents from history_snapshot where sequence = 4 and format = $1")
        .bind(SNAPSHOT_FORMAT)
        .fetch_one(&app.pool)
        .await
        .expect("snapshot 4");
    let doctored = Value::String(docs.to_string().replace("\"V4\"", "\"DOCTORED\""));
    sqlx::query("update history_snapshot set documents = ($1::text)::jsonb where sequence = 4")
        .bind(doctored.as_str())
        .execute(&app.pool)
        .await
        .expect("doctor");
    assert_eq!(org_at(&app, &o, &points[3].at).await.1["name"], "DOCTORED");
    assert_eq!(org_at(&app, &o, &points[4].at).await.1["name"], "V5");
    assert_eq!(org_at(&app, &o, &points[5].at).await.1["name"], "V6");

    // A snapshot of another format, or one that does not decode, is ignored.
    sqlx::query("delete from history_snapshot")
        .execute(&app.pool)
        .await
        .expect("delete");
    for (format, documents) in [(SNAPSHOT_FORMAT + 1, "[]"), (SNAPSHOT_FORMAT, "\"garbage\"")] {
        sqlx::query(
            "insert into history_snapshot (aggregate_type, aggregate_id, format, sequence, recorded_at, documents) \
             values ('Organization', $1, $2, 5, now() - interval '1 hour', $3::jsonb)",
        )
        .bind(&o)
        .bind(format)
        .bind(documents)
        .execute(&app.pool)
        .await
        .expect("insert snapshot");
    }
    check_all(&app, &points, "foreign and unreadable snapshots").await;
}

#[tokio::test]
async fn the_membership_list_as_of_pages_and_filters_like_the_live_list_did() {
    let app = TestApp::spawn().await;
    let org = app.create_organization("Paged", json!([])).await;
    let o = id_of(&org);
    let mut members = Vec::new();
    for i in 0..5 {
        let u = app.create_user(&format!("m{i}@example.com")).await;
        let m = app
            .create_membership(&id_of(&u), &o, if i % 2 == 0 { Some("admin") } else { None })
            .await;
        members.push((id_of(&u), id_of(&m)));
    }
    ok(
        &app,
        Method::PUT,
        &format!("{MEMBERSHIPS}/{}/deactivate", members[1].1),
        None,
    )
    .await;

    // Record every page of several queries, following the live cursors.
    let base = format!("{MEMBERSHIPS}?organization_id={o}&limit=2");
    let mut queries = vec![
        base.clone(),
        format!("{base}&order=asc"),
        format!("{base}&order=normal"),
        format!("{base}&statuses=active"),
        format!("{base}&statuses=inactive,active&order=asc"),
        format!("{base}&user_id={}", members[3].0),
        format!("{base}&before={}", members[1].1),
        format!("{base}&order=normal&before={}", members[3].1),
        format!("{base}&order=asc&before={}", members[4].1),
    ];
    let mut paths = Vec::new();
    while let Some(q) = queries.pop() {
        let (s, body) = app.get(&q).await;
        assert_eq!(s, StatusCode::OK, "{q}: {body}");
        paths.push(q.clone());
        if let Some(a) = body["list_metadata"]["after"].as_str() {
            let next = match q.split_once("&after=") {
                Some((head, _)) => format!("{head}&after={a}"),
                None => format!("{q}&after={a}"),
            };
            if !q.contains("&before=") {
                queries.push(next);
            }
        }
    }
    assert!(paths.len() > 12, "{paths:?}");
    let point = record(&app, &paths).await;
    let pages_with_data = point
        .answers
        .values()
        .filter(|(_, b)| b["data"].as_array().is_some_and(|d| !d.is_empty()))
        .count();
    assert!(pages_with_data > 8, "the recorded pages are mostly empty");

    // Change everything: roles, statuses, a deletion, a new member, a renamed organization and user.
    ok(
        &app,
        Method::PUT,
        &format!("{MEMBERSHIPS}/{}/reactivate", members[1].1),
        None,
    )
    .await;
    ok(
        &app,
        Method::PUT,
        &format!("{MEMBERSHIPS}/{}/deactivate", members[2].1),
        None,
    )
    .await;
    ok(
        &app,
        Method::PUT,
        &format!("{MEMBERSHIPS}/{}", members[0].1),
        Some(json!({"role_slug": "member"})),
    )
    .await;
    ok(&app, Method::DELETE, &format!("{MEMBERSHIPS}/{}", members[4].1), None).await;
    let late = app.create_user("late@example.com").await;
    app.create_membership(&id_of(&late), &o, None).await;
    ok(
        &app,
        Method::PUT,
        &format!("/organizations/{o}"),
        Some(json!({"name": "Renamed"})),
    )
    .await;
    ok(
        &app,
        Method::PUT,
        &format!("/user_management/users/{}", members[3].0),
        Some(json!({"first_name": "Z"})),
    )
    .await;
    let (_, now) = app.get(&base).await;
    assert_ne!(now, point.answers[&base].1, "the live list changed");

    let n = check_all(&app, std::slice::from_ref(&point), "membership pages").await;
    assert_eq!(n, paths.len());
}

#[tokio::test]
async fn bad_as_of_values_are_422_naming_the_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let user = app.create_user("bad@example.com").await;
    let org = app
        .create_organization("Bad", json!([{ "domain": "bad.example.com", "state": "pending" }]))
        .await;
    let o = id_of(&org);
    let paths = [
        format!("/organizations/{o}"),
        format!("/user_management/users/{}", id_of(&user)),
        format!("/organization_domains/{}", id_of(&org["domains"][0])),
        format!("{MEMBERSHIPS}?organization_id={o}"),
    ];
    let bad = [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2026-01-01",
        "2026-01-01T00:00:00",
        "1700000000",
        "2026-01-01T25:00:00Z",
        "2026-01-01T00:00:00%2B99:00",
        "%C3%A9",
    ];
    for p in &paths {
        for b in bad {
            let path = at(p, b);
            assert_rejected(
                &app,
                Method::GET,
                &path,
                None,
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request_parameters/invalid_timestamp",
                ),
                &path,
            )
            .await;
            let (_, body) = app.get(&path).await;
            assert_eq!(body["errors"][0]["field"], "as_of", "{path}: {body}");
        }
        let twice = format!("{}&as_of=2026-01-01T00:00:00Z", at(p, "2026-01-01T00:00:00Z"));
        assert_rejected(
            &app,
            Method::GET,
            &twice,
            None,
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/duplicate_parameter",
            ),
            &twice,
        )
        .await;
    }
    // The membership list needs organization_id with as_of (user_id alone is not enough).
    for q in [
        format!("{MEMBERSHIPS}?as_of=2026-01-01T00:00:00Z"),
        format!("{MEMBERSHIPS}?user_id={}&as_of=2026-01-01T00:00:00Z", id_of(&user)),
    ] {
        let (s, body) = app.get(&q).await;
        assert_error(
            s,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request_parameters/missing_filter",
            &q,
        );
        assert_eq!(body["errors"][0]["field"], "organization_id");
    }
    // Extreme but valid instants are answered, never a 5xx: long before (404 / empty list) and
    // long after (the current state).
    for (t, want) in [
        ("0000-01-01T00:00:00Z", StatusCode::NOT_FOUND),
        ("1970-01-01T00:00:00-23:59", StatusCode::NOT_FOUND),
        ("9999-12-31T23:59:59.999999999%2B14:00", StatusCode::OK),
        ("9999-12-31T23:59:59Z", StatusCode::OK),
    ] {
        for p in &paths {
            let (s, body) = app.get(&at(p, t)).await;
            let want = if p.starts_with(MEMBERSHIPS) {
                StatusCode::OK
            } else {
                want
            };
            assert_eq!(s, want, "{p} as of {t}: {body}");
        }
    }
    let q = format!("{MEMBERSHIPS}?organization_id={o}&statuses=gone&as_of=2026-01-01T00:00:00Z");
    let (s, body) = app.get(&q).await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_status",
        &q,
    );
    let q = format!("{MEMBERSHIPS}?organization_id={o}&limit=0&as_of=2026-01-01T00:00:00Z");
    let (s, body) = app.get(&q).await;
    assert_error(
        s,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request_parameters/invalid_limit",
        &q,
    );
    assert_eq!(snapshot_count(&app).await, 0);
}

#[tokio::test]
async fn unknown_ids_are_404_and_a_missing_key_is_401_with_as_of() {
    let app = TestApp::spawn().await;
    let now = instant().await;
    for (p, what) in [
        ("/organizations/org_01NOPE", "organization"),
        ("/user_management/users/user_01NOPE", "user"),
        ("/organization_domains/org_domain_01NOPE", "domain"),
        (&format!("{MEMBERSHIPS}/om_01NOPE") as &str, "membership"),
        ("/organizations/%E2%9C%93", "odd id"),
    ] {
        let (s, body) = app.get(&at(p, &now)).await;
        assert_error(s, &body, StatusCode::NOT_FOUND, "entity_not_found", what);
    }
    let (s, body) = app
        .get(&at(&format!("{MEMBERSHIPS}?organization_id=org_01NOPE"), &now))
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    assert_eq!(body["data"], json!([]));
    for p in [
        "/organizations/org_01NOPE",
        "/user_management/users/user_01NOPE",
        "/organization_domains/org_domain_01NOPE",
        "/user_management/organization_memberships?organization_id=org_01NOPE",
    ] {
        let (s, body) = app.request_with_key(Method::GET, &at(p, &now), None, None).await;
        assert_error(s, &body, StatusCode::UNAUTHORIZED, "unauthorized", p);
    }
}
