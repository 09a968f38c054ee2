//! How many viewers a gateway serves at once, per session and per tenant: one attach token
//! reused in a loop, or one tenant's abandoned tabs, must not take every terminal a node or
//! a coordinator can carry from everyone else. Past a limit a viewer is refused before the
//! upgrade (the gateway answers `429` with evidence); a slot is given back when its viewer
//! goes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fogshell_shared::sync::lock;
use fogshell_shared::{SessionId, TenantId};

/// The rule id of a refusal for want of room (`policy.denied`).
pub const VIEWER_LIMIT: &str = "pty.viewer_limit";

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewerLimits {
    /// Viewers of one session at once: a user's windows and a colleague looking on, not a
    /// flood through one token.
    pub per_session: usize,
    /// Viewers of one tenant's sessions at once, through this gateway.
    pub per_tenant: usize,
}

impl Default for ViewerLimits {
    fn default() -> Self {
        Self {
            per_session: 8,
            per_tenant: 256,
        }
    }
}

/// A limit a viewer was refused by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    /// The session has this many viewers already.
    Session(SessionId, usize),
    /// The tenant has this many viewers already.
    Tenant(TenantId, usize),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(session, n) => write!(
                f,
                "session {session} has {n} viewers already, as many as one session may have"
            ),
            Self::Tenant(tenant, n) => write!(
                f,
                "tenant {tenant} has {n} viewers open here already, as many as one tenant may have"
            ),
        }
    }
}

/// The viewers a gateway serves now.
#[derive(Debug)]
pub struct Viewers {
    limits: ViewerLimits,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    sessions: HashMap<SessionId, usize>,
    tenants: HashMap<TenantId, usize>,
}

impl Viewers {
    /// No viewers yet, under `limits`.
    pub fn new(limits: ViewerLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
        })
    }

    /// A slot for one more viewer of `session` (of `tenant`, when the gateway knows it), held
    /// until the slot is dropped.
    pub fn admit(
        self: &Arc<Self>,
        session: SessionId,
        tenant: Option<&TenantId>,
    ) -> Result<ViewerSlot, Full> {
        let mut counts = lock(&self.counts);
        let of_session = counts.sessions.get(&session).copied().unwrap_or(0);
        if of_session >= self.limits.per_session {
            return Err(Full::Session(session, of_session));
        }
        if let Some(tenant) = tenant {
            let of_tenant = counts.tenants.get(tenant).copied().unwrap_or(0);
            if of_tenant >= self.limits.per_tenant {
                return Err(Full::Tenant(tenant.clone(), of_tenant));
            }
            *counts.tenants.entry(tenant.clone()).or_default() += 1;
        }
        *counts.sessions.entry(session).or_default() += 1;
        Ok(ViewerSlot {
            viewers: Arc::clone(self),
            session,
            tenant: tenant.cloned(),
        })
    }
}

/// One viewer's place; given back when dropped.
#[derive(Debug)]
pub struct ViewerSlot {
    viewers: Arc<Viewers>,
    session: SessionId,
    tenant: Option<TenantId>,
}

impl Drop for ViewerSlot {
    fn drop(&mut self) {
        let mut counts = lock(&self.viewers.counts);
        // Entries at zero go, so the maps stay as small as what is attached now.
        fn give_back<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        give_back(&mut counts.sessions, &self.session);
        if let Some(tenant) = &self.tenant {
            give_back(&mut counts.tenants, tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(n: u8) -> SessionId {
        SessionId::from_random_bytes([n; 16])
    }

    fn tenant(name: &str) -> TenantId {
        name.parse().unwrap()
    }

    #[test]
    fn a_session_and_a_tenant_get_their_share_and_no_more() {
        let viewers = Viewers::new(ViewerLimits {
            per_session: 2,
            per_tenant: 3,
        });
        let a = tenant("org-a");
        let first = viewers.admit(session(1), Some(&a)).unwrap();
        let _second = viewers.admit(session(1), Some(&a)).unwrap();
        assert_eq!(
            viewers.admit(session(1), Some(&a)).unwrap_err(),
            Full::Session(session(1), 2)
        );
        let _third = viewers.admit(session(2), Some(&a)).unwrap();
        assert_eq!(
            viewers.admit(session(3), Some(&a)).unwrap_err(),
            Full::Tenant(a.clone(), 3)
        );
        // Another tenant is not held back by the first one's viewers.
        let _other = viewers.admit(session(4), Some(&tenant("org-b"))).unwrap();
        // A viewer that goes gives its place back.
        drop(first);
        let _again = viewers.admit(session(1), Some(&a)).unwrap();
    }

    #[test]
    fn slots_given_back_leave_nothing_behind() {
        let viewers = Viewers::new(ViewerLimits::default());
        let slots: Vec<_> = (0..5)
            .map(|n| viewers.admit(session(n), Some(&tenant("org-a"))).unwrap())
            .collect();
        drop(slots);
        let counts = lock(&viewers.counts);
        assert!(counts.sessions.is_empty() && counts.tenants.is_empty());
    }

    #[test]
    fn a_gateway_that_knows_no_tenant_counts_sessions_only() {
        let viewers = Viewers::new(ViewerLimits {
            per_session: 1,
            per_tenant: 0,
        });
        let _slot = viewers.admit(session(1), None).unwrap();
        assert!(viewers.admit(session(1), None).is_err());
    }
}
