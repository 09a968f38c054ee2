//! Starting a whole coordinator: the store, the CA, the QUIC fabric, the control plane and
//! the HTTP API, wired together. `serve`, the all-in-one `up`, the tests and the benchmarks
//! all start it here, so they run the same thing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fogshell_shared::profile::Profiles;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::api::rate_limit::{RateLimit, RateLimiter};
use crate::api::{self, AppState};
use crate::auth::dev_issuer::{self, DevIssuer};
use crate::auth::oidc::{OidcConfig, OidcVerifier};
use crate::control::{ControlConfig, ControlPlane, Hooks, ImagePolicy, PlacementPolicy};
use crate::fabric::nodes::Links;
use crate::fabric::{self, Fabric, enroll::Enrollment};
use crate::fleet::Fleet;
use crate::join_tokens::TokenStore;
use crate::pki::CertificateAuthority;
use crate::store::sqlite::SqliteStore;

/// How the HTTP listener speaks.
#[derive(Debug, Clone)]
pub enum HttpTls {
    /// Plain HTTP: only on a loopback address.
    Plain,
    /// TLS with a certificate from the coordinator's own CA for the QUIC names (clients
    /// trust `<data dir>/pki/ca.crt`).
    OwnCa,
    /// TLS with this certificate chain and key (PEM files).
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
}

/// Where access tokens come from.
#[derive(Debug, Clone)]
pub enum Identity {
    /// An external OIDC issuer.
    Oidc(OidcConfig),
    /// The built-in development issuer (loopback only), for tokens with this audience.
    Dev {
        /// The audience its tokens carry.
        audience: String,
    },
}

/// Everything a coordinator is started with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The data directory (CA, join tokens, `fogshell.db`).
    pub data_dir: PathBuf,
    /// UDP address for QUIC.
    pub quic_listen: SocketAddr,
    /// Names agents reach the coordinator by (its certificate's SANs).
    pub names: Vec<String>,
    /// TCP address for the HTTP API.
    pub http_listen: SocketAddr,
    /// TLS on the HTTP API.
    pub tls: HttpTls,
    /// How clients reach the API, `http(s)://host:port` [default: from the bound address].
    pub public_url: Option<String>,
    /// Access tokens.
    pub identity: Identity,
    /// Session profiles.
    pub profiles: Profiles,
    /// Which images sessions may run.
    pub images: ImagePolicy,
    /// Per-tenant request budget.
    pub rate: RateLimit,
    /// A silent node is declared lost within this.
    pub lost_within: Duration,
    /// How often agents send heartbeats.
    pub heartbeat_interval: Duration,
    /// Placement's configuration.
    pub placement: PlacementPolicy,
    /// How long node certificates are valid.
    pub node_cert_lifetime: time::Duration,
    /// The scopes fogshell's own clients (the console, `shell`) ask the issuer for.
    pub client_scope: String,
    /// TPM attestation of nodes.
    pub attestation: crate::attestation::AttestationConfig,
    /// The image admission policy file (none: only `--dev` may start, running the default
    /// image unverified).
    pub admission_policy: Option<PathBuf>,
    /// Registries (`host:port`) whose signatures are read over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Logins for private registries: an auth file as `skopeo login --authfile` writes.
    pub registry_auth_file: Option<PathBuf>,
    /// How long an attach token opens a terminal.
    pub attach_token_ttl: Duration,
    /// How often every running session's limits are read back from its node.
    pub limits_check_interval: Duration,
    /// How many viewers a session, and a tenant, may have at the relay at once.
    pub viewer_limits: fogshell_gateway::viewers::ViewerLimits,
    /// How long a relay viewer may stay silent (pongs included) before it is dropped.
    pub viewer_silence: Duration,
    /// Origins of consoles other than the coordinator's own whose pages may open terminals.
    pub console_origins: Vec<String>,
}

