//! The `OrganizationMembership` aggregate: one user's membership of one organization, with its
//! role and status. "One membership per user and organization" is a claim taken at creation.

mod aggregate;
mod events;

pub use aggregate::{MembershipCommand, MembershipError, MembershipStatus, OrganizationMembership};
pub use events::MembershipEvent;
