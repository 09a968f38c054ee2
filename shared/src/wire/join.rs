//! Enrollment: the one exchange a new node makes before it has a certificate.
//!
//! On a QUIC connection with ALPN [`JOIN_ALPN`] (no client certificate; the agent has
//! already checked the coordinator's certificate chains to the CA whose key hash it pins),
//! the agent opens one bidirectional stream, sends a [`JoinRequest`] and reads a
//! [`JoinResponse`], both framed like every other wire message.

use serde::{Deserialize, Serialize};

use super::version::VersionRange;
use crate::ids::NodeId;
use crate::secret::Secret;
use crate::wire::Refusal;

/// The ALPN of the enrollment endpoint.
pub const JOIN_ALPN: &[u8] = b"fogshell-join/1";

/// A new node asking for its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct JoinRequest {
    /// Protocol versions the agent speaks.
    pub versions: VersionRange,
    /// The id the node asks to be known by.
    pub node_id: NodeId,
    /// The single-use join token the operator minted.
    pub token: Secret,
    /// A PKCS#10 certificate signing request for the node's key (DER).
    #[serde(with = "serde_bytes")]
    pub csr_der: Vec<u8>,
}

/// The coordinator's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum JoinResponse {
    /// The node certificate, and the CA certificate to trust from now on.
    Accepted {
        /// The node certificate (DER), its SAN the node id.
        #[serde(with = "serde_bytes")]
        certificate_der: Vec<u8>,
        /// The coordinator CA's certificate (DER).
        #[serde(with = "serde_bytes")]
        ca_der: Vec<u8>,
    },
    /// Refused: a bad token (`ECS_POLICY_DENIED`, the rule id in the message), a bad CSR…
    Refused(Refusal),
}
