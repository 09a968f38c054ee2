//! Who may do what, end to end: every token attack on the API and the terminal is refused
//! with 401 and recorded as `policy.denied` with its rule; tenants are invisible to each
//! other; scopes, pinned images, bodies and rate limits are enforced; issuer keys rotate
//! without a restart.

use std::time::Duration;

use base64::Engine as _;
use fogshell_e2e::api::{Answer, Api};
use fogshell_e2e::issuer::Issuer;
use fogshell_e2e::stack::Stack;
use fogshell_e2e::ws::Viewer;
use serde_json::{Value, json};

/// Checks a refusal: its status and code, and that its evidence pointer names a
/// `policy.denied` event with `rule`.
async fn assert_refused(
    api: &Api,
    admin: &str,
    answer: &Answer,
    status: u16,
    code: &str,
    rule: &str,
) {
    assert_eq!(
        (answer.status, answer.body["code"].as_str()),
        (status, Some(code)),
        "{}",
        answer.body
    );
    let pointer = answer.body["evidence_pointer"]
        .as_str()
        .unwrap_or_else(|| panic!("no evidence: {}", answer.body));
    let event = api.get(admin, pointer, "/v1/events/{id}").await;
    assert_eq!(event.status, 200, "{pointer}: {}", event.body);
    assert_eq!(event.body["event_type"], "policy.denied");
    assert_eq!(event.body["outcome"], "denied");
    assert_eq!(event.body["details"]["rule_id"], rule, "{}", event.body);
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_token_attack_is_refused_and_recorded() {
    let stack = Stack::start();
    let api = Api::new(&stack.api).await;
    let issuer = &stack.issuer;
    let admin = issuer.token("admin", "ops");
    let all = "fogshell.sessions fogshell.audit";

    // Good tokens of each allowed algorithm work.
    for key in &issuer.keys {
        let token = Issuer::sign(key, &issuer.claims("alice", "org-a", all));
        let answer = api.get(&token, "/v1/sessions", "/v1/sessions").await;
        assert_eq!(answer.status, 200, "{:?}: {}", key.alg, answer.body);
    }

    let mut expired = issuer.claims("alice", "org-a", all);
    expired["exp"] = json!(now() - 120);
    expired["nbf"] = json!(now() - 600);
    let mut early = issuer.claims("alice", "org-a", all);
    early["nbf"] = json!(now() + 600);
    let mut from_the_future = issuer.claims("alice", "org-a", all);
    from_the_future["iat"] = json!(now() + 600);
    let mut ten_years = issuer.claims("alice", "org-a", all);
    ten_years["exp"] = json!(now() + 10 * 365 * 24 * 3600);
    let mut wrong_aud = issuer.claims("alice", "org-a", all);
    wrong_aud["aud"] = json!("someone-else");
    let mut wrong_iss = issuer.claims("alice", "org-a", all);
    wrong_iss["iss"] = json!("http://127.0.0.1:9");
    let good = issuer.claims("alice", "org-a", all);
    let tampered = {
        let token = Issuer::sign(&issuer.keys[1], &good);
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims = good.clone();
        claims["tenant"] = json!("org-b");
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{}.{payload}.{}", parts[0], parts[2])
    };
    let attacks: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "auth.missing_token"),
        (
            "expired",
            Some(Issuer::sign(&issuer.keys[0], &expired)),
            "auth.token_expired",
        ),
        (
            "not yet valid",
            Some(Issuer::sign(&issuer.keys[0], &early)),
            "auth.token_not_yet_valid",
        ),
        (
            "issued in the future",
            Some(Issuer::sign(&issuer.keys[0], &from_the_future)),
            "auth.token_issued_in_future",
        ),
        (
            "valid for ten years",
            Some(Issuer::sign(&issuer.keys[1], &ten_years)),
            "auth.token_lifetime_too_long",
        ),
        (
            "wrong audience",
            Some(Issuer::sign(&issuer.keys[0], &wrong_aud)),
            "auth.wrong_audience",
        ),
        (
            "wrong issuer",
            Some(Issuer::sign(&issuer.keys[2], &wrong_iss)),
            "auth.wrong_issuer",
        ),
        (
            "alg none",
            Some(issuer.alg_none(&good)),
            "auth.malformed_token",
        ),
        (
            "HS256 keyed with the RSA public key",
            Some(issuer.hs256_with_public_key(&good)),
            "auth.algorithm_not_allowed",
        ),
        (
            "unknown kid",
            Some(Issuer::sign(&issuer.unpublished, &good)),
            "auth.unknown_key",
        ),
        ("tampered claims", Some(tampered), "auth.bad_signature"),
        ("garbage", Some("not.a.jwt".into()), "auth.malformed_token"),
    ];
    for (name, token, rule) in &attacks {
        let answer = api
            .call(
                "GET",
                "/v1/sessions",
                "/v1/sessions",
                token.as_deref(),
                None,
            )
            .await;
        assert_eq!(
            answer.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{name}"
        );
        assert_refused(&api, &admin, &answer, 401, "ECS_UNAUTHENTICATED", rule).await;
    }

    // An attach token opens one terminal and nothing else.
    let alice = issuer.token("alice", "org-a");
    let body = json!({"profile": "default", "ttl_seconds": 600});
    let first = api
        .call(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(&alice),
            Some(&body),
        )
        .await;
    assert_eq!(first.status, 201, "{}\n{}", first.body, stack.logs());
    let attach_token = first.body["attach"]["token"].as_str().unwrap().to_owned();
    for (method, payload) in [("GET", None), ("POST", Some(&body))] {
        let answer = api
            .call(
                method,
                "/v1/sessions",
                "/v1/sessions",
                Some(&attach_token),
                payload,
            )
            .await;
        assert_refused(
            &api,
            &admin,
            &answer,
            401,
            "ECS_UNAUTHENTICATED",
            "auth.attach_token_as_bearer",
        )
        .await;
    }
    let second = api
        .call(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(&alice),
            Some(&body),
        )
        .await
        .body;
    let refused = Viewer::connect(
        second["attach"]["ws_url"].as_str().unwrap(),
        &attach_token,
        80,
        24,
    )
    .await
    .expect_err("another session's token does not open this one");
    assert_eq!(refused.status, 401);
    assert_eq!(refused.body["code"], "ECS_UNAUTHENTICATED");
    let forged = Viewer::connect(
        second["attach"]["ws_url"].as_str().unwrap(),
        "fsa1.e30.AAAA",
        80,
        24,
    )
    .await
    .expect_err("a forged token");
    assert_eq!(forged.status, 401);
    let event = api
        .get(
            &admin,
            refused.body["evidence_pointer"].as_str().unwrap(),
            "/v1/events/{id}",
        )
        .await;
    assert_eq!(
        event.body["details"]["rule_id"],
        "auth.attach_token_wrong_session"
    );
    // A fresh token for a live session (reconnects) works, and only for that session.
    let id = first.body["session_id"].as_str().unwrap();
    let renewed = api.reattach(&alice, id).await;
    assert_eq!(renewed.status, 200);
    let mut viewer = Viewer::attach(&renewed.body).await;
    viewer.expect_frame("status", Duration::from_secs(20)).await;

    // Another tenant sees nothing of alice's: not found, never forbidden.
    let bob = Issuer::sign(&issuer.keys[1], &issuer.claims("bob", "org-b", all));
    let path = format!("/v1/sessions/{id}");
    for (method, doc) in [
        ("GET", "/v1/sessions/{id}"),
        ("DELETE", "/v1/sessions/{id}"),
    ] {
        let answer = api.call(method, &path, doc, Some(&bob), None).await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (404, Some("ECS_NOT_FOUND")),
            "{method}"
        );
    }
    let answer = api.reattach(&bob, id).await;
    assert_eq!(answer.status, 404);
    let listed = api.get(&bob, "/v1/sessions", "/v1/sessions").await;
    assert_eq!(listed.body["items"], json!([]));
    let bobs_events = api.get(&bob, "/v1/events", "/v1/events").await.body;
    assert!(
        bobs_events["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == "org-b"),
        "{bobs_events}"
    );
    let peek = api
        .call(
            "GET",
            "/v1/events?tenant=org-a",
            "/v1/events",
            Some(&Issuer::sign(
                &issuer.keys[0],
                &issuer.claims("bob", "org-b", "fogshell.audit"),
            )),
            None,
        )
        .await;
    assert_refused(
        &api,
        &admin,
        &peek,
        403,
        "ECS_FORBIDDEN",
        "audit.other_tenant",
    )
    .await;
    // A wrong method gets the API's error body too, and the methods it could have used.
    let patched = api
        .raw("PATCH", "/v1/sessions")
        .bearer_auth(&alice)
        .send()
        .await
        .expect("an answer");
    assert_eq!(patched.status(), 405);
    let allow = patched.headers()["allow"].to_str().unwrap().to_owned();
    assert!(allow.contains("POST") && allow.contains("GET"), "{allow}");
    let wrong_method: Value = patched.json().await.expect("a JSON body");
    assert_eq!(
        wrong_method["code"], "ECS_METHOD_NOT_ALLOWED",
        "{wrong_method}"
    );
    // Lists answered whole refuse paging rather than ignore it.
    for (path, doc) in [
        ("/v1/nodes?limit=5", "/v1/nodes"),
        ("/v1/profiles?cursor=1", "/v1/profiles"),
        ("/v1/gateways?limit=1", "/v1/gateways"),
    ] {
        let answer = api.get(&admin, path, doc).await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (400, Some("ECS_INVALID_REQUEST")),
            "{path}: {}",
            answer.body
        );
    }
    assert_eq!(
        api.get(&alice, &path, "/v1/sessions/{id}").await.body["status"],
        "running"
    );

    // Scopes.
    let audit_only = Issuer::sign(
        &issuer.keys[0],
        &issuer.claims("carol", "org-a", "fogshell.audit"),
    );
    let answer = api
        .call(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(&audit_only),
            Some(&body),
        )
        .await;
    assert_refused(
        &api,
        &admin,
        &answer,
        403,
        "ECS_FORBIDDEN",
        "auth.missing_scope",
    )
    .await;
    let not_admin = Issuer::sign(&issuer.keys[2], &issuer.claims("alice", "org-a", all));
    let answer = api.get(&not_admin, "/v1/nodes", "/v1/nodes").await;
    assert_refused(
        &api,
        &admin,
        &answer,
        403,
        "ECS_FORBIDDEN",
        "auth.missing_scope",
    )
    .await;

    // Images must be pinned; profiles must exist.
    let tagged = json!({"profile": "default", "ttl_seconds": 600, "image_ref": "registry.test/shell:latest"});
    let answer = api
        .call(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(&alice),
            Some(&tagged),
        )
        .await;
    assert_refused(
        &api,
        &admin,
        &answer,
        422,
        "ECS_IMAGE_NOT_PINNED",
        "image.unpinned",
    )
    .await;
    let unknown = json!({"profile": "gpu-monster", "ttl_seconds": 600});
    let answer = api
        .call(
            "POST",
            "/v1/sessions",
            "/v1/sessions",
            Some(&alice),
            Some(&unknown),
        )
        .await;
    assert_refused(
        &api,
        &admin,
        &answer,
        422,
        "ECS_UNKNOWN_PROFILE",
        "profile.unknown",
    )
    .await;

    // Bad bodies get the error body with the right status.
    let post = |body: reqwest::Body, content_type: &str| {
        api.raw("POST", "/v1/sessions")
            .bearer_auth(&alice)
            .header("content-type", content_type)
            .body(body)
    };
    let bad_bodies = [
        ("{}", "text/plain", 415),
        ("{not json", "application/json", 400),
        (r#"{"profile":"default","ttl":60}"#, "application/json", 400),
        (
            r#"{"profile":"default","ttl_seconds":5}"#,
            "application/json",
            400,
        ),
    ];
    for (body, content_type, want) in bad_bodies {
        let answer = post(body.into(), content_type).send().await.unwrap();
        assert_eq!(answer.status().as_u16(), want, "{body} as {content_type}");
    }
    let huge = format!(r#"{{"profile":"{}"}}"#, "a".repeat(100_000));
    let answer = post(huge.into(), "application/json").send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 413);
    let error: Value = answer.json().await.unwrap();
    assert_eq!(error["code"], "ECS_PAYLOAD_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_keys_rotate_without_a_restart() {
    let stack = Stack::coordinator_only(&[]);
    let api = Api::new(&stack.api).await;
    let issuer = &stack.issuer;
    // The coordinator fetched the keys at start; a token with a new key is refused until the
    // issuer publishes it, then accepted once the refetch interval allows another fetch.
    let claims = issuer.claims("alice", "org-a", "fogshell.sessions");
    let rotated = Issuer::sign(&issuer.unpublished, &claims);
    let answer = api.get(&rotated, "/v1/sessions", "/v1/sessions").await;
    assert_eq!(answer.status, 401);
    issuer.publish(&issuer.unpublished);
    let deadline = std::time::Instant::now() + Duration::from_secs(25);
    loop {
        let answer = api.get(&rotated, "/v1/sessions", "/v1/sessions").await;
        if answer.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new key was never fetched: {}",
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_gets_429_and_others_do_not() {
    let stack = Stack::coordinator_only(&["--rate-burst", "3", "--rate-per-second", "0.2"]);
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let answer = api.get(&alice, "/v1/sessions", "/v1/sessions").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-ratelimit-limit"), Some("3"));
        remaining.push(answer.header("x-ratelimit-remaining").unwrap().to_owned());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let limited = api.get(&alice, "/v1/sessions", "/v1/sessions").await;
    assert_eq!(
        (limited.status, limited.body["code"].as_str()),
        (429, Some("ECS_RATE_LIMITED"))
    );
    let retry: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry), "{retry}");
    assert_eq!(limited.header("x-ratelimit-remaining"), Some("0"));
    let bob = stack.issuer.token("bob", "org-b");
    assert_eq!(
        api.get(&bob, "/v1/sessions", "/v1/sessions").await.status,
        200
    );
}

/// A flood of garbage tokens is refused every time, but recorded one by one only within the
/// address's budget (30 at once, one a second after): past it each refusal is counted and
/// points at the last record, and the count reaches the chain with the next record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_tokens_is_counted_not_written_one_by_one() {
    let stack = Stack::coordinator_only(&[]);
    let api = Api::new(&stack.api).await;
    let admin = stack.issuer.token("admin", "ops");
    let mut pointers = Vec::new();
    for n in 0..100 {
        let answer = api
            .raw("GET", "/v1/sessions")
            .bearer_auth(format!("garbage.{n}.token"))
            .send()
            .await
            .expect("an answer");
        assert_eq!(answer.status(), 401);
        let body: Value = answer.json().await.expect("the API's body");
        assert_eq!(body["code"], "ECS_UNAUTHENTICATED", "{body}");
        pointers.push(
            body["evidence_pointer"]
                .as_str()
                .expect("evidence")
                .to_owned(),
        );
    }
    let recorded = || async {
        api.events(&admin, "policy.denied")
            .await
            .into_iter()
            .filter(|e| e["details"]["rule_id"] == "auth.malformed_token")
            .collect::<Vec<Value>>()
    };
    let records = recorded().await;
    assert!(
        (30..=40).contains(&records.len()),
        "{} records for 100 refusals",
        records.len()
    );
    // Every refusal points at a record that exists.
    let distinct: std::collections::BTreeSet<&String> = pointers.iter().collect();
    assert_eq!(distinct.len(), records.len());
    let last = api
        .get(&admin, pointers.last().unwrap(), "/v1/events/{id}")
        .await;
    assert_eq!(last.status, 200, "{}", last.body);

    // Once the budget refills, the next record carries the count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let answer = api
        .raw("GET", "/v1/sessions")
        .bearer_auth("garbage.again")
        .send()
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 401);
    let records = recorded().await;
    let reason = records.last().unwrap()["details"]["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    let counted = 100 - distinct.len();
    assert!(
        reason.contains(&format!("and {counted} more refusals from 127.0.0.1")),
        "{reason}"
    );

    // Forged attach tokens at the relay draw on the same budget: refused, counted, and
    // pointing at a record that exists.
    let before = api.events(&admin, "policy.denied").await.len();
    let relay = stack.api.replacen("http", "ws", 1);
    let session = "00000000-0000-4000-8000-000000000000";
    for n in 0..50 {
        let refused = fogshell_e2e::ws::Viewer::connect(
            &format!("{relay}/v1/sessions/{session}/pty"),
            &format!("fsa2.forged{n}.sig"),
            80,
            24,
        )
        .await
        .expect_err("a forged attach token is refused");
        assert_eq!(refused.status, 401, "{}", refused.body);
        let pointer = refused.body["evidence_pointer"].as_str().expect("evidence");
        assert_eq!(
            api.get(&admin, pointer, "/v1/events/{id}").await.status,
            200
        );
    }
    let after = api.events(&admin, "policy.denied").await.len();
    assert!(
        after - before <= 3,
        "{} records for 50 refusals",
        after - before
    );
}