/// A started coordinator.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// Where QUIC listens.
    pub quic_addr: SocketAddr,
    /// The API's base URL as clients should use it.
    pub public_url: String,
    /// The CA hash agents pin.
    pub ca_hash: String,
    /// The development issuer, when there is one.
    pub dev_issuer: Option<Arc<DevIssuer>>,
    /// Join tokens and the CA.
    pub enrollment: Arc<Enrollment>,
    /// The control plane.
    pub control: Arc<ControlPlane>,
    endpoint: quinn::Endpoint,
    tasks: Vec<JoinHandle<()>>,
}

fn now_offset() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn ensure_dir(dir: &std::path::Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("creating {}: {e}", dir.display()))
}

fn load_tls(
    tls: &HttpTls,
    ca: &CertificateAuthority,
    names: &[String],
) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    use fogshell_gateway::serve::{tls_config, tls_from_files};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let config = match tls {
        HttpTls::Plain => return Ok(None),
        HttpTls::OwnCa => {
            let (cert, key) = ca
                .issue_server_certificate(names, time::Duration::days(30), now_offset())
                .map_err(|e| e.to_string())?;
            let chain = vec![
                CertificateDer::from(cert),
                CertificateDer::from(ca.cert_der().to_vec()),
            ];
            tls_config(chain, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)))
        }
        HttpTls::Files { cert, key } => tls_from_files(cert, key),
    };
    config
        .map(Some)
        .map_err(|e| format!("the HTTP certificate: {e}"))
}

