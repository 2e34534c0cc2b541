//! `keyledger api-keys list | revoke`: revocation by id or hint, refused for an ambiguous hint,
//! and reaching another server that had the key cached well within the cache's TTL.

use std::process::Command;
use std::time::{Duration, Instant};

use keyledger_api::api_keys::{self, RevokeError, Revoked};
use keyledger_api::auth::KEY_CACHE_TTL;
use reqwest::StatusCode;

use crate::helpers::TestApp;

/// Revocation must reach a server through NOTIFY: well before the cache's TTL would.
const NOTIFY_BOUND: Duration = Duration::from_secs(5);

async fn status_with(app: &TestApp, key: &str) -> StatusCode {
    app.request_with_key(reqwest::Method::GET, "/organizations", None, Some(key))
        .await
        .0
}

/// Polls `app` with `key` until it answers 401; returns how long that took.
async fn until_refused(app: &TestApp, key: &str) -> Duration {
    let started = Instant::now();
    loop {
        let status = status_with(app, key).await;
        if status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert_eq!(status, StatusCode::OK, "until revoked the key works");
        assert!(
            started.elapsed() < NOTIFY_BOUND,
            "the revoked key still works after {NOTIFY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn keyledger(db_url: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_keyledger"))
        .args(args)
        .env("DATABASE_URL", db_url)
        .env_remove("KEYLEDGER_BOOTSTRAP_API_KEY")
        .output()
        .expect("run keyledger");
    assert!(
        out.status.success(),
        "keyledger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_by_id_through_the_binary_is_refused_by_a_server_that_had_it_cached() {
    assert!(
        NOTIFY_BOUND < KEY_CACHE_TTL,
        "the test proves the notification, not the TTL"
    );
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db_url.clone()).await;
    let key = keyledger_api::auth::create_key(&a.pool, "to revoke")
        .await
        .expect("key");
    assert_eq!(status_with(&a, &key).await, StatusCode::OK);
    assert_eq!(status_with(&b, &key).await, StatusCode::OK, "b has it cached now");
    let id = api_keys::list(&a.pool)
        .await
        .expect("list")
        .into_iter()
        .find(|k| k.name == "to revoke")
        .expect("listed")
        .id;

    let out = keyledger(&a.db_url, &["api-keys", "revoke", &id]);
    assert!(out.contains(&format!("revoked {id}")), "{out}");
    until_refused(&b, &key).await;
    until_refused(&a, &key).await;
    assert_eq!(status_with(&b, &a.key).await, StatusCode::OK, "other keys still work");

    let listed = keyledger(&a.db_url, &["api-keys", "list"]);
    let line = listed
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the revoked key is still listed");
    assert!(line.contains("revoked"), "{listed}");
    assert!(line.contains("to revoke"), "{listed}");
    assert!(!listed.contains(&key), "the list never shows a secret: {listed}");
    let again = keyledger(&a.db_url, &["api-keys", "revoke", &id]);
    assert!(again.contains("already revoked"), "{again}");
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_revoked_by_its_hint_and_an_ambiguous_or_unknown_hint_is_refused() {
    let a = TestApp::spawn().await;
    let b = TestApp::spawn_on(a.db_url.clone()).await;
    // Same first six and last four characters: the same hint.
    let (twin1, twin2) = ("sk_twinAAAAAAAAAA_0000", "sk_twinBBBBBBBBBB_0000");
    let unique = "sk_uniqueCCCCCCCC_4321";
    for (name, secret) in [("twin 1", twin1), ("twin 2", twin2), ("unique", unique)] {
        assert!(keyledger_api::auth::register_key(&a.pool, name, secret)
            .await
            .expect("register"));
    }
    for k in [twin1, twin2, unique] {
        assert_eq!(status_with(&b, k).await, StatusCode::OK, "b caches {k}");
    }

    match api_keys::revoke(&a.pool, "sk_twi...0000").await {
        Err(RevokeError::Ambiguous { ids, .. }) => assert_eq!(ids.len(), 2, "{ids:?}"),
        other => panic!("an ambiguous hint is refused: {other:?}"),
    }
    assert!(matches!(
        api_keys::revoke(&a.pool, "sk_nop...0000").await,
        Err(RevokeError::NotFound(_))
    ));
    assert!(
        api_keys::list(&a.pool)
            .await
            .expect("list")
            .iter()
            .all(|k| k.revoked_at.is_none()),
        "refusals revoke nothing"
    );

    match api_keys::revoke(&a.pool, "sk_uni...4321").await {
        Ok(Revoked::Now(k)) => assert_eq!(k.name, "unique"),
        other => panic!("revoked by hint: {other:?}"),
    }
    until_refused(&b, unique).await;
    for k in [twin1, twin2] {
        assert_eq!(status_with(&b, k).await, StatusCode::OK, "{k} was not revoked");
    }
    assert!(matches!(
        api_keys::revoke(&a.pool, "sk_uni...4321").await,
        Ok(Revoked::Already(_))
    ));
    b.stop().await;
    a.stop().await;
}
