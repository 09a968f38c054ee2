//! Who is calling: OIDC access tokens for the API ([`oidc`]), short-lived session-bound
//! attach tokens for terminals ([`attach`]), and the development issuer the all-in-one stack
//! logs in through ([`dev_issuer`]).

pub mod attach;
pub mod dev_issuer;
pub mod oidc;

use std::collections::BTreeSet;

use fogshell_shared::TenantId;

/// What the API may do for a caller, from the token's scope claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `fogshell.sessions`: create, list, attach and end one's own sessions.
    Sessions,
    /// `fogshell.admin`: nodes and join tokens.
    Admin,
    /// `fogshell.audit`: read the tenant's audit events.
    Audit,
}

impl Scope {
    /// The scope as it appears in tokens.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sessions => "fogshell.sessions",
            Self::Admin => "fogshell.admin",
            Self::Audit => "fogshell.audit",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Sessions, Self::Admin, Self::Audit]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The tenant the token's tenant claim names.
    pub tenant: TenantId,
    /// Granted fogshell scopes (others in the token are ignored).
    pub scopes: BTreeSet<Scope>,
}

impl Principal {
    /// Whether the caller holds `scope`.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// A refused credential: the rule that refused it (recorded as `policy.denied`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// `auth.token_expired`, `auth.wrong_audience`, … — stable, for the audit log.
    pub rule_id: &'static str,
    /// In words, safe to return to the caller (never the token).
    pub message: String,
}

impl AuthError {
    pub(crate) fn new(rule_id: &'static str, message: impl Into<String>) -> Self {
        Self {
            rule_id,
            message: message.into(),
        }
    }
}
