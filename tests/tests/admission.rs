//! Supply-chain admission against a real registry (Debian's `docker-registry` on loopback):
//! the default image published by `images/publish.sh` — signed, with SLSA provenance and a
//! CycloneDX SBOM as signed attestations — is admitted and runs; every way an image can fall
//! short is refused with its own rule id, as a 403 whose evidence is the `policy.denied`
//! event; and the agent checks again: an image whose signature vanished from the registry
//! after the coordinator cached its admission does not start on the node. A registry that
//! demands a login is published to, read and pulled from with an auth file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fogshell_e2e::api::Api;
use fogshell_e2e::registry::LocalRegistry;
use fogshell_e2e::stack::{NodeSpec, Stack, default_layout};
use fogshell_e2e::ws::Viewer;
use fogshell_shared::admission::{CYCLONEDX, PROVENANCE_V02};
use fogshell_shared::{Digest, ImageRef};
use fogshell_supply::credentials::Credentials;
use fogshell_supply::formats;
use fogshell_supply::keys::PrivateKey;
use fogshell_supply::registry::Registry;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse";
const TEKTON: &str = "https://tekton.dev/chains/v2";

fn coordinator() -> Command {
    let mut command = Command::new(fogshell_e2e::binary("fogshell-coordinator"));
    command.env("COSIGN_PASSWORD", PASSWORD);
    command
}

