//! Group commit: concurrent commands share statements and commits, yet each keeps its own
//! outcome. A burst mixes commands that must fail (a claim already taken, a sequence already
//! taken, an organization whose second domain is owned elsewhere) with commands that must
//! succeed; exactly the former fail, and nothing of a failed command is written.

use std::collections::HashMap;
use std::sync::Arc;

use keyledger_domain::ids::new_id;
use keyledger_domain::organization::{DomainState, NewDomain, Organization, OrganizationCommand};
use keyledger_domain::user::{UpdateUser, User, UserCommand};
use keyledger_domain::values::{DomainName, Metadata};
use keyledger_store::append::{AppendError, SideRows};
use keyledger_store::commands::{CommandBus, CommandError, Mode};
use keyledger_store::EventStore;
use tokio::sync::Barrier;

use crate::helpers::*;

fn create_org(domains: &[&str]) -> OrganizationCommand {
    OrganizationCommand::Create {
        name: "Group Co".into(),
        external_id: None,
        metadata: Metadata::new(),
        allow_profiles_outside_organization: false,
        domains: domains
            .iter()
            .map(|d| NewDomain {
                id: new_id("org_domain"),
                domain: DomainName::parse("domain", d).expect("valid domain"),
                state: DomainState::Verified,
                verification_token: "t".into(),
            })
            .collect(),
        at: chrono::Utc::now(),
    }
}

fn meta() -> HashMap<String, String> {
    HashMap::from([("actor_id".to_string(), "test".to_string())])
}

