//! The `Organization` aggregate: an enterprise customer, with its domains and their verification
//! states. Domains live inside the organization so "one verified owner per domain" is one rule.

mod aggregate;
mod commands;
mod events;
mod policy;

pub use aggregate::{DomainRecord, DomainState, Organization, OrganizationError};
pub use commands::{NewDomain, OrganizationCommand, UpdateOrganization};
pub use events::{OrganizationChanges, OrganizationEvent};
pub use policy::{AuthenticationPolicy, MembershipPolicy, OrganizationPolicy};

/// The DNS label under which a domain's verification token is published as a TXT record.
pub const VERIFICATION_PREFIX: &str = "_keyledger-challenge";
