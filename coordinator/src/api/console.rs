//! The browser console (`/console/`), served from the files embedded at build time
//! (`coordinator/build.rs` takes `console/dist`). The page is static; everything it shows
//! comes from the API it calls with the user's token.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

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

/// The console's routes. `issuer` is the OIDC issuer's URL: the page may send its token
/// request there and nowhere else off its own origin.
pub(super) fn routes<S: Clone + Send + Sync + 'static>(issuer: &str) -> Router<S> {
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src 'self' {issuer}; img-src 'self' data:; frame-ancestors 'none'; \
         base-uri 'none'; form-action 'self' {issuer}",
        issuer = origin(issuer)
    );
    let policy =
        HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'self'"));
    let page_policy = policy.clone();
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/",
            get(move || {
                let policy = page_policy.clone();
                async move { page(policy) }
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
