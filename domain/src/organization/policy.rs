//! An organization's policy for the users of its verified domains (keyledger's extension): who
//! joins it by their email's domain (`membership`), with which role, and how they may sign in
//! (`authentication`). Parsed values only; the aggregate records changes, the API applies them.

use serde::{Deserialize, Serialize};

use crate::values::{InvalidValue, RoleSlug};

/// Whether users with a verified email at a verified domain join the organization by themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipPolicy {
    /// They join on creation, verification or sign-in, with the policy's default role (JIT).
    Auto,
    /// Only an invitation or the API makes them members.
    #[default]
    InviteOnly,
}

impl MembershipPolicy {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "auto" => Ok(Self::Auto),
            "invite_only" => Ok(Self::InviteOnly),
            _ => Err(InvalidValue::new(
                field,
                "invalid_membership_policy",
                format!("{field} must be auto or invite_only, not '{raw}'"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::InviteOnly => "invite_only",
        }
    }
}

/// How users with an email at a verified domain may sign in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticationPolicy {
    /// Every method the environment offers.
    #[default]
    Any,
    /// Only SSO: password and Magic Auth sign-in answer `sso_required`.
    SsoRequired,
}

impl AuthenticationPolicy {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "any" => Ok(Self::Any),
            "sso_required" => Ok(Self::SsoRequired),
            _ => Err(InvalidValue::new(
                field,
                "invalid_authentication_policy",
                format!("{field} must be any or sso_required, not '{raw}'"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::SsoRequired => "sso_required",
        }
    }
}

/// The whole policy. Default (never set): `invite_only`, `member`, `any`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganizationPolicy {
    pub membership: MembershipPolicy,
    pub default_role: RoleSlug,
    pub authentication: AuthenticationPolicy,
}

impl Default for OrganizationPolicy {
    fn default() -> Self {
        Self {
            membership: MembershipPolicy::default(),
            default_role: RoleSlug::member(),
            authentication: AuthenticationPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_values_parse_their_names_and_refuse_others() {
        for m in [MembershipPolicy::Auto, MembershipPolicy::InviteOnly] {
            assert_eq!(MembershipPolicy::parse("membership", m.as_str()), Ok(m));
        }
        for a in [AuthenticationPolicy::Any, AuthenticationPolicy::SsoRequired] {
            assert_eq!(AuthenticationPolicy::parse("authentication", a.as_str()), Ok(a));
        }
        let e = MembershipPolicy::parse("membership", "Auto").unwrap_err();
        assert_eq!((e.field, e.code), ("membership", "invalid_membership_policy"));
        let e = AuthenticationPolicy::parse("authentication", "sso").unwrap_err();
        assert_eq!((e.field, e.code), ("authentication", "invalid_authentication_policy"));
    }

    #[test]
    fn the_default_policy_is_invite_only_member_any() {
        let p = OrganizationPolicy::default();
        assert_eq!(
            (p.membership, p.default_role.as_str(), p.authentication),
            (MembershipPolicy::InviteOnly, "member", AuthenticationPolicy::Any)
        );
    }
}
