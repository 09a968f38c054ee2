//! Edge gateways end to end, with the real binaries and real containers: a node serves the
//! PTY endpoint for its own sessions, so the user's keystrokes do not cross the coordinator.
//! Direct attach and the relay as fallback (in the API's answer and in `shell`), refusals at
//! the edge (another node's, another session's, expired and forged tokens), and the edge's
//! audit records reaching the coordinator's chain exactly once — also when they were made
//! while the node's link was cut and the agent restarted in between.

use std::time::{Duration, Instant};

use fogshell_e2e::api::Api;
use fogshell_e2e::stack::{NodeSpec, Stack};
use fogshell_e2e::ws::Viewer;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

fn events_of(body: &Value, event_type: &str) -> Vec<Value> {
    body["items"]
        .as_array()
        .expect("a page of events")
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .cloned()
        .collect()
}

/// The events of `event_type` recorded by `node`, once `done` holds for them (the edge's
/// records arrive with the node's next message).
async fn node_events(
    api: &Api,
    token: &str,
    event_type: &str,
    node: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let found: Vec<Value> = events_seen(api, token, event_type)
            .await
            .into_iter()
            .filter(|e| e["actor"]["node_id"] == node)
            .collect();
        if done(&found) || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn edge_node<'a>(node_id: &'a str, region: &'a str) -> NodeSpec<'a> {
    NodeSpec {
        region,
        gateway: true,
        ..NodeSpec::new(node_id)
    }
}

async fn create_in(api: &Api, token: &str, region: &str) -> Value {
    let created = api
        .create_session_from(
            token,
            &json!({"profile": "default", "ttl_seconds": 600,
                    "placement_hint": {"allowed_regions": [region]}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_attaches_at_its_nodes_gateway_and_the_relay_is_its_fallback() {
    let mut stack = Stack::coordinator_only(&[]);
    stack.add(&edge_node("fog-a", "eu-west"));
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let gateway = format!("ws://{}", stack.gateway("fog-a").addr);

    // The gateways a client can time: the relay first, then fog-a's own.
    let listed = api.get(&alice, "/v1/gateways", "/v1/gateways").await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    let items = listed.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{}", listed.body);
    assert_eq!(items[0]["kind"], "relay");
    assert_eq!(
        (items[1]["kind"].clone(), items[1]["node_id"].clone()),
        (json!("node"), json!("fog-a"))
    );
    assert_eq!(items[1]["ws_url"], gateway.as_str());
    for item in &items {
        let probe = reqwest::get(item["probe_url"].as_str().unwrap())
            .await
            .expect("a probe answers");
        assert_eq!(probe.status(), 204, "{item}");
        assert_eq!(
            probe.headers()["access-control-allow-origin"],
            "*",
            "a browser may time it"
        );
    }

    // Measured: fog-a's gateway is the user's best path.
    let created = api
        .create_session_from(
            &alice,
            &json!({"profile": "default", "ttl_seconds": 600,
                    "placement_hint": {"relay_rtt_ms": 40, "gateway_rtt_ms": {"fog-a": 5}}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let body = created.body;
    let id = body["session_id"].as_str().unwrap().to_owned();
    let reasons = body["placement"]["reasons"].as_array().unwrap();
    assert!(reasons.contains(&json!("USER_PATH_DIRECT")), "{reasons:?}");
    let pty = format!("/v1/sessions/{id}/pty");
    assert_eq!(body["attach"]["ws_url"], format!("{gateway}{pty}"));
    let relay = body["attach"]["fallback_ws_url"].as_str().unwrap();
    assert_eq!(
        relay,
        format!("{}{pty}", stack.api.replacen("http", "ws", 1))
    );

    // Straight to the node: same frames as the relay's.
    let mut direct = Viewer::attach(&body["attach"]).await;
    let running = direct.expect_status("running", WAIT).await;
    // The node does not restate the control plane's placement; the attach answer has it.
    assert!(running["placement"].is_null(), "{running}");
    direct.type_bytes(b"echo \"dir\"\"ect\"\n").await;
    direct.expect_output("direct", WAIT).await;

    // The same token opens the relay; both viewers share the terminal.
    let token = body["attach"]["token"].as_str().unwrap();
    let mut relayed = Viewer::connect(relay, token, 80, 24)
        .await
        .unwrap_or_else(|r| panic!("the relay refused: {} {}", r.status, r.body));
    relayed.expect_output("direct", WAIT).await;
    relayed.type_bytes(b"echo \"rel\"\"ayed\"\n").await;
    direct.expect_output("relayed", WAIT).await;

    // A browser opens terminals only from the console's pages: the coordinator's origin,
    // which fog-a learned in its welcome. Any other page is refused, with evidence.
    let ws_url = body["attach"]["ws_url"].as_str().unwrap();
    let console = stack.api.clone();
    Viewer::connect_from(&console, ws_url, token)
        .await
        .unwrap_or_else(|r| panic!("the console's page refused: {} {}", r.status, r.body));
    for (url, evidence) in [(ws_url, "edge:fog-a/"), (relay, "/v1/events/")] {
        let refused = Viewer::connect_from("https://evil.example", url, token)
            .await
            .err()
            .unwrap_or_else(|| panic!("{url} took a terminal from another page"));
        assert_eq!(refused.status, 403, "{}", refused.body);
        assert!(
            refused.body["evidence_pointer"]
                .as_str()
                .is_some_and(|p| p.starts_with(evidence)),
            "{}",
            refused.body
        );
    }
    let denied = node_events(&api, &alice, "policy.denied", "fog-a", |found| {
        !found.is_empty()
    })
    .await;
    assert_eq!(denied[0]["details"]["rule_id"], "pty.origin_refused");

    // The direct attach is in the coordinator's chain, once, recorded by the node.
    let attached = node_events(&api, &alice, "session.attached", "fog-a", |found| {
        found.len() >= 2
    })
    .await;
    assert_eq!(attached.len(), 2, "the two direct viewers: {attached:?}");
    assert_eq!(attached[0]["details"]["session_id"], id.as_str());
    assert_eq!(attached[0]["tenant"], "org-a");

    // The user's path to fog-a's gateway is cut: `shell` times the gateways, finds that one
    // unreachable, and is placed and attached through the relay — still on fog-a.
    stack.gateway("fog-a").cut();
    let started = Instant::now();
    let (stdout, stderr) = run_shell(
        &stack,
        &stack.api,
        &[],
        b"echo \"fall\"\"back\"; exit 3\n",
        3,
    );
    assert!(stdout.contains("fallback"), "{stdout}\n{stderr}");
    assert!(stderr.contains("on fog-a"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fell back in {:?}",
        started.elapsed()
    );
    let sessions = api.get(&alice, "/v1/sessions", "/v1/sessions").await;
    let latest = sessions.body["items"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let reasons = latest["placement"]["reasons"].as_array().unwrap();
    assert!(reasons.contains(&json!("USER_PATH_RELAYED")), "{latest}");
    stack.gateway("fog-a").restore();
    stack.verify_audit();
}

/// `Prefer: respond-async`: the API answers once the session is placed and recorded, while
/// the node starts it; the node's gateway and the relay hold a terminal attached meanwhile. A
/// session deleted while it starts is removed from the node once the start lands, and its
/// late viewers are told it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_once_placed_a_terminal_waits_at_the_gateway_for_its_shell() {
    // A loss bound that leaves fog-a's lease room over its 1 s round trip.
    let mut stack = Stack::coordinator_only(&["--node-lost-after", "6s"]);
    // Commands take half a second to reach fog-a: the user hears long before the shell runs.
    stack.add(&NodeSpec {
        delay: Some(Duration::from_millis(500)),
        ..edge_node("fog-a", "eu-west")
    });
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let body = json!({"profile": "default", "ttl_seconds": 600,
                      "placement_hint": {"relay_rtt_ms": 40, "gateway_rtt_ms": {"fog-a": 5}}});
    let create = || async {
        let created = api.create_session_async(&alice, &body).await;
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.header("preference-applied"), Some("respond-async"));
        created.body
    };

    // By default the answer waits for the shell: a command's round trip to fog-a at least.
    let started = Instant::now();
    let waited = api.create_session_from(&alice, &body).await;
    assert_eq!(waited.status, 201, "{}", waited.body);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(waited.header("preference-applied"), None);
    let id = waited.body["session_id"].as_str().unwrap();
    assert_eq!(api.session_status(&alice, id).await, "running");
    // fog-a has room for two sessions of the profile (a CPU each): make room.
    let delete = |id: String| {
        let (api, alice) = (&api, &alice);
        async move {
            let path = format!("/v1/sessions/{id}");
            let answer = api
                .call("DELETE", &path, "/v1/sessions/{id}", Some(alice), None)
                .await;
            assert_eq!(answer.status, 200, "{}", answer.body);
        }
    };
    delete(id.to_owned()).await;

    // Straight to fog-a's gateway: held with a `connecting` status until the shell runs.
    let direct = create().await;
    let id = direct["session_id"].as_str().unwrap().to_owned();
    assert_eq!(api.session_status(&alice, &id).await, "pending");
    let gateway = format!("ws://{}", stack.gateway("fog-a").addr);
    assert!(
        direct["attach"]["ws_url"]
            .as_str()
            .unwrap()
            .starts_with(&gateway),
        "{direct}"
    );
    let mut viewer = Viewer::attach(&direct["attach"]).await;
    let connecting = viewer.expect_status("connecting", WAIT).await;
    assert!(
        connecting["reason"]
            .as_str()
            .is_some_and(|r| r.contains("starting")),
        "{connecting}"
    );
    viewer.expect_status("running", WAIT).await;
    assert_eq!(
        viewer.frames[0], connecting,
        "told first: {:?}",
        viewer.frames
    );
    viewer.type_bytes(b"echo \"he\"\"ld\"\n").await;
    viewer.expect_output("held", WAIT).await;
    // The user may type before the coordinator hears that the shell runs: the node's answer
    // is still half a second away.
    api.wait_for_status(&alice, &id, "running", WAIT).await;
    delete(id).await;

    // Through the relay: held before the upgrade until the session runs.
    let relayed = create().await;
    let relay = relayed["attach"]["fallback_ws_url"].as_str().unwrap();
    let token = relayed["attach"]["token"].as_str().unwrap();
    let mut viewer = Viewer::connect(relay, token, 80, 24)
        .await
        .unwrap_or_else(|r| panic!("the relay refused: {} {}", r.status, r.body));
    viewer.expect_status("running", WAIT).await;
    viewer.type_bytes(b"echo \"rel\"\"ayed\"\n").await;
    viewer.expect_output("relayed", WAIT).await;

    // Deleted before its node ran it: the node's late start is removed again.
    let deleted = create().await;
    delete(deleted["session_id"].as_str().unwrap().to_owned()).await;
    let ws_url = deleted["attach"]["ws_url"].as_str().unwrap();
    let token = deleted["attach"]["token"].as_str().unwrap();
    let deadline = Instant::now() + WAIT;
    let refused = loop {
        match Viewer::connect(ws_url, token, 80, 24).await {
            Err(refused) if refused.status == 409 => break refused,
            // Held, or attached while the late start was still there: not yet.
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            other => panic!("fog-a still serves a deleted session: {other:?}"),
        }
    };
    assert!(
        refused.body["message"]
            .as_str()
            .is_some_and(|m| m.contains("ended")),
        "{}\n{}",
        refused.body,
        stack.logs()
    );
    stack.verify_audit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_serves_tls_with_a_certificate_from_the_coordinators_ca() {
    let mut stack = Stack::coordinator_only(&[]);
    stack.add(&NodeSpec {
        gateway_tls: true,
        ..edge_node("fog-a", "eu-west")
    });
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let listed = api.get(&alice, "/v1/gateways", "/v1/gateways").await;
    let gateway = &listed.body["items"][1];
    assert!(
        gateway["ws_url"].as_str().unwrap().starts_with("wss://"),
        "{gateway}"
    );
    // `shell`, trusting the coordinator's CA, reaches the gateway over TLS, directly.
    let ca = stack.data_dir().join("pki/ca.crt").display().to_string();
    // The user is 20 ms from the coordinator and next to fog-a.
    let far = far_from_the_coordinator(&stack);
    let api_url = format!("http://{}", far.addr);
    let (stdout, stderr) = run_shell(
        &stack,
        &api_url,
        &["--ca", &ca],
        b"echo \"t\"\"ls\"; exit 5\n",
        5,
    );
    assert!(stdout.contains("tls"), "{stdout}");
    assert!(
        !stderr.contains("continuing through the coordinator"),
        "{stderr}"
    );
    let attached = node_events(&api, &alice, "session.attached", "fog-a", |found| {
        !found.is_empty()
    })
    .await;
    assert_eq!(attached.len(), 1, "attached at the edge: {attached:?}");
}

/// Runs `fogshell-coordinator shell` as alice against the stack's API at `api` with `input` on its
/// stdin; asserts it exits with `code`; returns what it printed (stdout, stderr).
fn run_shell(
    stack: &Stack,
    api: &str,
    extra: &[&str],
    input: &[u8],
    code: i32,
) -> (String, String) {
    use std::io::Write as _;
    let token = stack.issuer.token("alice", "org-a");
    let mut shell = std::process::Command::new(fogshell_e2e::binary("fogshell-coordinator"))
        .args(["shell", "--url", api, "--token", &token])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting shell");
    shell.stdin.take().unwrap().write_all(input).unwrap();
    let out = shell.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "{stdout}\n{stderr}\n{}",
        stack.logs()
    );
    (stdout, stderr)
}

/// The user's path to the coordinator's API 20 ms long, so a probe on a busy machine cannot
/// make the relay look nearer than a node next door.
fn far_from_the_coordinator(stack: &Stack) -> fogshell_e2e::tcp_relay::TcpDelayRelay {
    fogshell_e2e::tcp_relay::TcpDelayRelay::start(
        stack
            .api
            .trim_start_matches("http://")
            .parse()
            .expect("the API's address"),
        Duration::from_millis(10),
    )
}

/// Collects what a child writes on a pipe, for a test to wait on.
fn collect(
    mut pipe: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<String>> {
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buffer[..n]));
        }
    });
    text
}

fn wait_for_text(text: &std::sync::Mutex<String>, needle: &str) {
    let deadline = Instant::now() + WAIT;
    while !text.lock().unwrap().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in {:?}",
            text.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_continues_through_the_relay_when_the_gateway_goes_away() {
    use std::io::Write as _;
    let mut stack = Stack::coordinator_only(&[]);
    stack.add(&edge_node("fog-a", "eu-west"));
    let alice = stack.issuer.token("alice", "org-a");
    // The user is 20 ms from the coordinator and next to fog-a: `shell` measures that and
    // goes to fog-a's gateway first.
    let far = far_from_the_coordinator(&stack);
    let api_url = format!("http://{}", far.addr);
    let mut shell = std::process::Command::new(fogshell_e2e::binary("fogshell-coordinator"))
        .args(["shell", "--url", &api_url, "--token", &alice])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting shell");
    let mut stdin = shell.stdin.take().unwrap();
    let stdout = collect(shell.stdout.take().unwrap());
    let stderr = collect(shell.stderr.take().unwrap());
    stdin.write_all(b"echo \"be\"\"fore\"\n").unwrap();
    wait_for_text(&stdout, "before");

    // The agent restarts: its gateway goes with it (the shell lives on in its shim). The
    // client moves to the relay, which reaches the same shell once the node is back.
    stack.restart_node("fog-a");
    // Said only by a client that was on the node's gateway.
    wait_for_text(&stderr, "continuing through the coordinator");
    // The relay may first reach the killed agent's link, which the coordinator has not yet
    // seen die; it says when the shell takes input again.
    wait_for_text(&stderr, "session Running");
    stdin.write_all(b"echo \"af\"\"ter\"; exit 4\n").unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = shell.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = shell.kill();
            panic!(
                "shell did not exit\n{}\n{}\n{}",
                stdout.lock().unwrap(),
                stderr.lock().unwrap(),
                stack.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        stdout.lock().unwrap().clone(),
        stderr.lock().unwrap().clone(),
    );
    assert_eq!(status.code(), Some(4), "{out}\n{err}\n{}", stack.logs());
    assert!(out.contains("after"), "{out}");
    assert_eq!(out.matches("before").count(), 1, "nothing repeated: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_refuses_other_nodes_other_sessions_expired_and_forged_tokens() {
    const TTL: Duration = Duration::from_secs(8);
    let mut stack = Stack::coordinator_only(&["--attach-token-ttl", "8s"]);
    // fog-a's link to the coordinator goes through a relay the test cuts: its gateway keeps
    // checking tokens offline and keeps what it records until the link is back.
    stack.add(&NodeSpec {
        delay: Some(Duration::ZERO),
        ..edge_node("fog-a", "eu-west")
    });
    stack.add(&edge_node("fog-b", "us-east"));
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");

    let a = create_in(&api, &alice, "eu-west").await;
    let a2 = create_in(&api, &alice, "eu-west").await;
    let b = create_in(&api, &alice, "us-east").await;
    // Every token above has expired by then.
    let all_expired = Instant::now() + TTL + Duration::from_millis(500);
    assert_eq!(a["placement"]["node_id"], "fog-a");
    assert_eq!(b["placement"]["node_id"], "fog-b");
    let token = |s: &Value| s["attach"]["token"].as_str().unwrap().to_owned();
    let id = |s: &Value| s["session_id"].as_str().unwrap().to_owned();
    let fog_a_gateway = stack.gateway("fog-a").addr;
    let at_fog_a = |session: &str| format!("ws://{fog_a_gateway}/v1/sessions/{session}/pty");

    let refused = |url: String, token: String| async move {
        match Viewer::connect(&url, &token, 80, 24).await {
            Ok(_) => panic!("{url} took a token it must refuse"),
            Err(refused) => refused,
        }
    };
    let expect = |refused: fogshell_e2e::ws::Refused, rule: &str| {
        assert_eq!(refused.status, 401, "{rule}: {}", refused.body);
        assert_eq!(refused.body["code"], "ECS_UNAUTHENTICATED", "{rule}");
        assert!(
            refused.body["evidence_pointer"]
                .as_str()
                .is_some_and(|p| p.starts_with("edge:fog-a/")),
            "{rule}: {}",
            refused.body
        );
        assert!(
            refused.body["message"].as_str().is_some(),
            "{}",
            refused.body
        );
    };

    // Another node's session, with its own valid token.
    expect(refused(at_fog_a(&id(&b)), token(&b)).await, "wrong node");
    // Another session's token.
    expect(
        refused(at_fog_a(&id(&a2)), token(&a)).await,
        "wrong session",
    );
    // A forged signature.
    let mut forged = token(&a);
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    expect(refused(at_fog_a(&id(&a)), forged).await, "forged");
    // The right token, at the right node, opens it.
    let mut viewer = Viewer::connect(&at_fog_a(&id(&a)), &token(&a), 80, 24)
        .await
        .unwrap_or_else(|r| panic!("refused: {} {}", r.status, r.body));
    viewer.expect_status("running", WAIT).await;
    drop(viewer);
    // An attach token is no API credential, at the coordinator either.
    let as_bearer = api.get(&token(&a), "/v1/sessions", "/v1/sessions").await;
    assert_eq!(as_bearer.status, 401, "{}", as_bearer.body);

    // With fog-a cut off from the coordinator (and its agent restarted meanwhile), the
    // gateway still checks tokens — expired now — and keeps the refusal for later.
    stack.relay("fog-a").expect("fog-a's link relay").cut();
    tokio::time::sleep_until(all_expired.into()).await;
    expect(refused(at_fog_a(&id(&a)), token(&a)).await, "expired");
    stack.restart_node_unlinked("fog-a");
    expect(
        refused(at_fog_a(&id(&a2)), token(&a2)).await,
        "expired, after a restart",
    );
    stack.relay("fog-a").expect("fog-a's link relay").restore();

    let rules = [
        "auth.attach_token_wrong_node",
        "auth.attach_token_wrong_session",
        "auth.attach_token_invalid",
        "auth.attach_token_expired",
        "auth.attach_token_expired",
    ];
    let denied = node_events(&api, &alice, "policy.denied", "fog-a", |found| {
        found.len() >= rules.len()
    })
    .await;
    let got: Vec<&str> = denied
        .iter()
        .map(|e| e["details"]["rule_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        got,
        rules,
        "each refusal once, in the node's order\n{}",
        stack.logs()
    );
    for event in &denied {
        assert_eq!(event["outcome"], "denied");
        assert_eq!(event["tenant"], "org-a");
    }
    // Nothing arrives twice later (a resend after the restart is skipped).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = node_events(&api, &alice, "policy.denied", "fog-a", |_| true).await;
    assert_eq!(again.len(), rules.len(), "{again:?}");

    // A flood of forged tokens is refused every time, but recorded one by one only within
    // the address's budget (30 at once): the rest are counted and point at a record.
    for n in 0..60 {
        let refusal = refused(at_fog_a(&id(&a)), format!("fsa2.forged{n}.sig")).await;
        assert_eq!(refusal.status, 401, "{}", refusal.body);
        assert!(
            refusal.body["evidence_pointer"]
                .as_str()
                .is_some_and(|p| p.starts_with("edge:fog-a/")),
            "{}",
            refusal.body
        );
    }
    let flood = node_events(&api, &alice, "policy.denied", "fog-a", |found| {
        found.len() >= rules.len() + 25
    })
    .await;
    let recorded = flood.len() - rules.len();
    assert!(
        (25..=32).contains(&recorded),
        "{recorded} records for 60 refusals"
    );
    stack.verify_audit();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_uplink_keeps_the_direct_terminal_for_the_lease_then_fences_before_the_cloud_copy() {
    let mut stack = Stack::coordinator_only(&[]);
    // fog-a's link to the coordinator crosses a relay the test cuts; the user's path to
    // fog-a's gateway stays up.
    stack.add(&NodeSpec {
        delay: Some(Duration::ZERO),
        ..edge_node("fog-a", "eu-west")
    });
    stack.add(&NodeSpec {
        tier: "cloud",
        region: "cloud",
        ..NodeSpec::new("cloud-1")
    });
    let api = Api::new(&stack.api).await;
    let alice = stack.issuer.token("alice", "org-a");
    let created = create_in_any(&api, &alice).await;
    assert_eq!(created["placement"]["node_id"], "fog-a", "{created}");
    let id = created["session_id"].as_str().unwrap().to_owned();
    let mut direct = Viewer::attach(&created["attach"]).await;
    direct.expect_status("running", WAIT).await;
    direct.type_bytes(b"echo \"be\"\"fore\"\n").await;
    direct.expect_output("before", WAIT).await;

    // Cut: the direct terminal keeps working while the node's lease holds...
    let cut = Instant::now();
    stack.relay("fog-a").expect("fog-a's link relay").cut();
    direct.type_bytes(b"echo \"dur\"\"ing\"\n").await;
    direct
        .expect_output("during", Duration::from_millis(900))
        .await;
    assert!(
        cut.elapsed() < Duration::from_millis(1000),
        "typed and echoed within the lease"
    );
    // ...then the node fences itself and sends the viewer to the relay, before the loss bound
    // (2 s) at which the coordinator may start a copy in the cloud.
    let interrupted = direct.expect_status("interrupted", WAIT).await;
    let fenced_after = cut.elapsed();
    let fenced_at = std::time::SystemTime::now();
    assert!(
        interrupted["reason"]
            .as_str()
            .is_some_and(|r| r.contains("lease")),
        "{interrupted}"
    );
    assert_eq!(
        direct.expect_close(WAIT).await,
        1001,
        "going away: use the relay"
    );
    assert!(
        fenced_after < Duration::from_secs(2),
        "fenced {fenced_after:?} after the cut: not before the loss bound"
    );
    // While fenced, the gateway takes no new viewer, and still records refusals.
    let token = created["attach"]["token"].as_str().unwrap();
    let ws_url = created["attach"]["ws_url"].as_str().unwrap();
    match Viewer::connect(ws_url, token, 80, 24).await {
        Ok(_) => panic!("a fenced gateway took a viewer"),
        Err(refused) => assert_eq!(refused.status, 503, "{}", refused.body),
    }
    let mut forged = token.to_owned();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let refused = Viewer::connect(ws_url, &forged, 80, 24)
        .await
        .err()
        .unwrap();
    assert_eq!(refused.status, 401, "{}", refused.body);

    // The client moves to the relay, where failover started the cloud copy.
    let deadline = Instant::now() + WAIT;
    loop {
        let now = api
            .get(&alice, &format!("/v1/sessions/{id}"), "/v1/sessions/{id}")
            .await;
        if now.body["placement"]["node_id"] == "cloud-1" && now.body["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "no failover: {}", now.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fresh = api.reattach(&alice, &id).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert!(
        fresh.body["fallback_ws_url"].is_null(),
        "cloud-1 has no gateway: the relay is the way"
    );
    let mut relayed = Viewer::attach(&fresh.body).await;
    relayed.type_bytes(b"echo \"clo\"\"ud\"\n").await;
    relayed.expect_output("cloud", WAIT).await;

    // Never two copies taking input: the cloud copy started after the node had fenced.
    let failovers = events_seen(&api, &alice, "failover.started").await;
    let started_at = failovers
        .iter()
        .find(|e| e["details"]["session_id"] == id.as_str())
        .and_then(|e| e["at"].as_str())
        .unwrap_or_else(|| panic!("no failover.started for {id}: {failovers:?}"));
    let started_at =
        time::OffsetDateTime::parse(started_at, &time::format_description::well_known::Rfc3339)
            .expect("an RFC 3339 time");
    let fenced_at = time::OffsetDateTime::from(fenced_at);
    assert!(
        started_at >= fenced_at - Duration::from_millis(100),
        "the cloud copy started at {started_at}, the node fenced at {fenced_at}"
    );

    // The link comes back: the old copy is removed, and what the gateway recorded while cut
    // off is in the chain, once.
    stack.relay("fog-a").expect("fog-a's link relay").restore();
    let denied = node_events(&api, &alice, "policy.denied", "fog-a", |found| {
        !found.is_empty()
    })
    .await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["details"]["rule_id"], "auth.attach_token_invalid");
    let attached = node_events(&api, &alice, "session.attached", "fog-a", |_| true).await;
    assert_eq!(attached.len(), 1, "{attached:?}");
    stack.verify_audit();
}

async fn create_in_any(api: &Api, token: &str) -> Value {
    let created = api.create_session(token, 600).await;
    assert_eq!(created.status, 201, "{}", created.body);
    created.body
}

/// Every event of `event_type` the caller may see.
async fn events_seen(api: &Api, token: &str, event_type: &str) -> Vec<Value> {
    let page = api
        .get(
            token,
            &format!("/v1/events?event_type={event_type}&limit=1000"),
            "/v1/events",
        )
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    events_of(&page.body, event_type)
}
