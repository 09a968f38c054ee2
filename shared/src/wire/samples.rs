//! One of each message and variant, filled with plausible values: for the round-trip tests
//! (so a change to any message is caught by name), for fuzzing seeds
//! (`cargo run -p fogshell-shared --example wire_seeds`), and as examples for readers.

use super::*;
use crate::ids::LabelKey;
use crate::placement::ReasonCode;

fn session() -> SessionId {
    SessionId::from_random_bytes([3; 16])
}

fn runtime_ref() -> RuntimeRef {
    RuntimeRef {
        driver: RuntimeDriver::Libcontainer,
        id: "fs-03030303".parse().expect("valid id"),
    }
}

fn placement() -> Placement {
    Placement {
        node_id: NodeId::new("fog-a").expect("valid id"),
        region: Region::new("eu-west").expect("valid region"),
        trust_tier: TrustTier::Unattested,
        reasons: vec![ReasonCode::FogLowestLatency],
    }
}

/// A hello from an aarch64 fog node that runs one session.
pub fn hello() -> Hello {
    let site: LabelKey = "site".parse().expect("valid key");
    Hello {
        versions: SUPPORTED_VERSIONS,
        node_id: NodeId::new("fog-a").expect("valid id"),
        agent_version: "0.1.0".into(),
        arch: Arch::Aarch64,
        region: Region::new("eu-west").expect("valid region"),
        labels: [(site, "lab-2".parse().expect("valid value"))].into(),
        claimed_tier: TrustTier::Unattested,
        runtime_drivers: vec![RuntimeDriver::Libcontainer],
        capacity: Resources {
            cpu_millis: 4000,
            memory_bytes: 8 << 30,
            session_slots: 16,
        },
        running: vec![RunningSession {
            session_id: session(),
            runtime_ref: runtime_ref(),
            started_at: Timestamp::from_unix_millis(1_700_000_000_000).expect("in range"),
        }],
        tpm: Some(attest::TpmIdentity {
            ek_public: vec![0x00, 0x01, 0x00, 0x0b],
            ek_certificate: Some(vec![0x30, 0x82]),
            ak_public: vec![0x00, 0x23, 0x00, 0x0b],
        }),
        gateway_url: Some("wss://fog-a.example.org:8444".into()),
    }
}

fn attach_key() -> crate::attach_token::AttachKey {
    crate::attach_token::AttachKey {
        kid: 3,
        public_key: [0x5a; 32],
    }
}

/// Every [`AgentMessage`] variant, and every [`CommandOutput`] inside a response.
pub fn agent_messages() -> Vec<AgentMessage> {
    vec![
        AgentMessage::Hello(hello()),
        AgentMessage::Renew {
            csr_der: vec![0x30, 0x82, 0x01, 0x00],
        },
        AgentMessage::Heartbeat(Heartbeat {
            seq: 9,
            health: Health {
                disk_pressure: false,
                memory_pressure: true,
            },
            free: Resources::default(),
            load: Load { load1_milli: 1500 },
            running: vec![session()],
        }),
        AgentMessage::Response(Response {
            id: 1,
            result: Ok(CommandOutput::Allocated {
                runtime_ref: runtime_ref(),
                image_digest: Some(Digest::from_bytes([0xab; 32])),
            }),
        }),
        AgentMessage::Response(Response {
            id: 2,
            result: Ok(CommandOutput::Terminated),
        }),
        AgentMessage::Response(Response {
            id: 3,
            result: Ok(CommandOutput::Limits(LimitsReport {
                applied: ResourceLimits::DEFAULT,
                mismatches: vec![LimitMismatch {
                    limit: LimitKind::Pids,
                    wanted: 256,
                    found: u64::MAX,
                }],
                usage: Some(Usage {
                    memory_bytes: 1 << 20,
                    cpu_usec: 5,
                    pids: 2,
                    oom_kills: 1,
                }),
            })),
        }),
        AgentMessage::Response(Response {
            id: 4,
            result: Ok(CommandOutput::Sessions(vec![])),
        }),
        AgentMessage::Response(Response {
            id: 6,
            result: Ok(CommandOutput::CredentialActivated {
                secret: vec![7; 32],
            }),
        }),
        AgentMessage::Response(Response {
            id: 7,
            result: Ok(CommandOutput::Quote(attest::QuoteEvidence {
                attest: vec![0xff, 0x54, 0x43, 0x47],
                signature: vec![0x00, 0x18],
                pcr_values: vec![attest::PcrValue {
                    index: 16,
                    digest: [0; 32],
                }],
            })),
        }),
        AgentMessage::Response(Response {
            id: 5,
            result: Err(CommandError {
                code: ErrorCode::NotFound,
                message: "no such session".into(),
            }),
        }),
        AgentMessage::Event(NodeEvent::SessionExited {
            session_id: session(),
            code: 0,
        }),
        AgentMessage::EdgeAudit(vec![
            edge::EdgeRecord {
                seq: 41,
                at: Timestamp::from_unix_millis(1_700_000_000_000).expect("in range"),
                event: edge::EdgeEvent::Attached {
                    session_id: session(),
                },
            },
            edge::EdgeRecord {
                seq: 42,
                at: Timestamp::from_unix_millis(1_700_000_000_500).expect("in range"),
                event: edge::EdgeEvent::Refused {
                    rule_id: "auth.attach_token_wrong_node".into(),
                    reason: "the attach token is for a session on another node".into(),
                    session_id: Some(session()),
                },
            },
        ]),
    ]
}