/// Starts a coordinator; it runs until [`Running::shutdown`].
pub async fn start(config: ServerConfig) -> Result<Running, String> {
    ensure_dir(&config.data_dir)?;
    let is_loopback = config.http_listen.ip().is_loopback();
    if matches!(config.tls, HttpTls::Plain) && !is_loopback {
        return Err(format!(
            "plain HTTP is only for loopback; {} needs TLS",
            config.http_listen
        ));
    }
    if config.heartbeat_interval < Duration::from_millis(50)
        || config.heartbeat_interval * 2 > config.lost_within
    {
        return Err(format!(
            "heartbeats every {:?} cannot keep a node alive when silence of {:?} means lost",
            config.heartbeat_interval, config.lost_within
        ));
    }
    if matches!(config.identity, Identity::Dev { .. }) && !is_loopback {
        return Err("the development issuer runs only on loopback".into());
    }
    let ca = Arc::new(
        CertificateAuthority::load_or_create(&config.data_dir, now_offset())
            .map_err(|e| e.to_string())?,
    );
    let tokens = TokenStore::open(&config.data_dir).map_err(|e| e.to_string())?;
    let store = Arc::new(
        SqliteStore::open(&config.data_dir.join("fogshell.db")).map_err(|e| e.to_string())?,
    );
    let tls = load_tls(&config.tls, &ca, &config.names)?;

    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(|e| format!("binding {}: {e}", config.http_listen))?;
    let http_addr = http.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("{scheme}://{http_addr}"))
        .trim_end_matches('/')
        .to_owned();
    let public_ws = public_url.replacen("http", "ws", 1);
    let mut console_origins = vec![fogshell_gateway::origin_of(&public_url)];
    console_origins.extend(
        config
            .console_origins
            .iter()
            .map(|o| fogshell_gateway::origin_of(o)),
    );
    console_origins.truncate(fogshell_gateway::MAX_ORIGINS);

    let quic_config = fabric::server_config(&ca, &config.names, now_offset())?;
    let endpoint = fabric::bind(config.quic_listen, quic_config)
        .map_err(|e| format!("binding {}: {e}", config.quic_listen))?;
    let quic_addr = endpoint.local_addr().map_err(|e| e.to_string())?;

    // reqwest's rustls needs a process-wide provider; ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http_client = reqwest::Client::builder()
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let (dev_issuer, oidc) = match &config.identity {
        Identity::Oidc(oidc) => (None, oidc.clone()),
        Identity::Dev { audience } => {
            let issuer_url = format!("{public_url}{}", dev_issuer::PATH);
            let issuer = Arc::new(DevIssuer::new(issuer_url.clone(), audience.clone())?);
            (Some(issuer), OidcConfig::new(issuer_url, audience.clone()))
        }
    };
    let verifier = Arc::new(OidcVerifier::new(oidc, http_client));

    let policy = crate::admission::load_policy(
        config.admission_policy.as_deref(),
        config.images.dev_mode,
        &config.images.default_image,
    )?;
    let credentials = fogshell_supply::credentials::Credentials::load_optional(
        config.registry_auth_file.as_deref(),
    )
    .map_err(|e| format!("--registry-auth-file: {e}"))?;
    let admission = Arc::new(crate::admission::Admission::new(
        policy,
        fogshell_supply::registry::Registry::new(config.insecure_registries.clone())
            .with_credentials(credentials),
    ));
    let fleet = Arc::new(Fleet::new(config.lost_within));
    let links = Arc::new(Links::default());
    let control = Arc::new(ControlPlane::new(
        store,
        Arc::clone(&fleet),
        Arc::clone(&links),
        Arc::clone(&admission),
        ControlConfig {
            profiles: config.profiles.clone(),
            images: config.images.clone(),
            placement: config.placement.clone(),
            public_ws,
            attach_token_ttl: config.attach_token_ttl,
            console_origins,
            viewer_limits: config.viewer_limits,
            viewer_silence: config.viewer_silence,
        },
    )?);
    let enrollment = Arc::new(Enrollment {
        ca: Arc::clone(&ca),
        tokens,
        node_cert_lifetime: config.node_cert_lifetime,
    });
    let fabric = Fabric {
        fleet,
        links,
        hooks: Arc::new(Hooks(Arc::clone(&control))),
        heartbeat_interval: config.heartbeat_interval,
        enrollment: Arc::clone(&enrollment),
        attestor: Arc::new(config.attestation.attestor(&config.data_dir)?),
        admission: Arc::new(admission.policy().clone()),
        attach: Arc::clone(control.attach_tokens()),
        console_origins: Arc::new(control.console_origins().to_vec()),
    };
    let state = Arc::new(AppState {
        control: Arc::clone(&control),
        verifier: Arc::clone(&verifier),
        rate: RateLimiter::new(config.rate),
        refusals: Default::default(),
        enrollment: Arc::clone(&enrollment),
        dev_issuer: dev_issuer.clone(),
        client_scope: config.client_scope.clone(),
    });
    let app = api::router(state);

    let mut tasks = vec![
        tokio::spawn(fabric::serve(endpoint.clone(), fabric.clone())),
        tokio::spawn(fabric::link::sweep_forever(fabric)),
        tokio::spawn(Arc::clone(&control).reap_forever()),
        tokio::spawn(Arc::clone(&control).check_limits_forever(config.limits_check_interval)),
    ];
    tasks.push(tokio::spawn(fogshell_gateway::serve::serve(http, app, tls)));
    if !matches!(config.identity, Identity::Dev { .. }) {
        // Fail loudly at start on a wrong issuer URL, but start anyway: the keys are fetched
        // again on the first token.
        let verifier = Arc::clone(&verifier);
        tasks.push(tokio::spawn(async move {
            if let Err(error) = verifier.refresh().await {
                tracing::error!(%error, "the OIDC issuer cannot be reached yet");
            }
        }));
    }
    tracing::info!(%http_addr, %quic_addr, %public_url, ca_hash = %ca.ca_hash(), "coordinator started");
    Ok(Running {
        http_addr,
        quic_addr,
        public_url,
        ca_hash: ca.ca_hash().to_string(),
        dev_issuer,
        enrollment,
        control,
        endpoint,
        tasks,
    })
}

impl Running {
    /// Stops serving: closes the QUIC endpoint and the HTTP listener.
    pub async fn shutdown(self) {
        for task in &self.tasks {
            task.abort();
        }
        self.endpoint.close(0u32.into(), b"coordinator stopping");
        self.endpoint.wait_idle().await;
    }
}
