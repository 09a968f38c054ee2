//! Image admission on the coordinator, against Debian's `docker-registry` on loopback: the
//! default image pushed, signed, with a provenance and an SBOM attested (by the library the
//! `image` commands use). **Cold**: a fresh `Admission` checks it — reading the `.sig` and
//! `.att` manifests and blobs from the registry, verifying signatures and statements.
//! **Warm**: the same `Admission` again, answered from its cache.
//!
//! `cargo bench -p fogshell-e2e --bench admission` (FOGSHELL_BENCH_TRIALS, default 50). Needs
//! images/build.sh's default image and Debian's docker-registry and skopeo.

use std::time::Instant;

use base64::Engine as _;
use fogshell_coordinator::admission::Admission;
use fogshell_e2e::bench::report;
use fogshell_e2e::registry::LocalRegistry;
use fogshell_e2e::stack::default_layout;
use fogshell_shared::ImageRef;
use fogshell_shared::admission::{AdmissionPolicy, CYCLONEDX, Mode, PROVENANCE_V02, Rule};
use fogshell_supply::formats;
use fogshell_supply::keys::PrivateKey;
use fogshell_supply::registry::Registry;
use serde_json::json;

const TEKTON: &str = "https://tekton.dev/chains/v2";

fn main() {
    let trials: usize = std::env::var("FOGSHELL_BENCH_TRIALS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(50);
    let registry = LocalRegistry::start();
    let layout = default_layout();
    registry.push_layout(&layout, "default", "fogshell/shell");
    let digest = std::fs::read_to_string(layout.join("digest")).unwrap();
    let image: ImageRef = format!("{}/fogshell/shell@{}", registry.addr, digest.trim())
        .parse()
        .unwrap();
    let digest = image.digest().unwrap();
    let repository = fogshell_shared::admission::repository_of(&image);
    let key = PrivateKey::generate();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = Registry::new(vec![registry.addr.clone()]);
    runtime.block_on(async {
        let payload = formats::simple_signing_payload(&repository, &digest);
        let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
        client
            .append(
                &image,
                &formats::signature_tag(&digest),
                payload,
                formats::SIMPLE_SIGNING_MEDIA_TYPE,
                vec![(formats::SIGNATURE_ANNOTATION.into(), signature)],
            )
            .await
            .unwrap();
        for (kind, predicate) in [
            (PROVENANCE_V02, json!({"builder": {"id": TEKTON}})),
            (
                CYCLONEDX,
                json!({"bomFormat": "CycloneDX", "components": []}),
            ),
        ] {
            let envelope = formats::attest(&key, &repository, &digest, kind, predicate);
            client
                .append(
                    &image,
                    &formats::attestation_tag(&digest),
                    serde_json::to_vec(&envelope).unwrap(),
                    formats::DSSE_MEDIA_TYPE,
                    vec![(formats::PREDICATE_ANNOTATION.into(), kind.into())],
                )
                .await
                .unwrap();
        }
    });
    let policy = AdmissionPolicy {
        mode: Mode::Production,
        dev_exempt: None,
        rules: vec![Rule {
            name: "bench".into(),
            repositories: vec![repository.clone()],
            keys: vec![key.public().to_pem()],
            require_predicates: vec![PROVENANCE_V02.into()],
            builder_ids: vec![TEKTON.into()],
            require_sbom: true,
        }],
    };

    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    runtime.block_on(async {
        for _ in 0..trials {
            let admission = Admission::new(
                policy.clone(),
                fogshell_supply::registry::Registry::new(vec![registry.addr.clone()]),
            );
            let started = Instant::now();
            let (_, cached) = admission.check(&image).await.unwrap();
            cold.push(started.elapsed());
            assert!(!cached);
            for _ in 0..20 {
                let started = Instant::now();
                let (_, cached) = admission.check(&image).await.unwrap();
                warm.push(started.elapsed());
                assert!(cached);
            }
        }
    });
    println!(
        "registry {} (loopback), signature + 2 attestations",
        registry.addr
    );
    report("cold (fetch + verify)", cold);
    report("warm (cached)", warm);
}