/// Every [`CoordinatorMessage`] variant, and every [`Command`].
pub fn coordinator_messages() -> Vec<CoordinatorMessage> {
    let spec = AllocateSpec {
        session_id: session(),
        tenant: "org:acme".parse().expect("valid tenant"),
        profile: "default".parse().expect("valid profile"),
        limits: ResourceLimits::DEFAULT,
        network: false,
        placement: placement(),
        image_ref: format!("127.0.0.1:5000/shell@sha256:{}", "ab".repeat(32))
            .parse()
            .expect("valid image"),
    };
    let request = |id, command| {
        CoordinatorMessage::Request(Request {
            id,
            timeout_ms: 10_000,
            command,
        })
    };
    vec![
        CoordinatorMessage::Renewed(Renewed::Issued {
            certificate_der: vec![0x30, 1, 2],
        }),
        CoordinatorMessage::Renewed(Renewed::Refused {
            message: "the request names another node".into(),
        }),
        CoordinatorMessage::Welcome(Welcome {
            version: 2,
            heartbeat_interval_ms: 500,
            fence: vec![session()],
            admission: crate::admission::AdmissionPolicy {
                mode: crate::admission::Mode::Production,
                dev_exempt: None,
                rules: vec![crate::admission::Rule {
                    name: "fogshell".into(),
                    repositories: vec!["registry.example.org/fogshell/*".into()],
                    keys: vec!["-----BEGIN PUBLIC KEY-----\n…\n-----END PUBLIC KEY-----\n".into()],
                    require_predicates: vec![crate::admission::PROVENANCE_V02.into()],
                    builder_ids: vec!["https://tekton.dev/chains/v2".into()],
                    require_sbom: true,
                }],
            },
            attach_keys: vec![attach_key()],
            lease_ms: 1600,
            console_origins: vec!["https://shell.example.org".into()],
        }),
        CoordinatorMessage::LeaseGrant { seq: 9 },
        CoordinatorMessage::AttachKeys(vec![attach_key()]),
        CoordinatorMessage::EdgeAuditAck { through: 42 },
        CoordinatorMessage::Refusal(Refusal {
            code: ErrorCode::UnsupportedVersion,
            message: "no common protocol version".into(),
        }),
        request(1, Command::Allocate(Box::new(spec))),
        request(
            2,
            Command::Terminate {
                session_id: session(),
            },
        ),
        request(
            3,
            Command::EnforceLimits {
                session_id: session(),
            },
        ),
        request(4, Command::List),
        request(
            5,
            Command::ActivateCredential(attest::CredentialChallenge {
                id_object: vec![0x00, 0x20],
                encrypted_secret: vec![0x01; 256],
            }),
        ),
        request(
            6,
            Command::Quote {
                nonce: vec![9; 32],
                pcrs: attest::PcrSet::new([0, 7, 16]).expect("valid PCRs"),
            },
        ),
    ]
}

/// A PTY stream header for an 80×24 terminal.
pub fn pty_header() -> PtyStreamHeader {
    PtyStreamHeader {
        session_id: session(),
        size: TermSize::new(80, 24).expect("in range"),
        from_offset: 0,
    }
}

/// Every [`PtyMessage`] variant.
pub fn pty_messages() -> Vec<PtyMessage> {
    vec![
        PtyMessage::Data(b"ls\r".to_vec()),
        PtyMessage::Data(vec![]),
        PtyMessage::Resize(TermSize::new(1000, 1).expect("in range")),
        PtyMessage::Exit { code: -1 },
        PtyMessage::Start {
            from_offset: u64::MAX,
        },
        PtyMessage::Ack { offset: 65_536 },
        PtyMessage::Interrupted {
            before: 4096,
            discard: true,
        },
    ]
}

/// Both enrollment messages and both answers.
pub fn join_messages() -> (super::join::JoinRequest, Vec<super::join::JoinResponse>) {
    use super::join::{JoinRequest, JoinResponse};
    let request = JoinRequest {
        versions: SUPPORTED_VERSIONS,
        node_id: NodeId::new("fog-a").expect("valid id"),
        token: crate::Secret::new("abcdef.0123456789abcdefghijklmn"),
        csr_der: vec![0x30, 0x82, 0x01, 0x00],
    };
    let responses = vec![
        JoinResponse::Accepted {
            certificate_der: vec![0x30, 1, 2],
            ca_der: vec![0x30, 3, 4],
        },
        JoinResponse::Refused(Refusal {
            code: ErrorCode::PolicyDenied,
            message: "join.token_reused: join token already used".into(),
        }),
    ];
    (request, responses)
}
