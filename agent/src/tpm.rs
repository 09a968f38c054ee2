//! The node's TPM, through tss-esapi (Debian's tpm2-tss): the endorsement key, an attestation
//! key that persists across restarts, credential activation and quotes.
//!
//! An ESAPI context is not `Send`, and every TPM command blocks for milliseconds: one thread
//! owns the context and serves requests from the async agent over a channel, one at a time —
//! the TPM itself does one command at a time anyway.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use fogshell_shared::files::Durability;
use fogshell_shared::wire::attest::{
    CredentialChallenge, MAX_NONCE, PcrSet, PcrValue, QuoteEvidence, TpmIdentity,
};
use tokio::sync::oneshot;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, ak, ek, pcr};
use tss_esapi::constants::tss::TPM2_TRANSIENT_FIRST;
use tss_esapi::constants::{CapabilityType, SessionType};
use tss_esapi::handles::{AuthHandle, KeyHandle, SessionHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::session_handles::PolicySession;
use tss_esapi::structures::{
    CapabilityData, Data, EncryptedSecret, IdObject, PcrSelectionList, PcrSelectionListBuilder,
    PcrSlot, Private, Public, SignatureScheme, SymmetricDefinition,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::{Context, attributes::SessionAttributesBuilder};

/// The EK the agent uses: the TCG default RSA-2048 template, the one EK certificates are
/// issued for.
const EK_ALGORITHM: AsymmetricAlgorithmSelection =
    AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048);

/// How often a quote is retried when a PCR changed between reading and quoting.
const QUOTE_ATTEMPTS: usize = 3;

enum Job {
    Activate(
        CredentialChallenge,
        oneshot::Sender<Result<Vec<u8>, String>>,
    ),
    Quote(
        Vec<u8>,
        PcrSet,
        oneshot::Sender<Result<QuoteEvidence, String>>,
    ),
}

/// A handle on the TPM thread.
#[derive(Debug, Clone)]
pub struct Tpm {
    jobs: std::sync::mpsc::Sender<Job>,
    identity: TpmIdentity,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Activate(..) => "activate",
            Job::Quote(..) => "quote",
        })
    }
}

impl Tpm {
    /// Opens the TPM named by a TCTI string (`device:/dev/tpmrm0`, `swtpm:host=…,port=…`),
    /// makes the EK, and loads the AK kept in `state_dir/tpm` (creating it the first time).
    pub fn open(tcti: &str, state_dir: &Path) -> Result<Self, String> {
        let conf = TctiNameConf::from_str(tcti).map_err(|e| format!("TCTI {tcti:?}: {e}"))?;
        let dir = state_dir.join("tpm");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (jobs, inbox) = std::sync::mpsc::channel();
        let tcti = tcti.to_owned();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || match Keys::open(conf, &dir) {
                Ok(mut keys) => {
                    let _ = ready_tx.send(Ok(keys.identity.clone()));
                    for job in inbox {
                        keys.serve(job);
                    }
                }
                Err(error) => {
                    let _ = ready_tx.send(Err(format!("TPM at {tcti}: {error}")));
                }
            })
            .map_err(|e| format!("starting the TPM thread: {e}"))?;
        let identity = ready_rx
            .recv()
            .map_err(|_| "the TPM thread ended".to_owned())??;
        Ok(Self { jobs, identity })
    }

    /// What the hello carries.
    pub fn identity(&self) -> &TpmIdentity {
        &self.identity
    }

    /// `TPM2_ActivateCredential`: the secret, if the challenge was made for this TPM's EK and
    /// AK.
    pub async fn activate(&self, challenge: CredentialChallenge) -> Result<Vec<u8>, String> {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Activate(challenge, tx))
            .map_err(|_| "the TPM thread ended")?;
        rx.await.map_err(|_| "the TPM thread ended")?
    }

    /// A quote over `pcrs` qualified by `nonce`, with the PCR values it covers.
    pub async fn quote(&self, nonce: Vec<u8>, pcrs: PcrSet) -> Result<QuoteEvidence, String> {
        if nonce.len() > MAX_NONCE {
            return Err(format!("a nonce of {} bytes is too long", nonce.len()));
        }
        pcrs.validate().map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Job::Quote(nonce, pcrs, tx))
            .map_err(|_| "the TPM thread ended")?;
        rx.await.map_err(|_| "the TPM thread ended")?
    }
}

/// The TPM thread's state: the context with the EK and AK loaded.
struct Keys {
    context: Context,
    ek: KeyHandle,
    ak: KeyHandle,
    identity: TpmIdentity,
}

