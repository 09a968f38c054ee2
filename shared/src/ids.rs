//! Identifiers and names, validated when they are made and when they are decoded.
//!
//! Every one of these arrives from the network at some point (an API body, a wire message, a
//! token claim), so each newtype checks its shape in `TryFrom<String>` and serde goes through
//! that: a decoded value is a valid value.

use std::fmt;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Why a string is not a valid identifier or name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kind}: {reason}")]
pub struct InvalidName {
    /// Which kind of name was rejected (`node id`, `tenant`, …).
    pub kind: &'static str,
    /// What is wrong with it, in words a user can act on.
    pub reason: &'static str,
}

/// Checks a DNS-label-like name: 1..=`max` bytes of `[a-z0-9-]`, not starting or ending with `-`.
fn check_label(kind: &'static str, value: &str, max: usize) -> Result<(), InvalidName> {
    let fail = |reason| Err(InvalidName { kind, reason });
    if value.is_empty() {
        return fail("must not be empty");
    }
    if value.len() > max {
        return fail("too long");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return fail("only lowercase letters, digits and '-' are allowed");
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail("must not start or end with '-'");
    }
    Ok(())
}

/// Checks free text that is used as a key (a tenant from an OIDC claim, a label value):
/// 1..=`max` bytes, printable ASCII without spaces, so it is safe in logs, URLs and SQL keys.
fn check_token_text(kind: &'static str, value: &str, max: usize) -> Result<(), InvalidName> {
    let fail = |reason| Err(InvalidName { kind, reason });
    if value.is_empty() {
        return fail("must not be empty");
    }
    if value.len() > max {
        return fail("too long");
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return fail("only printable ASCII without spaces is allowed");
    }
    Ok(())
}

/// Defines a validated string newtype: `TryFrom<String>`, `FromStr`, `Display`, `AsRef<str>`,
/// serde through the validation, and an `Arbitrary` impl that only makes valid values.
macro_rules! validated_name {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:expr, $alphabet:expr, $max_gen:expr) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Kind name used in error messages.
            pub const KIND: &'static str = $kind;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, InvalidName> {
                let value = value.into();
                ($check)(&value)?;
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        #[cfg(feature = "arbitrary")]
        impl<'a> arbitrary::Arbitrary<'a> for $name {
            fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
                let alphabet: &[u8] = $alphabet;
                let len = u.int_in_range(1..=$max_gen)?;
                let mut s = String::with_capacity(len);
                for _ in 0..len {
                    s.push(char::from(*u.choose(alphabet)?));
                }
                // Fix up the few shapes the alphabet alone can produce but the check refuses.
                let s = s.trim_matches('-').to_owned();
                let s = if s.is_empty() { "x".to_owned() } else { s };
                Ok(Self::new(s).expect("generated names are valid"))
            }
        }
    };
}

#[cfg(feature = "arbitrary")]
const LABEL_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
#[cfg(feature = "arbitrary")]
const TEXT_ALPHABET: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/@|";

validated_name!(
    /// A fog or cloud node's identity. It is the DNS name in the node certificate's SAN, so it
    /// has DNS label syntax (`fog-a`, `cloud-eu-1`).
    NodeId, "node id", |v: &str| check_label("node id", v, 63), LABEL_ALPHABET, 20
);

validated_name!(
    /// A region (`eu-west`, `home-lab`): where a node stands, for latency and data locality.
    Region, "region", |v: &str| check_label("region", v, 63), LABEL_ALPHABET, 20
);

validated_name!(
    /// A session profile's name (`default`, `large`): names a set of limits in config.
    ProfileName, "profile", |v: &str| check_label("profile", v, 63), LABEL_ALPHABET, 20
);

validated_name!(
    /// A tenant, as mapped from an OIDC claim. Issuers put all sorts of things there (UUIDs,
    /// `org:acme`), so any printable ASCII without spaces is accepted.
    TenantId, "tenant", |v: &str| check_token_text("tenant", v, 128), TEXT_ALPHABET, 40
);

validated_name!(
    /// A node label key (`gpu`, `site/zone`), used by placement's locality filters.
    LabelKey, "label key", |v: &str| check_token_text("label key", v, 63), TEXT_ALPHABET, 20
);

validated_name!(
    /// A node label value.
    LabelValue, "label value", |v: &str| check_token_text("label value", v, 128), TEXT_ALPHABET, 20
);

/// A session's identity: a random (version 4) UUID, written in its hyphenated form.
///
/// The shared crate has no randomness source of its own (no I/O); callers bring 16 random
/// bytes from the OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionId(uuid::Uuid);

impl SessionId {
    /// Makes an id from 16 random bytes (the version and variant bits are set here).
    pub fn from_random_bytes(bytes: [u8; 16]) -> Self {
        Self(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl std::str::FromStr for SessionId {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::try_parse(s).map(Self).map_err(|_| InvalidName {
            kind: "session id",
            reason: "must be a UUID",
        })
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for SessionId {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(Self::from_random_bytes(u.arbitrary()?))
    }
}

/// The agent's handle for a running session's container or process (`runtime_ref` in the
/// runtime connector contract). Opaque to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct RuntimeRef {
    /// Which driver runs it.
    pub driver: crate::RuntimeDriver,
    /// The driver's own id (a container id for libcontainer, a pid-based id for process).
    pub id: NodeScopedId,
}

validated_name!(
    /// An id that only has meaning on one node, such as a container id.
    NodeScopedId, "runtime id", |v: &str| check_token_text("runtime id", v, 128), TEXT_ALPHABET, 40
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_follow_dns_label_rules() {
        assert!(NodeId::new("fog-a").is_ok());
        assert!(NodeId::new("a").is_ok());
        assert!(NodeId::new("x".repeat(63)).is_ok());
        for bad in ["", "-fog", "fog-", "Fog", "fog_a", "fog a", "fög"] {
            assert!(NodeId::new(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(NodeId::new("x".repeat(64)).is_err());
    }

    #[test]
    fn tenants_take_printable_ascii_only() {
        assert!(TenantId::new("org:acme").is_ok());
        assert!(TenantId::new("7b0c2a8e-1d4f-4b8e-9a53-3d1e0c9f2b11").is_ok());
        for bad in ["", "a b", "a\nb", "ténant", "a\u{0}"] {
            assert!(TenantId::new(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn names_validate_when_decoded() {
        let err = serde_json::from_str::<NodeId>("\"Not A Label\"").unwrap_err();
        assert!(err.to_string().contains("invalid node id"), "{err}");
        let ok: NodeId = serde_json::from_str("\"fog-a\"").unwrap();
        assert_eq!(ok.as_str(), "fog-a");
    }

    #[test]
    fn session_ids_are_v4_uuids() {
        let id = SessionId::from_random_bytes([0xff; 16]);
        assert_eq!(id.as_uuid().get_version_num(), 4);
        let text = id.to_string();
        assert_eq!(text.parse::<SessionId>().unwrap(), id);
        assert!("not-a-uuid".parse::<SessionId>().is_err());
    }
}
