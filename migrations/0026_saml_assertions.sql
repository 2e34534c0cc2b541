-- SAML sign-in (issue 10): every assertion id a connection accepted, kept until the assertion's
-- NotOnOrAfter, so an assertion is used once even if its response were posted again with another
-- RelayState (the RelayState itself is single use: sso_state). Swept like the other sign-in rows.
create table saml_assertion (
    connection_id text not null,
    assertion_id  text not null,
    expires_at    timestamptz not null,
    primary key (connection_id, assertion_id)
);
create index saml_assertion_expiry_idx on saml_assertion (expires_at);
