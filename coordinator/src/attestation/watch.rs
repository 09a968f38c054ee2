//! The attestation conversation with one connected node: enrollment when needed, then a
//! quote at once and every interval, each outcome setting the tier the fleet grants.

use std::sync::Arc;
use std::time::Duration;

use fogshell_shared::audit::{AuditEvent, Outcome};
use fogshell_shared::wire::{Command, CommandOutput, Hello};
use fogshell_shared::{ErrorCode, NodeId, TrustTier};
use tracing::Instrument as _;

use super::{Attestor, CheckedKeys, Refusal, credential, quote_refusal, tpm};
use crate::fabric::FabricHooks;
use crate::fabric::nodes::NodeLink;
use crate::fleet::Fleet;

/// How long the TPM may take for one command (a quote takes ~0.1 s on swtpm, up to a second
/// on slow discrete TPMs).
const TPM_TIMEOUT: Duration = Duration::from_secs(10);

/// The parts of the coordinator the conversation touches.
#[derive(Clone)]
pub struct Watch {
    /// Settings and memory.
    pub attestor: Arc<Attestor>,
    /// Where the granted tier lives.
    pub fleet: Arc<Fleet>,
    /// The audit log and the control plane.
    pub hooks: Arc<dyn FabricHooks>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

fn random_32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).unwrap_or_else(|e| panic!("no system randomness: {e}"));
    bytes
}

/// Whether a command failed because the link is gone (then the conversation just ends).
fn link_gone(code: ErrorCode) -> bool {
    code == ErrorCode::NodeUnavailable
}

impl Watch {
    /// Runs until the link ends. Nodes that do not claim `attested` are left alone.
    pub async fn run(self, link: Arc<NodeLink>, hello: Hello, generation: u64) {
        if hello.claimed_tier != TrustTier::Attested {
            return;
        }
        let node = hello.node_id.clone();
        let span = tracing::info_span!("attestation", node_id = %node);
        async move {
            let mut conversation = Conversation {
                watch: &self,
                node: &node,
                generation,
                last_refusal: None,
            };
            let Some(identity) = hello.tpm.as_ref() else {
                conversation.refused(Refusal::new(
                    "attestation.no_evidence",
                    "the node claims attested but sent no TPM evidence",
                ));
                return;
            };
            let checked =
                self.attestor
                    .check_identity(&node, identity, time::OffsetDateTime::now_utc());
            let (keys, needs_enrollment) = match checked {
                Ok(checked) => checked,
                Err(refusal) => return conversation.refused(refusal),
            };
            if needs_enrollment {
                match activate(&link, &keys).await {
                    Ok(()) => tracing::info!("the AK is bound to the EK"),
                    Err(None) => return,
                    Err(Some(refusal)) => return conversation.refused(refusal),
                }
            }
            let mut enrolled_now = needs_enrollment;
            let mut pinned = !needs_enrollment;
            loop {
                match conversation.quote(&link, &keys, &hello, &mut pinned).await {
                    Ok(()) => conversation.passed(&keys, enrolled_now),
                    Err(None) => return,
                    Err(Some(refusal)) => conversation.refused(refusal),
                }
                enrolled_now = false;
                tokio::time::sleep(self.attestor.interval()).await;
            }
        }
        .instrument(span)
        .await
    }
}

/// Credential activation: `Err(None)` when the link went away meanwhile.
async fn activate(link: &NodeLink, keys: &CheckedKeys) -> Result<(), Option<Refusal>> {
    let secret = random_32();
    let challenge = credential::make_credential(&keys.ek, &keys.ak.name, &secret)
        .map_err(|e| Some(Refusal::new("attestation.credential", e)))?;
    match link
        .request(Command::ActivateCredential(challenge), TPM_TIMEOUT)
        .await
    {
        // A plain comparison: the secret is single-use, so timing tells an attacker nothing
        // they could use again.
        Ok(CommandOutput::CredentialActivated { secret: recovered }) if recovered == secret => {
            Ok(())
        }
        Ok(_) => Err(Some(Refusal::new(
            "attestation.credential",
            "the node did not recover the credential made for its EK and AK",
        ))),
        Err(error) if link_gone(error.code) => Err(None),
        Err(error) => Err(Some(Refusal::new(
            "attestation.credential",
            format!(
                "credential activation failed on the node: {}",
                error.message
            ),
        ))),
    }
}

