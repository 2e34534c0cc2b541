//! The `Connection` aggregate: an organization's SSO connection (OIDC or SAML) from its
//! creation ("SSO connection added") through activation, changes and deactivation to deletion.
//! No event ever carries a client secret or a private key: those live sealed beside the log
//! (`connection_secret`), and events name them only by the id of their sealed row.

mod aggregate;
mod events;

pub use aggregate::{
    complete, Connection, ConnectionCommand, ConnectionError, ConnectionState, CreateConnection, UpdateConnection,
    CLIENT_SECRET, JWT_SIGNING_KEY,
};
pub use events::{ConnectionEvent, OidcOptions, SamlOptions, SecretRefs};
