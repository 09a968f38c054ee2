//! The browser console (`/console/`), served from the files embedded at build time
//! (`coordinator/build.rs` takes `console/dist`). The page is static; everything it shows
//! comes from the API it calls with the user's token.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::AppState;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/console_files.rs"));
}

/// Said instead of the console when the binary was built without it.
const NOT_BUILT: &str = "<!doctype html><title>fogshell console</title>\
<p>This coordinator was built without its console. Build it with \
<code>npm ci &amp;&amp; npm run build</code> in <code>console/</code> \
(<code>scripts/up.sh</code> and <code>scripts/test.sh</code> do), then rebuild the coordinator.";

fn file(name: &str) -> Option<&'static [u8]> {
    embedded::FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        _ => "text/plain; charset=utf-8",
    }
}

/// `scheme://host:port` of a URL (the issuer's, for the page's content security policy).
fn origin(url: &str) -> &str {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url;
    };
    let host_len = rest.find('/').unwrap_or(rest.len());
    &url[..scheme.len() + 3 + host_len]
}

/// The page's content security policy: it may talk to its own origin, send its token request
/// to the issuer, and reach the nodes' own gateways (`wss://` for terminals, `https://` for
/// their round-trip probes) — the ones connected when the page loads.
fn policy(issuer: &str, gateways: &[String]) -> HeaderValue {
    let mut connect = vec!["'self'".to_owned(), origin(issuer).to_owned()];
    for gateway in gateways {
        let gateway = origin(gateway);
        connect.push(gateway.to_owned());
        if let Some(rest) = gateway.strip_prefix("wss://") {
            connect.push(format!("https://{rest}"));
        } else if let Some(rest) = gateway.strip_prefix("ws://") {
            connect.push(format!("http://{rest}"));
        }
    }
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src {}; img-src 'self' data:; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'self' {issuer}",
        connect.join(" "),
        issuer = origin(issuer)
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'self'"))
}

/// The console's routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(|State(state): State<Arc<AppState>>| async move {
                let gateways: Vec<String> = state
                    .control
                    .fleet()
                    .views()
                    .into_iter()
                    .filter_map(|node| node.gateway_url)
                    .collect();
                page(policy(state.verifier.issuer(), &gateways))
            }),
        )
        .route("/console/assets/{name}", get(asset))
}

fn page(policy: HeaderValue) -> Response {
    let (status, body) = match file("index.html") {
        Some(bytes) => (StatusCode::OK, bytes),
        None => (StatusCode::SERVICE_UNAVAILABLE, NOT_BUILT.as_bytes()),
    };
    (
        status,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, policy),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn asset(Path(name): Path<String>) -> Response {
    match file(&name).filter(|_| name != "index.html") {
        Some(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(content_type(&name)),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
                (
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ),
            ],
            bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_the_gateways_terminals_and_probes() {
        let policy = policy(
            "https://login.example.org/realms/acme",
            &[
                "wss://fog-a.example.org:8444".into(),
                "ws://127.0.0.1:9".into(),
            ],
        );
        let policy = policy.to_str().unwrap();
        assert!(
            policy.contains(
                "connect-src 'self' https://login.example.org wss://fog-a.example.org:8444 \
                 https://fog-a.example.org:8444 ws://127.0.0.1:9 http://127.0.0.1:9;"
            ),
            "{policy}"
        );
    }

    #[test]
    fn origins_drop_the_path() {
        assert_eq!(
            origin("http://127.0.0.1:9000/dev/oidc"),
            "http://127.0.0.1:9000"
        );
        assert_eq!(origin("https://login.example"), "https://login.example");
        assert_eq!(origin("not a url"), "not a url");
    }

    #[test]
    fn types_follow_the_extension() {
        assert_eq!(content_type("app.js"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("app.css"), "text/css; charset=utf-8");
        assert_eq!(
            content_type("app.js.LEGAL.txt"),
            "text/plain; charset=utf-8"
        );
    }
}
