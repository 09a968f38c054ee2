//! Protocol version agreement between an agent and a coordinator.
//!
//! Each side supports a contiguous range of versions. The agent states its range in its hello;
//! the coordinator picks the highest version both support and answers with it, or refuses.

use serde::{Deserialize, Serialize};

/// The newest wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 2;

/// The versions this build speaks.
/// Version 2 added the edge gateway (attach keys, the gateway URL, edge audit records);
/// version 1 was never released, so it is not spoken.
pub const SUPPORTED_VERSIONS: VersionRange = VersionRange {
    min: 2,
    max: PROTOCOL_VERSION,
};

/// The QUIC ALPN protocol id, naming the newest version; a peer that offers none of ours fails
/// the TLS handshake before any message is read.
pub const ALPN: &[u8] = b"fogshell/2";

/// A contiguous range of protocol versions, `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct VersionRange {
    /// The oldest version spoken.
    pub min: u16,
    /// The newest version spoken.
    pub max: u16,
}

/// The two sides share no version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no common protocol version: we speak {ours:?}, the peer speaks {theirs:?}")]
pub struct VersionMismatch {
    /// Our range.
    pub ours: VersionRange,
    /// The peer's range.
    pub theirs: VersionRange,
}

/// Picks the highest version in both ranges.
pub fn negotiate(ours: VersionRange, theirs: VersionRange) -> Result<u16, VersionMismatch> {
    let low = ours.min.max(theirs.min);
    let high = ours.max.min(theirs.max);
    if low <= high && ours.min <= ours.max && theirs.min <= theirs.max {
        Ok(high)
    } else {
        Err(VersionMismatch { ours, theirs })
    }
}

/// What a build of a fogshell binary speaks, as `fogshell-agent info` and
/// `fogshell-coordinator info` print it: operators compare two of these before an upgrade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The binary's name.
    pub name: String,
    /// Its release.
    pub version: String,
    /// The wire protocol versions it speaks.
    pub protocol: VersionRange,
    /// Its QUIC ALPN id.
    pub alpn: String,
    /// The CPU architecture it was built for (`None` outside x86_64 and aarch64).
    pub arch: Option<crate::node::Arch>,
}

impl BuildInfo {
    /// The info of the running build, given its name, release and `std::env::consts::ARCH`.
    pub fn new(name: &str, version: &str, rust_arch: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            protocol: SUPPORTED_VERSIONS,
            alpn: String::from_utf8_lossy(ALPN).into_owned(),
            arch: crate::node::Arch::from_rust_arch(rust_arch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_names_protocol_and_alpn() {
        let info = BuildInfo::new("fogshell-agent", "0.1.0", "aarch64");
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["protocol"]["max"], PROTOCOL_VERSION);
        assert_eq!(json["alpn"], "fogshell/2");
        assert_eq!(json["arch"], "aarch64");
    }

    fn r(min: u16, max: u16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn picks_the_highest_common_version() {
        assert_eq!(negotiate(r(1, 3), r(2, 5)), Ok(3));
        assert_eq!(negotiate(r(1, 1), r(1, 1)), Ok(1));
        assert_eq!(negotiate(r(2, 4), r(1, 9)), Ok(4));
    }

    #[test]
    fn disjoint_or_inverted_ranges_fail() {
        assert!(negotiate(r(1, 1), r(2, 3)).is_err());
        assert!(negotiate(r(3, 4), r(1, 2)).is_err());
        assert!(negotiate(r(1, 5), r(4, 2)).is_err());
    }

    #[test]
    fn alpn_names_the_current_version() {
        assert_eq!(ALPN, format!("fogshell/{PROTOCOL_VERSION}").as_bytes());
    }
}