/// What one command of the burst is, and how it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    TakenEmail,
    FreshEmail,
    SameSequence,
    ContestedEmail,
    OwnedDomain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Ok,
    Claim,
    Conflict,
    Other,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_commands_fails_exactly_those_that_conflict_and_writes_nothing_of_them() {
    let url = fresh_database().await;
    let pool = keyledger_api::connect(&url).await.expect("connect");
    let bus = CommandBus::new(EventStore::new(pool.clone()));
    let m = meta();

    bus.execute::<User>(
        &new_id("user"),
        create_user_command("taken@gc.example"),
        &m,
        SideRows::default(),
        Mode::New,
    )
    .await
    .expect("the first holder of the email");
    let target = new_id("user");
    bus.execute::<User>(
        &target,
        create_user_command("target@gc.example"),
        &m,
        SideRows::default(),
        Mode::New,
    )
    .await
    .expect("the user whose next sequence is contested");
    bus.execute::<Organization>(
        &new_id("org"),
        create_org(&["owned.example"]),
        &m,
        SideRows::default(),
        Mode::New,
    )
    .await
    .expect("the owner of the verified domain");
    // One decision on the target at sequence 2, appended by ten commands at once: one wins.
    let update = UserCommand::Update(UpdateUser {
        email: None,
        first_name: Some(Some("Won".into())),
        last_name: None,
        name: None,
        email_verified: None,
        external_id: None,
        metadata: None,
        locale: None,
        password_changed: false,
        drop_unproved_password: false,
        at: chrono::Utc::now(),
    });
    let decided = bus
        .decide::<User>(&target, update, &m, Mode::Once)
        .await
        .expect("decide the update");
    assert_eq!(decided.new_events.len(), 1);
    assert_eq!(decided.new_events[0].sequence, 2);

    let mut plan: Vec<(Kind, String, String)> = Vec::new();
    for i in 0..10 {
        plan.push((Kind::TakenEmail, new_id("user"), "taken@gc.example".into()));
        plan.push((Kind::FreshEmail, new_id("user"), format!("fresh{i}@gc.example")));
        plan.push((Kind::SameSequence, target.clone(), String::new()));
    }
    for i in 0..3 {
        for _ in 0..2 {
            plan.push((Kind::ContestedEmail, new_id("user"), format!("contested{i}@gc.example")));
        }
    }
    for i in 0..4 {
        plan.push((Kind::OwnedDomain, new_id("org"), format!("free{i}.example")));
    }

    let barrier = Arc::new(Barrier::new(plan.len()));
    let mut tasks = Vec::new();
    for (kind, id, value) in plan.clone() {
        let bus = bus.clone();
        let barrier = barrier.clone();
        let events = decided.new_events.clone();
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let end = match kind {
                Kind::TakenEmail | Kind::FreshEmail | Kind::ContestedEmail => end_of(
                    bus.execute::<User>(&id, create_user_command(&value), &m, SideRows::default(), Mode::New)
                        .await,
                ),
                Kind::OwnedDomain => end_of(
                    bus.execute::<Organization>(
                        &id,
                        create_org(&[&value, "owned.example"]),
                        &m,
                        SideRows::default(),
                        Mode::New,
                    )
                    .await,
                ),
                Kind::SameSequence => match bus.store().append(events, SideRows::default()).await {
                    Ok(_) => End::Ok,
                    Err(AppendError::Conflict) => End::Conflict,
                    Err(_) => End::Other,
                },
            };
            (kind, id, value, end)
        }));
    }
    let mut ends = Vec::new();
    for t in tasks {
        ends.push(t.await.expect("task"));
    }

    let count = |k: Kind, e: End| ends.iter().filter(|(kind, _, _, end)| *kind == k && *end == e).count();
    assert_eq!(count(Kind::TakenEmail, End::Claim), 10, "{ends:?}");
    assert_eq!(count(Kind::FreshEmail, End::Ok), 10, "{ends:?}");
    assert_eq!(count(Kind::SameSequence, End::Ok), 1, "{ends:?}");
    assert_eq!(count(Kind::SameSequence, End::Conflict), 9, "{ends:?}");
    assert_eq!(count(Kind::ContestedEmail, End::Ok), 3, "{ends:?}");
    assert_eq!(count(Kind::ContestedEmail, End::Claim), 3, "{ends:?}");
    assert_eq!(count(Kind::OwnedDomain, End::Claim), 4, "{ends:?}");

    // Nothing of a failed command is in the log or holds a claim.
    for (_, id, value, end) in &ends {
        let (events,): (i64,) = sqlx::query_as("select count(*) from event where aggregate_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("count");
        if id == &target {
            continue;
        }
        if *end == End::Ok {
            assert!(events >= 1, "{id} succeeded with no events");
        } else {
            assert_eq!(events, 0, "{id} ({end:?}) left events in the log");
        }
        let (claims,): (i64,) = sqlx::query_as("select count(*) from claim where aggregate_id = $1")
            .bind(id)
            .fetch_one(&pool)
            .await
            .expect("claims");
        assert_eq!(claims > 0, *end == End::Ok, "{id} ({end:?}) holds {claims} claims");
        if !value.is_empty() && *end == End::Ok {
            let (holder,): (String,) = sqlx::query_as("select aggregate_id from claim where value = lower($1)")
                .bind(value)
                .fetch_one(&pool)
                .await
                .expect("the winner holds the value");
            assert_eq!(&holder, id);
        }
    }
    let free: Vec<(String,)> = sqlx::query_as("select value from claim where value like 'free%'")
        .fetch_all(&pool)
        .await
        .expect("claims");
    assert!(
        free.is_empty(),
        "a refused organization left its first domain claimed: {free:?}"
    );
    let (target_events,): (i64,) = sqlx::query_as("select count(*) from event where aggregate_id = $1")
        .bind(&target)
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(target_events, 2, "created, then exactly one update");

    // The burst shared commits: some transaction holds more than one command's events.
    let (shared,): (i64,) = sqlx::query_as(
        "select count(*) from (select transaction_id from event group by transaction_id \
         having count(distinct aggregate_id) > 1) t",
    )
    .fetch_one(&pool)
    .await
    .expect("shared");
    assert!(shared > 0, "no two commands shared a commit");
}

fn end_of<T, E: std::error::Error>(r: Result<T, CommandError<E>>) -> End {
    match r {
        Ok(_) => End::Ok,
        Err(CommandError::Claim(_)) => End::Claim,
        Err(CommandError::Conflict) => End::Conflict,
        Err(_) => End::Other,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_command_of_a_shared_commit_gets_its_own_position() {
    let url = fresh_database().await;
    let pool = keyledger_api::connect(&url).await.expect("connect");
    let bus = CommandBus::new(EventStore::new(pool.clone()));
    let barrier = Arc::new(Barrier::new(40));
    let mut tasks = Vec::new();
    for i in 0..40 {
        let bus = bus.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let id = new_id("user");
            barrier.wait().await;
            let done = bus
                .execute::<User>(
                    &id,
                    create_user_command(&format!("pos{i}@gc.example")),
                    &meta(),
                    SideRows::default(),
                    Mode::New,
                )
                .await
                .expect("create");
            (id, done.position.expect("a position"))
        }));
    }
    for t in tasks {
        let (id, at) = t.await.expect("task");
        let (txid, position): (i64, i64) = sqlx::query_as(
            "select transaction_id::text::bigint, max(position) from event where aggregate_id = $1 group by transaction_id",
        )
        .bind(&id)
        .fetch_one(&pool)
        .await
        .expect("its event");
        assert_eq!((at.transaction_id, at.position), (txid, position), "{id}");
    }
}
