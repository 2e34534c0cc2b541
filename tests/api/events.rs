//! Tests: the public event feed (`GET /events`) — one WorkOS event per change, in log order,
//! with its filters and cursors — and the request metadata every stored event carries.
//! Bad feed queries are 422s that change nothing.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// (event name, data.id) of each event.
fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap_or_default().to_string(),
                e["data"]["id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn pair(event: &str, id: &str) -> (String, String) {
    (event.to_string(), id.to_string())
}

/// A user, an update, an organization with two domains and two memberships; returns the
/// expected feed as (event, object id), in order.
struct Story {
    org: String,
    other_org: String,
    expected: Vec<(String, String)>,
}

async fn story(app: &TestApp) -> Story {
    let user = id_of(&app.create_user("ann@example.com").await);
    let (s, body) = app
        .put(
            &format!("/user_management/users/{user}"),
            json!({ "first_name": "Ann" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let org_body = app
        .create_organization(
            "Acme",
            json!([{ "domain": "acme.com", "state": "pending" }, { "domain": "acme.org", "state": "verified" }]),
        )
        .await;
    let org = id_of(&org_body);
    let domains: Vec<String> = org_body["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(id_of)
        .collect();
    assert_eq!(domains.len(), 2, "{org_body}");
    let other_org = id_of(&app.create_organization("Globex", json!([])).await);
    let m1 = id_of(&app.create_membership(&user, &org, None).await);
    let m2 = id_of(&app.create_membership(&user, &other_org, Some("admin")).await);
    let expected = vec![
        pair("user.created", &user),
        pair("user.updated", &user),
        pair("organization.created", &org),
        pair("organization_domain.created", &domains[0]),
        pair("organization_domain.created", &domains[1]),
        pair("organization.created", &other_org),
        pair("organization_membership.created", &m1),
        pair("organization_membership.created", &m2),
    ];
    Story {
        org,
        other_org,
        expected,
    }
}

#[tokio::test]
async fn every_change_appears_once_in_the_feed_in_order() {
    let app = TestApp::spawn().await;
    let st = story(&app).await;
    let events = app.all_events("").await;
    assert_eq!(summary(&events), st.expected);

    for e in &events {
        assert_eq!(e["object"], "event", "{e}");
        assert!(
            e["id"].as_str().is_some_and(|i| i.starts_with("event_")),
            "id prefix: {e}"
        );
        assert!(e["created_at"].as_str().is_some(), "created_at: {e}");
    }
    let ids: std::collections::HashSet<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "event ids are unique");

    // organization.created shows the organization after the whole command: with both domains.
    let org_created = &events[2]["data"];
    let mut names: Vec<&str> = org_created["domains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["domain"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["acme.com", "acme.org"], "{org_created}");
    assert_eq!(org_created["name"], "Acme");
    assert_eq!(events[0]["data"]["email"], "ann@example.com");
    assert_eq!(events[1]["data"]["first_name"], "Ann");
    assert_eq!(events[6]["data"]["role"]["slug"], "member");
    assert_eq!(events[7]["data"]["role"]["slug"], "admin");
    assert_eq!(events[7]["data"]["organization_id"], st.other_org.as_str());
    app.stop().await;
}

#[tokio::test]
async fn the_events_filter_accepts_comma_repeated_and_bracketed_forms() {
    let app = TestApp::spawn().await;
    let st = story(&app).await;
    let want_two: Vec<(String, String)> = st
        .expected
        .iter()
        .filter(|(e, _)| e == "user.updated" || e == "organization_membership.created")
        .cloned()
        .collect();
    let want_one: Vec<(String, String)> = st
        .expected
        .iter()
        .filter(|(e, _)| e == "user.created")
        .cloned()
        .collect();
    let cases = [
        ("single", "&events=user.created", &want_one),
        (
            "comma-joined",
            "&events=user.updated,organization_membership.created",
            &want_two,
        ),
        (
            "repeated",
            "&events=user.updated&events=organization_membership.created",
            &want_two,
        ),
        (
            "bracketed",
            "&events[]=user.updated&events[]=organization_membership.created",
            &want_two,
        ),
        (
            "bracketed encoded",
            "&events%5B%5D=user.updated&events%5B%5D=organization_membership.created",
            &want_two,
        ),
    ];
    for (case, query, want) in cases {
        assert_eq!(&summary(&app.all_events(query).await), want, "{case}");
    }
    assert!(
        app.all_events("&events=user.nothing").await.is_empty(),
        "unknown event name matches nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_organization_filter_keeps_only_that_organizations_events() {
    let app = TestApp::spawn().await;
    let st = story(&app).await;
    let events = app.all_events(&format!("&organization_id={}", st.org)).await;
    let want: Vec<(String, String)> = st.expected[2..5].iter().chain([&st.expected[6]]).cloned().collect();
    assert_eq!(summary(&events), want);
    let other = app.all_events(&format!("&organization_id={}", st.other_org)).await;
    assert_eq!(summary(&other), vec![st.expected[5].clone(), st.expected[7].clone()]);
    assert!(app.all_events("&organization_id=org_nothing").await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn range_start_is_inclusive_and_range_end_exclusive() {
    let app = TestApp::spawn().await;
    let mut users = Vec::new();
    for i in 0..3 {
        let user = app.create_user(&format!("u{i}@example.com")).await;
        // The next write starts once the clock is a millisecond (the precision of created_at)
        // past this one: distinct timestamps.
        let created: chrono::DateTime<chrono::Utc> = user["created_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("created_at");
        while chrono::Utc::now() < created + chrono::Duration::milliseconds(1) {
            tokio::task::yield_now().await;
        }
        users.push(id_of(&user));
    }
    let events = app.all_events("").await;
    assert_eq!(events.len(), 3);
    let at = |i: usize| events[i]["created_at"].as_str().unwrap_or_default().to_string();
    let cases = [
        ("start at the second", format!("&range_start={}", at(1)), vec![1, 2]),
        ("end at the second", format!("&range_end={}", at(1)), vec![0]),
        (
            "second only",
            format!("&range_start={}&range_end={}", at(1), at(2)),
            vec![1],
        ),
        (
            "empty range",
            format!("&range_start={}&range_end={}", at(1), at(1)),
            vec![],
        ),
        ("far future", "&range_start=2999-01-01T00:00:00Z".to_string(), vec![]),
        (
            "offset form",
            "&range_start=2000-01-01T00:00:00%2B02:00".to_string(),
            vec![0, 1, 2],
        ),
    ];
    for (case, query, want) in cases {
        let got: Vec<String> = app
            .all_events(&query)
            .await
            .iter()
            .map(|e| e["data"]["id"].to_string())
            .collect();
        let want: Vec<String> = want.iter().map(|&i| json!(users[i]).to_string()).collect();
        assert_eq!(got, want, "{case}");
    }
    app.stop().await;
}

#[tokio::test]
async fn paging_with_limit_one_walks_the_same_feed_as_one_big_page() {
    let app = TestApp::spawn().await;
    let st = story(&app).await;
    let (s, big) = app.get("/events?limit=100").await;
    assert_eq!(s, StatusCode::OK, "{big}");
    assert_eq!(big["object"], "list");
    assert_eq!(big["list_metadata"]["after"], Value::Null, "no more pages");
    let big: Vec<Value> = big["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(summary(&big), st.expected, "default order is oldest first");

    let mut walked = Vec::new();
    let mut after: Option<String> = None;
    for step in 0.. {
        assert!(step <= st.expected.len(), "paging does not end");
        let q = match &after {
            Some(a) => format!("/events?limit=1&after={a}"),
            None => "/events?limit=1".to_string(),
        };
        let (s, page) = app.get(&q).await;
        assert_eq!(s, StatusCode::OK, "step {step}: {page}");
        let data = page["data"].as_array().cloned().unwrap_or_default();
        assert!(data.len() <= 1, "step {step}: limit 1");
        walked.extend(data);
        match page["list_metadata"]["after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    assert_eq!(walked, big, "the walk sees every event once, identical to the big page");

    let (_, default_page) = app.get("/events").await;
    assert_eq!(
        default_page["data"].as_array().map(Vec::len),
        Some(st.expected.len()),
        "default limit 10"
    );
    let (_, three) = app.get("/events?limit=3").await;
    assert_eq!(three["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        three["list_metadata"]["after"], big[2]["id"],
        "the cursor is the last event's id"
    );
    app.stop().await;
}

#[tokio::test]
async fn order_desc_is_the_exact_reverse_of_asc() {
    let app = TestApp::spawn().await;
    story(&app).await;
    let (_, asc) = app.get("/events?limit=100&order=asc").await;
    let (_, desc) = app.get("/events?limit=100&order=desc").await;
    let mut asc: Vec<Value> = asc["data"].as_array().cloned().unwrap_or_default();
    let desc: Vec<Value> = desc["data"].as_array().cloned().unwrap_or_default();
    assert!(!asc.is_empty());
    asc.reverse();
    assert_eq!(desc, asc);

    // Paging backwards with a cursor continues the reversed order.
    let (_, first) = app.get("/events?limit=2&order=desc").await;
    let cursor = first["list_metadata"]["after"].as_str().unwrap_or_default().to_string();
    let (_, next) = app.get(&format!("/events?limit=2&order=desc&after={cursor}")).await;
    assert_eq!(
        next["data"].as_array().cloned().unwrap_or_default(),
        desc[2..4].to_vec()
    );
    app.stop().await;
}

#[tokio::test]
async fn user_updated_carries_the_previous_attributes_and_the_api_key_actor() {
    let app = TestApp::spawn().await;
    let (s, user) = app
        .post(
            "/user_management/users",
            json!({ "email": "ann@example.com", "first_name": "Ann" }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{user}");
    let uid = id_of(&user);
    let (s, body) = app
        .put(
            &format!("/user_management/users/{uid}"),
            json!({ "first_name": "Anna", "last_name": "Lee" }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");

    let (key_id,): (String,) = sqlx::query_as("select id from api_key where name = 'tests'")
        .fetch_one(&app.pool)
        .await
        .expect("api key id");
    let events = app.all_events("").await;
    assert_eq!(events.len(), 2);
    let updated = &events[1];
    assert_eq!(updated["event"], "user.updated");
    assert_eq!(updated["data"]["first_name"], "Anna");
    assert_eq!(updated["data"]["last_name"], "Lee");
    assert_eq!(
        updated["context"]["previous_attributes"],
        json!({ "first_name": "Ann", "last_name": null }),
        "only changed fields, with their old values"
    );
    assert!(
        events[0]["context"].get("previous_attributes").is_none(),
        "not on *.created"
    );
    for e in &events {
        assert_eq!(
            e["context"]["actor"],
            json!({ "id": key_id, "source": "api", "name": "tests" }),
            "{}",
            e["event"]
        );
    }
    app.stop().await;
}

async fn metadata_of(app: &TestApp, aggregate_id: &str) -> Value {
    let (m,): (Value,) = sqlx::query_as("select metadata from event where aggregate_id = $1")
        .bind(aggregate_id)
        .fetch_one(&app.pool)
        .await
        .expect("event metadata");
    m
}

async fn create_user_with_headers(app: &TestApp, email: &str, request_id: Option<&str>) -> (String, String) {
    let mut req = app
        .http
        .post(format!("{}/user_management/users", app.base))
        .bearer_auth(&app.key)
        .header("user-agent", "keyledger-tests/1.0")
        .json(&json!({ "email": email }));
    if let Some(r) = request_id {
        req = req.header("x-request-id", r);
    }
    let resp = req.send().await.expect("send");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let echoed = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id response header")
        .to_string();
    let body: Value = resp.json().await.expect("json");
    (id_of(&body), echoed)
}

#[tokio::test]
async fn stored_events_record_the_request_id_ip_user_agent_and_time() {
    let app = TestApp::spawn().await;
    let (given_user, echoed) = create_user_with_headers(&app, "ann@example.com", Some("req-given-123")).await;
    assert_eq!(echoed, "req-given-123", "the given request id is echoed");
    let (generated_user, generated) = create_user_with_headers(&app, "bob@example.com", None).await;
    assert!(
        !generated.is_empty() && generated != "req-given-123",
        "a request id is generated: {generated}"
    );

    let (key_id,): (String,) = sqlx::query_as("select id from api_key where name = 'tests'")
        .fetch_one(&app.pool)
        .await
        .expect("api key id");
    for (case, user, request_id) in [
        ("given request id", &given_user, "req-given-123"),
        ("generated request id", &generated_user, generated.as_str()),
    ] {
        let m = metadata_of(&app, user).await;
        assert_eq!(m["request_id"], request_id, "{case}: {m}");
        assert_eq!(m["ip"], "127.0.0.1", "{case}: {m}");
        assert_eq!(m["user_agent"], "keyledger-tests/1.0", "{case}: {m}");
        assert_eq!(m["actor_id"], key_id.as_str(), "{case}: {m}");
        let at = m["occurred_at"].as_str().unwrap_or_default();
        let at = chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{case}: occurred_at {m}: {e}"));
        let age = chrono::Utc::now().signed_duration_since(at);
        assert!(
            age >= chrono::Duration::zero() && age < chrono::Duration::minutes(5),
            "{case}: occurred_at {at}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn bad_feed_queries_return_422_and_change_nothing() {
    let app = TestApp::spawn().await;
    app.create_user("ann@example.com").await;
    let before = app.log_len().await;
    let cases = [
        ("limit 0", "limit=0", "invalid_limit"),
        ("limit 101", "limit=101", "invalid_limit"),
        ("limit abc", "limit=abc", "invalid_limit"),
        ("limit negative", "limit=-1", "invalid_limit"),
        ("limit twice", "limit=1&limit=2", "duplicate_parameter"),
        ("bad order", "order=sideways", "invalid_order"),
        ("bad range_start", "range_start=yesterday", "invalid_timestamp"),
        ("bad range_end", "range_end=2024-13-01", "invalid_timestamp"),
        (
            "range_start after range_end",
            "range_start=2024-02-01T00:00:00Z&range_end=2024-01-01T00:00:00Z",
            "invalid_range",
        ),
        (
            "unknown after cursor",
            "after=event_01HZZZZZZZZZZZZZZZZZZZZZZZ",
            "invalid_cursor",
        ),
    ];
    for (case, query, code) in cases {
        let (s, body) = app.get(&format!("/events?{query}")).await;
        let code = format!("invalid_request_parameters/{code}");
        assert_error(s, &body, StatusCode::UNPROCESSABLE_ENTITY, &code, case);
        assert_eq!(app.log_len().await, before, "{case}: log unchanged");
    }
    app.stop().await;
}

/// Appends `n` `UserUpdated` events of `user` (sequences from `first_seq`), one statement, with
/// `recorded_at` = `at(i)`: a log whose `created_at` runs out of feed order where it says so.
async fn append_updates(app: &TestApp, user: &str, first_seq: i64, times: &[chrono::DateTime<chrono::Utc>]) {
    let ts: Vec<String> = times
        .iter()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .collect();
    sqlx::query(
        "insert into event (id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
         metadata, recorded_at) \
         select 'event_0' || upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 25)), 'User', $1, $2 + n - 1, \
         'UserUpdated', '1', jsonb_build_object('UserUpdated', jsonb_build_object('at', t, 'changes', \
         jsonb_build_object('first_name', 'Ann' || n))), jsonb_build_object('actor_id', 'system', 'occurred_at', t), \
         t::timestamptz from unnest($3::text[]) with ordinality as u(t, n)",
    )
    .bind(user)
    .bind(first_seq)
    .bind(&ts)
    .execute(&app.pool)
    .await
    .expect("append updates");
}

#[tokio::test]
async fn a_type_and_time_range_finds_exactly_the_matching_events_however_the_times_run() {
    let app = TestApp::spawn().await;
    let user = id_of(&app.create_user("ann@example.com").await);
    let other = id_of(&app.create_user("bob@example.com").await);
    // After the two users the API created: the seek starts inside the updates.
    let t0 = chrono::Utc::now() + chrono::Duration::days(1);
    let t0 = chrono::DateTime::from_timestamp(t0.timestamp(), 0).expect("whole seconds");
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    // A quiet window (5 updates in its first seconds), then a long busy stretch an hour later:
    // more than a walk reads before it gives up on the window.
    let mut times: Vec<_> = (1..=5).map(at).collect();
    times.extend((0..300).map(|i| at(3_600 + i)));
    append_updates(&app, &user, 2, &times).await;
    // Stragglers: committed after all of them, yet recorded inside the window and inside the
    // busy stretch (a transaction that began earlier and committed later).
    append_updates(&app, &user, 307, &[at(2), at(3_700)]).await;
    append_updates(&app, &other, 2, &[at(4)]).await;
    wait_caught_up(&app.pool).await;

    let feed = app.all_events("").await;
    let time = |e: &Value| -> chrono::DateTime<chrono::Utc> {
        e["created_at"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .expect("created_at")
    };
    let q = |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let cases: Vec<(&str, Option<i64>, Option<i64>)> = vec![
        ("the quiet window, its straggler at the feed's end", Some(0), Some(10)),
        ("from inside the busy stretch", Some(3_650), None),
        ("a window inside the busy stretch", Some(3_650), Some(3_710)),
        ("up to the busy stretch", None, Some(3_600)),
        ("a window with nothing", Some(100), Some(200)),
    ];
    for (case, start, end) in cases {
        let mut query = "&events=user.updated".to_string();
        if let Some(s) = start {
            query.push_str(&format!("&range_start={}", q(at(s))));
        }
        if let Some(e) = end {
            query.push_str(&format!("&range_end={}", q(at(e))));
        }
        let want: Vec<Value> = feed
            .iter()
            .filter(|e| {
                e["event"] == "user.updated"
                    && start.is_none_or(|s| time(e) >= at(s))
                    && end.is_none_or(|x| time(e) < at(x))
            })
            .cloned()
            .collect();
        assert_eq!(app.all_events(&query).await, want, "{case}: one page of 100 at a time");
        let walked = app.all_pages(&format!("/events?limit=1&order=asc{query}")).await;
        assert_eq!(walked, want, "{case}: a page of 1 at a time");
        let mut backwards = app.all_pages(&format!("/events?limit=7&order=desc{query}")).await;
        backwards.reverse();
        assert_eq!(backwards, want, "{case}: newest first, 7 at a time");
    }

    // Every type, and two types, over a range.
    let range = format!("&range_start={}&range_end={}", q(at(0)), q(at(3_605)));
    let in_range = |e: &&Value| time(e) >= at(0) && time(e) < at(3_605);
    let want: Vec<Value> = feed.iter().filter(in_range).cloned().collect();
    assert_eq!(
        app.all_pages(&format!("/events?limit=3&order=asc{range}")).await,
        want,
        "every type"
    );
    let want: Vec<Value> = feed
        .iter()
        .filter(in_range)
        .filter(|e| e["event"] == "user.updated" || e["event"] == "user.created")
        .cloned()
        .collect();
    let both = format!("/events?limit=3&order=asc&events=user.created,user.updated{range}");
    assert_eq!(app.all_pages(&both).await, want, "two types");
    app.stop().await;
}
