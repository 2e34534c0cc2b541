//! Deleting a user or an organization together with its memberships, in one append: every
//! membership's `MembershipDeleted` (by membership id), then the parent's own events (for an
//! organization: its domains' `OrganizationDomainDeleted`, then `OrganizationDeleted`).
//! It never leaves a membership of a deleted parent behind: the memberships are read from their
//! claims (written with the log, unlike the lagging read model), and the parent's delete event
//! refuses the append while one still names it (`Claim::NoDependents`), so a membership created
//! meanwhile makes the cascade decide again. Creation locks its parents (`Claim::Require`) and
//! deletion gives its own liveness claim up first, so no creation commits after a deletion
//! (ARCHITECTURE.md, "Cascading deletes").

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use keyledger_domain::membership::{MembershipCommand, MembershipError, MembershipEvent, OrganizationMembership};
use keyledger_domain::{Claims, NoServices, Tenanted};

use crate::append::{AppendError, SideRows};
use crate::commands::{append_error, CommandBus, CommandError, Mode, MAX_ATTEMPTS};
use crate::log::LogPosition;

/// What is being deleted: which part of a membership key (`<organization_id>:<user_id>`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parent {
    User,
    Organization,
}

/// A committed cascade.
#[derive(Debug)]
pub struct Cascaded<A: Aggregate> {
    /// The memberships deleted with the parent, in event order.
    pub memberships: Vec<String>,
    /// The parent's own events.
    pub events: Vec<A::Event>,
    pub position: LogPosition,
}

/// The live memberships of a user or an organization, by id, from the membership claims.
pub async fn memberships_of(pool: &sqlx::PgPool, parent: Parent, id: &str) -> Result<Vec<String>, sqlx::Error> {
    // Literal parts, so each query matches its expression index (migration 0011).
    let sql = match parent {
        Parent::Organization => {
            "select aggregate_id from claim where kind = 'membership' and split_part(value, ':', 1) = $1 order by aggregate_id"
        }
        Parent::User => {
            "select aggregate_id from claim where kind = 'membership' and split_part(value, ':', 2) = $1 order by aggregate_id"
        }
    };
    let rows: Vec<(String,)> = sqlx::query_as(sql).bind(id).fetch_all(pool).await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

impl CommandBus {
    /// Runs `command` (the parent's delete) on `id` together with the deletion of every
    /// membership that names it, in one append. A lost race (a membership created, changed or
    /// deleted meanwhile, or the parent changed) decides everything again, up to
    /// [`MAX_ATTEMPTS`] times, then answers [`CommandError::Conflict`].
    pub async fn delete_with_memberships<A>(
        &self,
        parent: Parent,
        id: &str,
        command: A::Command,
        at: DateTime<Utc>,
        metadata: &HashMap<String, String>,
        side: &SideRows,
    ) -> Result<Cascaded<A>, CommandError<A::Error>>
    where
        A: Aggregate<Services = NoServices> + Tenanted,
        A::Command: Clone,
        A::Event: Claims,
    {
        for _ in 0..MAX_ATTEMPTS {
            let ids = memberships_of(self.store().pool(), parent, id)
                .await
                .map_err(|e| crate::commands::storage(&e))?;
            let mut new_events = Vec::new();
            let mut memberships = Vec::new();
            for m in ids {
                let decided = self
                    .decide::<OrganizationMembership>(&m, MembershipCommand::Delete { at }, metadata, Mode::Once)
                    .await;
                match decided {
                    Ok(d) => {
                        new_events.extend(d.new_events);
                        if d.events
                            .iter()
                            .any(|e| matches!(e, MembershipEvent::MembershipDeleted { .. }))
                        {
                            memberships.push(m);
                        }
                    }
                    // Deleted since the claims were read: nothing to do for it.
                    Err(CommandError::Domain(MembershipError::NotFound)) => {}
                    Err(e) => return Err(membership_error(e)),
                }
            }
            let own = self.decide::<A>(id, command.clone(), metadata, Mode::Once).await?;
            new_events.extend(own.new_events);
            if new_events.is_empty() {
                return Err(CommandError::Storage("a cascade decided no events".into()));
            }
            match self.store().append(new_events, side.clone()).await {
                Ok(position) => {
                    return Ok(Cascaded {
                        memberships,
                        events: own.events,
                        position,
                    })
                }
                Err(AppendError::Conflict) => continue,
                Err(e) => return Err(append_error(e)),
            }
        }
        Err(CommandError::Conflict)
    }
}

/// A membership's failure inside a parent's cascade, as the parent's.
fn membership_error<E: std::error::Error>(e: CommandError<MembershipError>) -> CommandError<E> {
    match e {
        CommandError::Domain(d) => CommandError::Storage(format!("membership in a cascade: {d}")),
        CommandError::Claim(c) => CommandError::Claim(c),
        CommandError::Missing(m) => CommandError::Missing(m),
        CommandError::Conflict => CommandError::Conflict,
        CommandError::Storage(s) => CommandError::Storage(s),
        CommandError::Unavailable(s) => CommandError::Unavailable(s),
    }
}