fn succeed(command: &mut Command) -> String {
    let out = command.output().expect("the command runs");
    assert!(out.status.success(), "{command:?} failed: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// The registry, two keys (one trusted by the policy), and a second image.
struct Bed {
    registry: LocalRegistry,
    dir: tempfile::TempDir,
    /// Another build of the default image (another timestamp, so another digest): one no
    /// node has imported.
    variant: PathBuf,
    /// The registry's login as an auth file, if it demands one.
    auth_file: Option<PathBuf>,
}

impl Bed {
    fn new() -> Self {
        Self::with(LocalRegistry::start())
    }

    fn with(registry: LocalRegistry) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let auth_file = registry
            .login
            .is_some()
            .then(|| registry.auth_file(dir.path()));
        for name in ["trusted", "rogue"] {
            succeed(
                coordinator()
                    .args(["image", "keygen", "--output-prefix"])
                    .arg(dir.path().join(name)),
            );
        }
        let variant = dir.path().join("variant");
        let build = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/build.sh");
        succeed(
            Command::new(build)
                .arg(&variant)
                .env("SOURCE_DATE_EPOCH", "86400"),
        );
        Self {
            registry,
            dir,
            variant,
            auth_file,
        }
    }

    /// Everything that logs in to the registry (skopeo, `fogshell-coordinator image`) reads
    /// the auth file from `REGISTRY_AUTH_FILE`.
    fn logged_in(&self, command: &mut Command) {
        if let Some(file) = &self.auth_file {
            command.env("REGISTRY_AUTH_FILE", file);
        }
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.key"))
    }

    fn repository(&self, name: &str) -> String {
        format!("{}/fogshell/{name}", self.registry.addr)
    }

    /// `images/publish.sh`: push, sign, attest provenance (v0.2, v1) and SBOM.
    fn publish(&self, layout: &Path, name: &str, key: &str) -> String {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/publish.sh");
        let mut command = Command::new(script);
        self.logged_in(&mut command);
        succeed(
            command
                .arg(layout)
                .arg(self.repository(name))
                .arg(self.key(key))
                .env("COSIGN_PASSWORD", PASSWORD)
                .env("FOGSHELL_INSECURE_REGISTRY", &self.registry.addr)
                .env(
                    "FOGSHELL_COORDINATOR",
                    fogshell_e2e::binary("fogshell-coordinator"),
                ),
        )
        .trim()
        .to_owned()
    }

    /// Pushes a layout's image under `name`, unsigned; returns the pinned reference.
    fn push(&self, layout: &Path, name: &str) -> String {
        self.registry
            .push_layout(layout, "default", &format!("fogshell/{name}"));
        let digest = std::fs::read_to_string(layout.join("digest")).unwrap();
        format!("{}@{}", self.repository(name), digest.trim())
    }

    fn sign(&self, image: &str, key: &str) {
        succeed(
            coordinator()
                .args(["image", "sign", "--image", image, "--insecure-registry"])
                .arg(&self.registry.addr)
                .arg("--key")
                .arg(self.key(key)),
        );
    }

    fn attest(&self, image: &str, predicate_type: &str, predicate: &Value) {
        let file = self.dir.path().join("predicate.json");
        std::fs::write(&file, predicate.to_string()).unwrap();
        succeed(
            coordinator()
                .args([
                    "image",
                    "attest",
                    "--image",
                    image,
                    "--type",
                    predicate_type,
                ])
                .args(["--insecure-registry", &self.registry.addr])
                .arg("--key")
                .arg(self.key("trusted"))
                .arg("--predicate")
                .arg(&file),
        );
    }

    fn artifacts_client(&self) -> Registry {
        let credentials = Credentials::load_optional(self.auth_file.as_deref()).unwrap();
        Registry::new(vec![self.registry.addr.clone()]).with_credentials(credentials)
    }

    /// A coordinator under [`Bed::policy`] and one node, fog-a, both reaching the registry
    /// (with its login, if it demands one).
    fn stack(&self) -> Stack {
        let policy = self.policy();
        let mut args = vec![
            "--admission-policy",
            policy.to_str().unwrap(),
            "--insecure-registry",
            &self.registry.addr,
        ];
        if let Some(file) = &self.auth_file {
            args.extend(["--registry-auth-file", file.to_str().unwrap()]);
        }
        let mut stack = Stack::coordinator_only(&args);
        stack.add(&NodeSpec {
            insecure_registries: vec![self.registry.addr.clone()],
            registry_auth_file: self.auth_file.clone(),
            ..NodeSpec::new("fog-a")
        });
        stack
    }

    fn policy(&self) -> PathBuf {
        let path = self.dir.path().join("admission.toml");
        std::fs::write(
            &path,
            format!(
                "[[rules]]\nname = \"fogshell\"\nrepositories = [\"{}/fogshell/*\"]\n\
                 keys = [\"trusted.pub\"]\nrequire_predicates = [\"{PROVENANCE_V02}\"]\n\
                 builder_ids = [\"{TEKTON}\"]\nrequire_sbom = true\n",
                self.registry.addr
            ),
        )
        .unwrap();
        path
    }
}

fn provenance(builder: &str) -> Value {
    json!({"builder": {"id": builder}, "buildType": "tekton.dev/v1beta1/TaskRun", "materials": []})
}

fn sbom() -> Value {
    json!({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []})
}

fn pinned(image: &str) -> (ImageRef, Digest) {
    let image: ImageRef = image.parse().unwrap();
    let digest = image.digest().unwrap();
    (image, digest)
}

async fn create(api: &Api, token: &str, image: &str) -> fogshell_e2e::api::Answer {
    let body = json!({"profile": "default", "ttl_seconds": 600, "image_ref": image});
    api.call(
        "POST",
        "/v1/sessions",
        "/v1/sessions",
        Some(token),
        Some(&body),
    )
    .await
}

/// Starts a session of `image` and sees its shell answer; returns the creation's answer.
async fn start_and_answer(
    api: &Api,
    token: &str,
    image: &str,
    stack: &Stack,
) -> fogshell_e2e::api::Answer {
    let created = create(api, token, image).await;
    assert_eq!(created.status, 201, "{}\n{}", created.body, stack.logs());
    let mut viewer = Viewer::attach(&created.body["attach"]).await;
    viewer.type_bytes(b"echo \"ans\"\"wered\"\n").await;
    viewer
        .expect_output("answered", Duration::from_secs(20))
        .await;
    created
}

/// The rule id of the `policy.denied` event a refusal points at.
async fn refusal_rule(api: &Api, admin: &str, answer: &fogshell_e2e::api::Answer) -> String {
    let pointer = answer.body["evidence_pointer"]
        .as_str()
        .unwrap_or_else(|| panic!("no evidence: {}", answer.body));
    let event = api.get(admin, pointer, "/v1/events/{id}").await;
    assert_eq!(event.body["event_type"], "policy.denied", "{}", event.body);
    event.body["details"]["rule_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_attested_images_with_an_sbom_run() {
    let bed = Bed::new();
    let layout = default_layout();
    let good = bed.publish(&layout, "shell", "trusted");
    let untrusted = bed.publish(&layout, "untrusted", "rogue");

    let unsigned = bed.push(&layout, "unsigned");
    let no_sbom = bed.push(&layout, "no-sbom");
    bed.sign(&no_sbom, "trusted");
    bed.attest(&no_sbom, PROVENANCE_V02, &provenance(TEKTON));
    let no_provenance = bed.push(&layout, "no-provenance");
    bed.sign(&no_provenance, "trusted");
    bed.attest(&no_provenance, CYCLONEDX, &sbom());
    let foreign_builder = bed.push(&layout, "foreign-builder");
    bed.sign(&foreign_builder, "trusted");
    bed.attest(
        &foreign_builder,
        PROVENANCE_V02,
        &provenance("https://ci.evil.example/builder"),
    );
    bed.attest(&foreign_builder, CYCLONEDX, &sbom());

    // A signed provenance whose unsigned annotation claims it is an SBOM.
    let lying = bed.push(&layout, "lying");
    bed.sign(&lying, "trusted");
    bed.attest(&lying, PROVENANCE_V02, &provenance(TEKTON));
    let key = PrivateKey::from_encrypted_pem(
        &std::fs::read_to_string(bed.key("trusted")).unwrap(),
        PASSWORD.as_bytes(),
    )
    .unwrap();
    let (lying_ref, lying_digest) = pinned(&lying);
    let envelope = formats::attest(
        &key,
        &bed.repository("lying"),
        &lying_digest,
        PROVENANCE_V02,
        provenance(TEKTON),
    );
    bed.artifacts_client()
        .append(
            &lying_ref,
            &formats::attestation_tag(&lying_digest),
            serde_json::to_vec(&envelope).unwrap(),
            formats::DSSE_MEDIA_TYPE,
            vec![(formats::PREDICATE_ANNOTATION.into(), CYCLONEDX.into())],
        )
        .await
        .unwrap();

    // Another image carrying the good image's signature, or its attestations.
    let (good_ref, good_digest) = pinned(&good);
    let good_artifacts = bed
        .artifacts_client()
        .artifacts(&good_ref, &good_digest)
        .await
        .unwrap();
    let copied_signature = bed.push(&bed.variant, "copied-signature");
    let copied_attestations = bed.push(&bed.variant, "copied-attestations");
    bed.sign(&copied_attestations, "trusted");
    for (target, copy_signature) in [(&copied_signature, true), (&copied_attestations, false)] {
        let (image, digest) = pinned(target);
        if copy_signature {
            for layer in &good_artifacts.signatures {
                let signature = layer.signature.clone().unwrap();
                bed.artifacts_client()
                    .append(
                        &image,
                        &formats::signature_tag(&digest),
                        layer.payload.clone(),
                        formats::SIMPLE_SIGNING_MEDIA_TYPE,
                        vec![(formats::SIGNATURE_ANNOTATION.into(), signature)],
                    )
                    .await
                    .unwrap();
            }
        } else {
            for layer in &good_artifacts.attestations {
                bed.artifacts_client()
                    .append(
                        &image,
                        &formats::attestation_tag(&digest),
                        layer.envelope.clone(),
                        formats::DSSE_MEDIA_TYPE,
                        vec![(
                            formats::PREDICATE_ANNOTATION.into(),
                            layer.annotated_type.clone().unwrap(),
                        )],
                    )
                    .await
                    .unwrap();
            }
        }
    }

    let stack = bed.stack();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let admin = stack.issuer.token("admin", "ops");

    let cases = [
        (unsigned.clone(), "admission.unsigned"),
        (untrusted, "admission.untrusted_signature"),
        (copied_signature, "admission.signature_for_another_image"),
        (
            copied_attestations,
            "admission.attestation_for_another_image",
        ),
        (no_provenance, "admission.missing_attestation"),
        (foreign_builder, "admission.builder_not_allowed"),
        (no_sbom, "admission.sbom_missing"),
        (lying, "admission.predicate_type_mismatch"),
        (
            format!("{}:latest", bed.repository("shell")),
            "image.unpinned",
        ),
        (
            format!("{}/elsewhere/shell@{good_digest}", bed.registry.addr),
            "admission.no_rule",
        ),
        // The default image (dev mode would run it unverified; production does not).
        (fogshell_e2e::stack::default_image(), "admission.no_rule"),
    ];
    for (image, rule) in &cases {
        let answer = create(&api, &alice, image).await;
        assert!(
            answer.status == 403 || (answer.status == 422 && *rule == "image.unpinned"),
            "{image}: {} {}",
            answer.status,
            answer.body
        );
        assert_eq!(
            refusal_rule(&api, &admin, &answer).await,
            *rule,
            "{image}: {}",
            answer.body
        );
    }

    // The good image runs.
    let created = start_and_answer(&api, &alice, &good, &stack).await;
    let again = create(&api, &alice, &good).await;
    assert_eq!(again.status, 201, "{}", again.body);
    let events = api
        .get(&admin, "/v1/events?event_type=image.admitted", "/v1/events")
        .await;
    let admitted: Vec<&Value> = events.body["items"].as_array().unwrap().iter().collect();
    assert_eq!(admitted.len(), 2, "{admitted:?}");
    let verified = admitted[0]["details"]["verified"].as_str().unwrap();
    for part in ["cosign signature", PROVENANCE_V02, CYCLONEDX, TEKTON] {
        assert!(verified.contains(part), "{verified}");
    }
    assert_eq!(admitted[0]["details"]["cached"], false);
    assert_eq!(admitted[1]["details"]["cached"], true);

    // The signature disappears from the registry: the coordinator's cached admission still
    // passes, the node's own check does not. (The two sessions end first: the node has room
    // for two.)
    for session in [&created, &again] {
        let id = session.body["session_id"].as_str().unwrap();
        let path = format!("/v1/sessions/{id}");
        let deleted = api
            .call("DELETE", &path, "/v1/sessions/{id}", Some(&alice), None)
            .await;
        assert_eq!(deleted.status, 200, "{}", deleted.body);
    }
    // Their room is free at once: placement does not wait for the node's next heartbeat.
    bed.registry
        .delete_manifest("fogshell/shell", &formats::signature_tag(&good_digest));
    let refused = create(&api, &alice, &good).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(
        refusal_rule(&api, &admin, &refused).await,
        "admission.unsigned"
    );
    assert!(
        refused.body["message"]
            .as_str()
            .unwrap()
            .contains("node fog-a refused"),
        "{}",
        refused.body
    );
    stack.verify_audit();
}

/// A registry that demands a login: the image, its signature and its attestations are
/// published with the login from an auth file (skopeo and `fogshell-coordinator image` both
/// read `REGISTRY_AUTH_FILE`), the coordinator reads the signatures and the node pulls the
/// image with it; read anonymously, the registry refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_registry_is_used_with_the_login_of_an_auth_file() {
    let bed = Bed::with(LocalRegistry::start_with_login());
    // An image no node has imported, so the node must pull it.
    let good = bed.publish(&bed.variant, "shell", "trusted");
    let (image, digest) = pinned(&good);

    let anonymous = Registry::new(vec![bed.registry.addr.clone()]);
    let refused = anonymous.artifacts(&image, &digest).await.unwrap_err();
    assert!(
        refused.contains("Not authorized") && refused.contains("registry auth file"),
        "{refused}"
    );
    let artifacts = bed.artifacts_client().artifacts(&image, &digest).await;
    assert_eq!(artifacts.unwrap().signatures.len(), 1);

    let stack = bed.stack();
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    start_and_answer(&api, &alice, &good, &stack).await;

    // The node pulled the image's layer itself, logged in.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            bed.variant.join("blobs/sha256").join(
                std::fs::read_to_string(bed.variant.join("digest"))
                    .unwrap()
                    .trim()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap(),
    )
    .unwrap();
    let layer = manifest["layers"][0]["digest"].as_str().unwrap();
    assert_eq!(bed.registry.gets(&format!("/blobs/{layer}")), 1);
    stack.verify_audit();
}