fn tpm_error(what: &str) -> impl Fn(tss_esapi::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

impl Keys {
    fn open(conf: TctiNameConf, dir: &Path) -> Result<Self, String> {
        let mut context = Context::new(conf).map_err(tpm_error("opening"))?;
        let flushed = flush_leftovers(&mut context)?;
        if flushed > 0 {
            tracing::info!(
                flushed,
                "flushed transient objects a previous agent left in the TPM"
            );
        }
        let ek = ek::create_ek_object_2(&mut context, EK_ALGORITHM, None)
            .map_err(tpm_error("creating the EK"))?;
        let (ek_public, _, _) = context
            .read_public(ek)
            .map_err(tpm_error("reading the EK"))?;
        // Not every TPM carries an EK certificate (swtpm without one, some firmware TPMs);
        // the coordinator then cannot vouch for the EK and the node stays unattested.
        let ek_certificate = ek::retrieve_ek_pubcert(&mut context, EK_ALGORITHM).ok();
        let (ak_private, ak_public) = load_or_create_ak(&mut context, ek, dir)?;
        let ak = ak::load_ak(&mut context, ek, None, ak_private, ak_public.clone())
            .map_err(tpm_error("loading the AK"))?;
        Ok(Self {
            context,
            ek,
            ak,
            identity: TpmIdentity {
                ek_public: ek_public.marshall().map_err(tpm_error("the EK"))?,
                ek_certificate,
                ak_public: ak_public.marshall().map_err(tpm_error("the AK"))?,
            },
        })
    }

    fn serve(&mut self, job: Job) {
        match job {
            Job::Activate(challenge, reply) => {
                let _ = reply.send(self.activate(challenge));
            }
            Job::Quote(nonce, pcrs, reply) => {
                let _ = reply.send(self.quote(nonce, pcrs));
            }
        }
    }

    fn activate(&mut self, challenge: CredentialChallenge) -> Result<Vec<u8>, String> {
        let id_object = IdObject::try_from(challenge.id_object).map_err(tpm_error("id object"))?;
        let secret = EncryptedSecret::try_from(challenge.encrypted_secret)
            .map_err(tpm_error("encrypted secret"))?;
        let context = &mut self.context;
        // The AK is used with an HMAC session; the EK's default policy wants PolicySecret on
        // the endorsement hierarchy, in a policy session.
        let hmac = start_session(context, SessionType::Hmac)?;
        let policy = start_session(context, SessionType::Policy)?;
        let result = (|| {
            let policy_session =
                PolicySession::try_from(policy).map_err(tpm_error("policy session"))?;
            context
                .execute_with_session(Some(hmac), |ctx| {
                    ctx.policy_secret(
                        policy_session,
                        AuthHandle::Endorsement,
                        Default::default(),
                        Default::default(),
                        Default::default(),
                        None,
                    )
                })
                .map_err(tpm_error("PolicySecret"))?;
            context.set_sessions((Some(hmac), Some(policy), None));
            let secret = context.activate_credential(self.ak, self.ek, id_object, secret);
            context.clear_sessions();
            secret
                .map(|digest| digest.value().to_vec())
                .map_err(tpm_error("ActivateCredential"))
        })();
        for session in [hmac, policy] {
            let _ = context.flush_context(SessionHandle::from(session).into());
        }
        result
    }

    fn quote(&mut self, nonce: Vec<u8>, pcrs: PcrSet) -> Result<QuoteEvidence, String> {
        let selection = selection(pcrs)?;
        let nonce = Data::try_from(nonce).map_err(tpm_error("nonce"))?;
        for _ in 0..QUOTE_ATTEMPTS {
            let before = read_pcrs(&mut self.context, &selection, pcrs)?;
            let ak = self.ak;
            let (attest, signature) = self
                .context
                .execute_with_nullauth_session(|ctx| {
                    ctx.quote(ak, nonce.clone(), SignatureScheme::Null, selection.clone())
                })
                .map_err(tpm_error("Quote"))?;
            // Reading and quoting are two commands: a PCR extended between them makes the
            // values disagree with the quote's digest. Read again and retry on a change.
            if read_pcrs(&mut self.context, &selection, pcrs)? == before {
                return Ok(QuoteEvidence {
                    attest: attest.marshall().map_err(tpm_error("attest"))?,
                    signature: signature.marshall().map_err(tpm_error("signature"))?,
                    pcr_values: before,
                });
            }
        }
        Err("the PCRs kept changing while quoting".into())
    }
}

/// Flushes transient objects left in the TPM. The kernel's resource manager
/// (`/dev/tpmrm0`) flushes a client's objects when it goes away, so there are none there; a
/// TPM reached directly (`/dev/tpm0`, swtpm) keeps the EK and AK of an agent that was killed,
/// and a few leftovers fill its object slots. The agent is the TPM's one user on a node.
fn flush_leftovers(context: &mut Context) -> Result<usize, String> {
    let (data, _) = context
        .get_capability(CapabilityType::Handles, TPM2_TRANSIENT_FIRST, 64)
        .map_err(tpm_error("listing transient objects"))?;
    let CapabilityData::Handles(handles) = data else {
        return Ok(0);
    };
    for handle in handles.iter() {
        let object = context
            .tr_from_tpm_public(*handle)
            .map_err(tpm_error("a leftover object"))?;
        context
            .flush_context(object)
            .map_err(tpm_error("flushing a leftover object"))?;
    }
    Ok(handles.len())
}

fn start_session(
    context: &mut Context,
    kind: SessionType,
) -> Result<tss_esapi::interface_types::session_handles::AuthSession, String> {
    let session = context
        .start_auth_session(
            None,
            None,
            None,
            kind,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(tpm_error("starting a session"))?
        .ok_or("the TPM gave no session")?;
    let (attributes, mask) = SessionAttributesBuilder::new().build();
    context
        .tr_sess_set_attributes(session, attributes, mask)
        .map_err(tpm_error("session attributes"))?;
    Ok(session)
}

fn slot(index: u8) -> Result<PcrSlot, String> {
    PcrSlot::try_from(1u32 << index).map_err(tpm_error("PCR slot"))
}

fn selection(pcrs: PcrSet) -> Result<PcrSelectionList, String> {
    let slots = pcrs.indices().map(slot).collect::<Result<Vec<_>, _>>()?;
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(tpm_error("PCR selection"))
}

fn read_pcrs(
    context: &mut Context,
    selection: &PcrSelectionList,
    pcrs: PcrSet,
) -> Result<Vec<PcrValue>, String> {
    let data = context
        .execute_without_session(|ctx| pcr::read_all(ctx, selection.clone()))
        .map_err(tpm_error("reading PCRs"))?;
    let bank = data
        .pcr_bank(HashingAlgorithm::Sha256)
        .ok_or("the TPM has no SHA-256 PCR bank")?;
    pcrs.indices()
        .map(|index| {
            let digest = bank
                .get_digest(slot(index)?)
                .ok_or_else(|| format!("PCR {index} was not read"))?;
            let digest: [u8; 32] = digest
                .value()
                .try_into()
                .map_err(|_| format!("PCR {index} is not a SHA-256 value"))?;
            Ok(PcrValue { index, digest })
        })
        .collect()
}

struct AkFiles {
    public: PathBuf,
    private: PathBuf,
}

impl AkFiles {
    fn in_dir(dir: &Path) -> Self {
        Self {
            public: dir.join("ak.pub"),
            private: dir.join("ak.priv"),
        }
    }
}

/// The AK's blobs from the state dir, or a new AK (ECDSA P-256 with SHA-256, restricted,
/// made under the EK) stored there. The private blob is wrapped by the EK: only this TPM can
/// load it, so it is no secret on disk — but it is written 0600 like every key file.
fn load_or_create_ak(
    context: &mut Context,
    ek: KeyHandle,
    dir: &Path,
) -> Result<(Private, Public), String> {
    let files = AkFiles::in_dir(dir);
    if files.public.exists() && files.private.exists() {
        let read =
            |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
        let public = Public::unmarshall(&read(&files.public)?)
            .map_err(tpm_error("the stored AK public area"))?;
        let private = Private::try_from(read(&files.private)?)
            .map_err(tpm_error("the stored AK private area"))?;
        return Ok((private, public));
    }
    let created = ak::create_ak_2(
        context,
        ek,
        HashingAlgorithm::Sha256,
        AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
        SignatureSchemeAlgorithm::EcDsa,
        None,
        None,
    )
    .map_err(tpm_error("creating the AK"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let public = created.out_public.marshall().map_err(tpm_error("the AK"))?;
    // The private part first: a crash between the two leaves no public part, so the next
    // start makes a fresh AK instead of pairing a public part with a missing private one.
    fogshell_shared::files::write_atomically(
        &files.private,
        created.out_private.value(),
        0o600,
        Durability::Synced,
    )
    .map_err(|e| format!("{}: {e}", files.private.display()))?;
    fogshell_shared::files::write_atomically(&files.public, &public, 0o600, Durability::Synced)
        .map_err(|e| format!("{}: {e}", files.public.display()))?;
    Ok((created.out_private, created.out_public))
}