struct Conversation<'a> {
    watch: &'a Watch,
    node: &'a NodeId,
    generation: u64,
    /// The last refusal recorded, so a node failing every interval for the same reason is
    /// recorded once, not every 30 s.
    last_refusal: Option<Refusal>,
}

impl Conversation<'_> {
    /// One quote, verified and judged. `Err(None)` when the link went away meanwhile.
    async fn quote(
        &mut self,
        link: &NodeLink,
        keys: &CheckedKeys,
        hello: &Hello,
        pinned: &mut bool,
    ) -> Result<(), Option<Refusal>> {
        let attestor = &self.watch.attestor;
        let nonce = random_32().to_vec();
        let pcrs = attestor.pcrs();
        let started = std::time::Instant::now();
        let answer = link
            .request(
                Command::Quote {
                    nonce: nonce.clone(),
                    pcrs,
                },
                TPM_TIMEOUT,
            )
            .await;
        let evidence = match answer {
            Ok(CommandOutput::Quote(evidence)) => evidence,
            Ok(_) => {
                return Err(Some(Refusal::new(
                    "attestation.quote",
                    "the node answered a quote request with something else",
                )));
            }
            Err(error) if link_gone(error.code) => return Err(None),
            Err(error) => {
                return Err(Some(Refusal::new(
                    "attestation.quote",
                    format!("the node could not quote: {}", error.message),
                )));
            }
        };
        let values = tpm::verify_quote(&keys.ak, &evidence, &nonce, pcrs)
            .map_err(|e| Some(quote_refusal(e)))?;
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "quote verified"
        );
        if !*pinned {
            attestor
                .enroll(self.node, keys, &values, crate::clock::now())
                .map_err(|e| Some(Refusal::new("attestation.state", e)))?;
            *pinned = true;
        }
        attestor
            .judge(self.node, &hello.labels, &values)
            .map_err(Some)
    }

    fn passed(&mut self, keys: &CheckedKeys, enrolled: bool) {
        self.last_refusal = None;
        let fleet = &self.watch.fleet;
        if fleet.set_trust(self.node, self.generation, TrustTier::Attested) {
            tracing::info!("node attested");
            self.watch.hooks.record(
                Outcome::Success,
                AuditEvent::NodeAttested {
                    node_id: self.node.clone(),
                    ak_name: hex::encode(&keys.ak.name),
                    enrolled,
                },
            );
        }
    }

    fn refused(&mut self, refusal: Refusal) {
        let was_attested = self
            .watch
            .fleet
            .view(self.node)
            .is_some_and(|v| v.trust_tier == TrustTier::Attested);
        let changed = self
            .watch
            .fleet
            .set_trust(self.node, self.generation, TrustTier::Unattested);
        if self.last_refusal.as_ref() == Some(&refusal) && !changed {
            return;
        }
        tracing::warn!(rule_id = refusal.rule_id, reason = %refusal.reason, "attestation failed");
        let hooks = &self.watch.hooks;
        hooks.record(
            Outcome::Failure,
            AuditEvent::NodeAttestationFailed {
                node_id: self.node.clone(),
                reason: refusal.reason.clone(),
            },
        );
        hooks.record(
            Outcome::Denied,
            AuditEvent::PolicyDenied {
                rule_id: refusal.rule_id.into(),
                reason: refusal.reason.clone(),
                subject: Some(self.node.to_string()),
            },
        );
        if was_attested && changed {
            hooks.trust_lost(self.node, &refusal.reason);
        }
        self.last_refusal = Some(refusal);
    }
}
