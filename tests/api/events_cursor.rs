//! Tests: the organization-scoped `GET /events?organization_id=X` resumes from any event id of
//! the whole feed (another organization's, or an environment-wide user event), in both orders
//! and both directions, and refuses an unknown id with 422 instead of an empty page.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;

/// Two organizations whose events interleave with each other's and with users' events.
async fn interleaved(app: &TestApp) -> (String, String) {
    let a = id_of(&app.create_organization("Alpha", json!([])).await);
    let b = id_of(&app.create_organization("Beta", json!([])).await);
    let ann = id_of(&app.create_user("ann@example.com").await);
    app.create_membership(&ann, &a, None).await;
    app.create_membership(&ann, &b, None).await;
    for (org, name) in [(&a, "Alpha 2"), (&b, "Beta 2"), (&a, "Alpha 3")] {
        let (s, body) = app.put(&format!("/organizations/{org}"), json!({ "name": name })).await;
        assert_eq!(s, StatusCode::OK, "{body}");
    }
    let bob = id_of(&app.create_user("bob@example.com").await);
    app.create_membership(&bob, &a, None).await;
    let (s, body) = app
        .post(
            "/organization_domains",
            json!({ "domain": "beta.example", "organization_id": b }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    (a, b)
}

fn event_ids(events: &[Value]) -> Vec<String> {
    events.iter().map(id_of).collect()
}

#[tokio::test]
async fn a_scoped_feed_resumes_from_any_event_id_in_both_orders_and_directions() {
    let app = TestApp::spawn().await;
    let (a, _) = interleaved(&app).await;
    let global = event_ids(&app.all_events("").await);
    let scoped = event_ids(&app.all_events(&format!("&organization_id={a}")).await);
    assert!(
        scoped.len() >= 5 && scoped.len() < global.len(),
        "{scoped:?} of {global:?}"
    );
    let index = |id: &String| {
        global
            .iter()
            .position(|g| g == id)
            .expect("scoped event in the global feed")
    };
    let mut outside = 0;
    for cursor in &global {
        let c = index(cursor);
        outside += usize::from(!scoped.contains(cursor));
        let older: Vec<String> = scoped.iter().filter(|s| index(s) < c).cloned().collect();
        let newer: Vec<String> = scoped.iter().filter(|s| index(s) > c).cloned().collect();
        let reversed = |v: &[String]| v.iter().rev().cloned().collect::<Vec<String>>();
        let cases = [
            ("asc", "after", newer.clone()),
            ("asc", "before", older.clone()),
            ("desc", "after", reversed(&older)),
            ("desc", "before", reversed(&newer)),
        ];
        for (order, direction, want) in cases {
            let path = format!("/events?organization_id={a}&order={order}&{direction}={cursor}&limit=100");
            let (s, body) = app.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {body}");
            assert_eq!(ids(&body), want, "{path}");
        }
    }
    assert!(
        outside >= 4,
        "the cursors include events of the other organization and of users"
    );
    app.stop().await;
}

#[tokio::test]
async fn paging_a_scoped_feed_from_a_foreign_cursor_reaches_every_later_event() {
    let app = TestApp::spawn().await;
    let (a, b) = interleaved(&app).await;
    let global = event_ids(&app.all_events("").await);
    let scoped = event_ids(&app.all_events(&format!("&organization_id={a}")).await);
    // The first event of the other organization: every later event of `a` must follow.
    let foreign = event_ids(&app.all_events(&format!("&organization_id={b}")).await)[0].clone();
    let from = global.iter().position(|g| *g == foreign).expect("in the feed");
    let want: Vec<String> = scoped
        .iter()
        .filter(|s| global.iter().position(|g| g == *s) > Some(from))
        .cloned()
        .collect();
    assert!(want.len() >= 3, "{want:?}");
    let mut got = Vec::new();
    let mut after = foreign;
    loop {
        let (s, body) = app
            .get(&format!("/events?organization_id={a}&order=asc&limit=1&after={after}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{body}");
        got.extend(ids(&body));
        match body["list_metadata"]["after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
        assert!(got.len() <= want.len(), "paging does not end: {got:?}");
    }
    assert_eq!(got, want);
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_cursor_on_a_scoped_feed_is_a_422_naming_its_parameter() {
    let app = TestApp::spawn().await;
    let (a, _) = interleaved(&app).await;
    let before = app.log_len().await;
    for order in ["asc", "desc"] {
        for direction in ["after", "before"] {
            let (s, body) = app
                .get(&format!(
                    "/events?organization_id={a}&order={order}&{direction}=event_01HZZZZZZZZZZZZZZZZZZZZZZZ"
                ))
                .await;
            let case = format!("{order} {direction}");
            assert_error(
                s,
                &body,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_parameters/invalid_cursor",
                &case,
            );
            assert_eq!(body["errors"][0]["field"], direction, "{case}: {body}");
        }
    }
    assert_eq!(app.log_len().await, before);
    app.stop().await;
}
