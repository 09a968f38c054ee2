//! An OIDC issuer on loopback for the API tests: discovery and JWKS over HTTP, with an RSA
//! (RS256), a P-256 (ES256) and an Ed25519 (EdDSA) key made fresh for each run, and helpers
//! that mint good tokens and every kind of bad one.
//!
//! RSA keys come from the `openssl` command (ring cannot generate them); the others from ring.

use std::net::SocketAddr;
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair as _;
use serde_json::{Value, json};

/// The audience tests' tokens are for.
pub const AUDIENCE: &str = "fogshell-test";

/// A signing key the issuer publishes.
#[derive(Clone)]
pub struct SigningKey {
    /// Its `kid`.
    pub kid: String,
    /// Its algorithm.
    pub alg: Algorithm,
    encoding: EncodingKey,
    /// The JWK the issuer publishes.
    pub jwk: Value,
    /// For RSA: the public key as PKCS#1 DER (what an HS256 confusion attack keys with).
    pub public_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn rsa_key(kid: &str) -> SigningKey {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rsa.der");
    let status = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-outform",
            "DER",
            "-out",
        ])
        .arg(&path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("the openssl command (scripts/install-deps.sh installs it)");
    assert!(status.success(), "openssl genpkey failed");
    // With DER output openssl writes the traditional PKCS#1 form, which is what ring's
    // `from_der` and jsonwebtoken's `from_rsa_der` read.
    let pkcs1 = std::fs::read(&path).expect("the RSA key");
    let pair = ring::rsa::KeyPair::from_der(&pkcs1).expect("a valid RSA key");
    let public = pair.public();
    let components = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(public);
    let (n, e) = (components.n, components.e);
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(&pkcs1),
        jwk: json!({"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig", "n": B64.encode(n), "e": B64.encode(e)}),
        public_der: public.as_ref().to_vec(),
    }
}

fn ec_key(kid: &str) -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("P-256 key");
    let pair =
        ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("P-256 key");
    let point = pair.public_key().as_ref(); // 0x04 || x || y
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
                    "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65])}),
        public_der: point.to_vec(),
    }
}

fn ed_key(kid: &str) -> SigningKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519 key");
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519 key");
    SigningKey {
        kid: kid.into(),
        alg: Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
                    "x": B64.encode(pair.public_key().as_ref())}),
        public_der: pair.public_key().as_ref().to_vec(),
    }
}

/// The running issuer.
#[derive(Debug)]
pub struct Issuer {
    /// Its URL (`http://127.0.0.1:port`).
    pub url: String,
    /// RS256, ES256 and EdDSA keys, in that order.
    pub keys: Vec<SigningKey>,
    /// A key it does not publish (tokens signed with it name an unknown `kid`).
    pub unpublished: SigningKey,
    jwks: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Issuer {
    /// Starts serving on a loopback port.
    pub fn start() -> Self {
        let keys = vec![rsa_key("rsa-1"), ec_key("ec-1"), ed_key("ed-1")];
        let unpublished = ed_key("not-published");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr: SocketAddr = listener.local_addr().expect("bound");
        let url = format!("http://{addr}");
        let discovery = json!({
            "issuer": url,
            "jwks_uri": format!("{url}/jwks"),
            "authorization_endpoint": format!("{url}/authorize"),
            "token_endpoint": format!("{url}/token"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        });
        let jwks = std::sync::Arc::new(std::sync::Mutex::new(
            keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>(),
        ));
        let published = std::sync::Arc::clone(&jwks);
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || async move { axum::Json(discovery) }),
            )
            .route(
                "/jwks",
                axum::routing::get(move || {
                    let keys = published.lock().map(|k| k.clone()).unwrap_or_default();
                    async move { axum::Json(json!({ "keys": keys })) }
                }),
            );
        // Its own thread and runtime, so tests of any flavour (sync or async) can use it.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            url,
            keys,
            unpublished,
            jwks,
            stop: Some(stop),
            server: Some(server),
        }
    }

    /// Starts publishing `key` (a key rotation at the issuer).
    pub fn publish(&self, key: &SigningKey) {
        self.jwks.lock().expect("the JWKS").push(key.jwk.clone());
    }

    /// Claims for `subject` of `tenant` with `scope`, valid for an hour from now.
    pub fn claims(&self, subject: &str, tenant: &str, scope: &str) -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({"iss": self.url, "aud": AUDIENCE, "sub": subject, "tenant": tenant,
               "scope": scope, "iat": now, "nbf": now, "exp": now + 3600})
    }

    /// Signs `claims` with `key`.
    pub fn sign(key: &SigningKey, claims: &Value) -> String {
        let mut header = Header::new(key.alg);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).expect("signing")
    }

    /// A good token with every scope, signed with the RSA key.
    pub fn token(&self, subject: &str, tenant: &str) -> String {
        Self::sign(
            &self.keys[0],
            &self.claims(
                subject,
                tenant,
                "fogshell.sessions fogshell.audit fogshell.admin",
            ),
        )
    }

    /// `alg: none`, unsigned.
    pub fn alg_none(&self, claims: &Value) -> String {
        let header = json!({"alg": "none", "typ": "JWT", "kid": self.keys[0].kid});
        format!(
            "{}.{}.",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        )
    }

    /// HS256 keyed with the RSA key's public half: the algorithm-confusion attack.
    pub fn hs256_with_public_key(&self, claims: &Value) -> String {
        let rsa = &self.keys[0];
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(rsa.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(&rsa.public_der))
            .expect("signing")
    }
}

impl Drop for Issuer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}
