//! An HTTP client for the coordinator's API that checks every answer against the OpenAPI
//! document the coordinator serves.

use serde_json::Value;

use crate::openapi::OpenApi;

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`null` when empty).
    pub body: Value,
}

impl Answer {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The client.
#[derive(Debug)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    doc: OpenApi,
}

impl Api {
    /// A client of the API at `base`, with the document it serves.
    pub async fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let text = http
            .get(format!("{base}/v1/openapi.json"))
            .send()
            .await
            .expect("GET /v1/openapi.json")
            .text()
            .await
            .expect("the document");
        Self {
            base: base.to_owned(),
            http,
            doc: OpenApi::parse(&text),
        }
    }

    /// Calls `method path` (`doc_path` is its documented form, e.g. `/v1/sessions/{id}`) and
    /// checks the answer against the document.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        doc_path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        self.call_with(method, path, doc_path, token, body, &[])
            .await
    }

    /// [`Self::call`] with request `headers`.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        doc_path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self.http.request(
            method.parse().expect("an HTTP method"),
            format!("{}{path}", self.base),
        );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("a body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{method} {path}: not JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        if let Err(mismatch) = self.doc.check(method, doc_path, status, &body) {
            panic!(
                "{method} {path} → {status} disagrees with the OpenAPI document: {mismatch}\nbody: {body}"
            );
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    /// `GET path` (documented as `doc_path`) with `token`.
    pub async fn get(&self, token: &str, path: &str, doc_path: &str) -> Answer {
        self.call("GET", path, doc_path, Some(token), None).await
    }

    /// `POST /v1/sessions` with the `default` profile; the answer is checked like any other.
    pub async fn create_session(&self, token: &str, ttl_seconds: u32) -> Answer {
        self.create_session_with(token, "default", ttl_seconds)
            .await
    }

    /// `POST /v1/sessions` with `profile`.
    pub async fn create_session_with(
        &self,
        token: &str,
        profile: &str,
        ttl_seconds: u32,
    ) -> Answer {
        let body = serde_json::json!({"profile": profile, "ttl_seconds": ttl_seconds});
        self.create_session_from(token, &body).await
    }

    /// `POST /v1/sessions` with any body.
    pub async fn create_session_from(&self, token: &str, body: &Value) -> Answer {
        self.call(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(token),
            Some(body),
        )
        .await
    }

    /// The events of `event_type` the caller may read (the first 1000), oldest first.
    pub async fn events(&self, token: &str, event_type: &str) -> Vec<Value> {
        let path = format!("/v1/events?event_type={event_type}&limit=1000");
        let answer = self.get(token, &path, "/v1/events").await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        answer.body["items"].as_array().cloned().unwrap_or_default()
    }

    /// `POST /v1/sessions` with `Prefer: respond-async`: answered once the session is placed.
    pub async fn create_session_async(&self, token: &str, body: &Value) -> Answer {
        self.call_with(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(token),
            Some(body),
            &[("prefer", "respond-async")],
        )
        .await
    }

    /// `POST /v1/sessions/{id}/attach`: a fresh attach answer for a running session.
    pub async fn reattach(&self, token: &str, id: &str) -> Answer {
        let path = format!("/v1/sessions/{id}/attach");
        self.call("POST", &path, "/v1/sessions/{id}/attach", Some(token), None)
            .await
    }

    /// A session's `status`.
    pub async fn session_status(&self, token: &str, id: &str) -> Value {
        let path = format!("/v1/sessions/{id}");
        self.call("GET", &path, "/v1/sessions/{id}", Some(token), None)
            .await
            .body["status"]
            .clone()
    }

    /// Polls a session until its status is `want`; panics with the last one after `within`.
    pub async fn wait_for_status(
        &self,
        token: &str,
        id: &str,
        want: &str,
        within: std::time::Duration,
    ) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self.session_status(token, id).await;
            if status == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "session {id} is {status}, not {want}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Sends a raw request (bodies the typed helpers would not make); not checked.
    pub fn raw(&self, method: &str, path: &str) -> reqwest::RequestBuilder {
        self.http.request(
            method.parse().expect("an HTTP method"),
            format!("{}{path}", self.base),
        )
    }
}
