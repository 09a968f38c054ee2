//! The enrollment endpoint: redeem a join token, sign the node's CSR.

use std::sync::Arc;
use tracing::Instrument as _;

use fogshell_shared::ErrorCode;
use fogshell_shared::audit::{AuditEvent, Outcome};
use fogshell_shared::wire::join::{JoinRequest, JoinResponse};
use fogshell_shared::wire::{Refusal, SUPPORTED_VERSIONS, encode, negotiate};

use fogshell_shared::NodeId;
use fogshell_shared::wire::Renewed;

use super::{FabricHooks, close, read_single};
use crate::join_tokens::{RedeemError, TokenStore};
use crate::pki::CertificateAuthority;

/// How long a node certificate is valid.
pub const NODE_CERT_VALIDITY: time::Duration = time::Duration::days(30);

/// What enrollment needs.
#[derive(Debug)]
pub struct Enrollment {
    /// Signs node certificates.
    pub ca: Arc<CertificateAuthority>,
    /// Join tokens.
    pub tokens: TokenStore,
    /// How long a node certificate is valid (agents renew it in its last third).
    pub node_cert_lifetime: time::Duration,
}

impl Enrollment {
    /// Renews the certificate of `node_id`, which asked on its own authenticated link: the
    /// certificate names that node whatever the request says. Returns the answer and what to
    /// record of it.
    pub fn renew(
        &self,
        node_id: &NodeId,
        csr_der: &[u8],
        now: time::OffsetDateTime,
    ) -> (Renewed, Outcome, AuditEvent) {
        match self
            .ca
            .issue_node_certificate(node_id, csr_der, self.node_cert_lifetime, now)
        {
            Ok(cert) => {
                let not_after = fogshell_shared::Timestamp::from_offset_date_time(cert.not_after);
                tracing::info!(%node_id, %not_after, "node certificate renewed");
                (
                    Renewed::Issued {
                        certificate_der: cert.der,
                    },
                    Outcome::Success,
                    AuditEvent::NodeCertificateRenewed {
                        node_id: node_id.clone(),
                        not_after,
                    },
                )
            }
            Err(error) => {
                tracing::warn!(%node_id, %error, "policy.denied: certificate renewal");
                (
                    Renewed::Refused {
                        message: error.to_string(),
                    },
                    Outcome::Denied,
                    AuditEvent::PolicyDenied {
                        rule_id: "node.renewal_bad_request".into(),
                        reason: error.to_string(),
                        subject: Some(node_id.to_string()),
                    },
                )
            }
        }
    }

    /// Decides one join request; returns the answer and what to record of it.
    pub fn decide(
        &self,
        request: &JoinRequest,
        now: time::OffsetDateTime,
    ) -> (JoinResponse, Option<(Outcome, AuditEvent)>) {
        let refused = |code, message: String| JoinResponse::Refused(Refusal { code, message });
        if let Err(mismatch) = negotiate(SUPPORTED_VERSIONS, request.versions) {
            return (
                refused(ErrorCode::UnsupportedVersion, mismatch.to_string()),
                None,
            );
        }
        let at = fogshell_shared::Timestamp::from_offset_date_time(now);
        match self.tokens.redeem(&request.token, at) {
            Ok(token_id) => {
                match self.ca.issue_node_certificate(
                    &request.node_id,
                    &request.csr_der,
                    self.node_cert_lifetime,
                    now,
                ) {
                    Ok(cert) => {
                        tracing::info!(node_id = %request.node_id, %token_id, "node enrolled");
                        (
                            JoinResponse::Accepted {
                                certificate_der: cert.der,
                                ca_der: self.ca.cert_der().to_vec(),
                            },
                            Some((
                                Outcome::Success,
                                AuditEvent::NodeEnrolled {
                                    node_id: request.node_id.clone(),
                                },
                            )),
                        )
                    }
                    Err(error) => {
                        tracing::warn!(node_id = %request.node_id, %error, "enrollment refused: bad CSR");
                        (refused(ErrorCode::InvalidRequest, error.to_string()), None)
                    }
                }
            }
            Err(RedeemError::Refused(reason)) => {
                tracing::warn!(node_id = %request.node_id, rule_id = reason.rule_id(), "policy.denied: {reason}");
                (
                    refused(
                        ErrorCode::PolicyDenied,
                        format!("{}: {reason}", reason.rule_id()),
                    ),
                    Some((
                        Outcome::Denied,
                        AuditEvent::PolicyDenied {
                            rule_id: reason.rule_id().into(),
                            reason: reason.to_string(),
                            subject: Some(request.node_id.to_string()),
                        },
                    )),
                )
            }
            Err(RedeemError::Io(error)) => {
                tracing::error!(%error, "enrollment failed: token store");
                (
                    refused(
                        ErrorCode::Internal,
                        "the coordinator could not record the token".into(),
                    ),
                    None,
                )
            }
        }
    }
}

/// Serves the one exchange of an enrollment connection.
pub async fn serve_connection(
    connection: quinn::Connection,
    enrollment: &Enrollment,
    hooks: &dyn FabricHooks,
) {
    let remote = connection.remote_address();
    let span = tracing::info_span!("enroll", %remote);
    async move {
        let (mut send, mut recv) = match connection.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::info!(%error, "no enrollment stream");
                return;
            }
        };
        let request: JoinRequest = match read_single(&mut recv).await {
            Ok(r) => r,
            Err(error) => {
                tracing::warn!(%error, "malformed join request");
                connection.close(close::PROTOCOL_ERROR.into(), b"malformed join request");
                return;
            }
        };
        let (response, record) = enrollment.decide(&request, time::OffsetDateTime::now_utc());
        if let Some((outcome, event)) = record {
            hooks.record(outcome, event);
        }
        let refused = matches!(response, JoinResponse::Refused(_));
        match encode(&response) {
            Ok(bytes) => {
                let _ = send.write_all(&bytes).await;
                let _ = send.finish();
                // Let the answer reach the agent before the connection goes.
                let _ = send.stopped().await;
            }
            Err(error) => tracing::error!(%error, "could not encode the join response"),
        }
        if refused {
            connection.close(close::REFUSED.into(), b"enrollment refused");
        }
    }
    .instrument(span)
    .await
}
