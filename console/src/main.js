// fogshell's browser console. Logs in with the coordinator's OIDC issuer (authorization code
// + PKCE, through oidc-client-ts), keeps the access token in memory only, creates and lists
// the user's sessions, and attaches an xterm.js terminal over the coordinator's WebSocket
// frames ({"type":"stdin"|"resize"} up, {"type":"stdout"|"status"|"exit"|"error"} down).
import { InMemoryWebStorage, UserManager, WebStorageStateStore } from "oidc-client-ts";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import "./style.css";

const $ = (id) => document.getElementById(id);
const consoleUrl = new URL("/console/", location.origin).href;

// ---------------------------------------------------------------------------------------
// Bytes ↔ base64 (the frames carry terminal bytes base64-encoded).

const encoder = new TextEncoder();

function bytesToBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// The claims of a JWT access token, for showing who is logged in (never for trusting).
function claimsOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(new TextDecoder().decode(base64ToBytes(payload)));
  } catch {
    return {};
  }
}

// ---------------------------------------------------------------------------------------
// Login.

let manager;
let user = null;

class LoginNeeded extends Error {}

async function setUpLogin() {
  const config = await (await fetch("/v1/auth/config")).json();
  manager = new UserManager({
    authority: config.issuer,
    client_id: config.client_id,
    redirect_uri: consoleUrl,
    post_logout_redirect_uri: consoleUrl,
    response_type: "code",
    scope: config.scope,
    // Tokens live in this page's memory only; only the PKCE state of a login in flight
    // waits in this tab's sessionStorage for the redirect back.
    userStore: new WebStorageStateStore({ store: new InMemoryWebStorage() }),
    stateStore: new WebStorageStateStore({ store: window.sessionStorage }),
    loadUserInfo: false,
    automaticSilentRenew: false,
    monitorSession: false,
  });
  manager.events.addAccessTokenExpiring(async () => {
    if (!user?.refresh_token) return;
    try {
      user = await manager.signinSilent();
    } catch {
      // Asked again when it expires.
    }
  });
  manager.events.addAccessTokenExpired(() => showLogin("Your login expired. Log in again to go on."));
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) {
    try {
      user = await manager.signinRedirectCallback();
    } catch (error) {
      showLogin(`The login did not complete: ${error.message}`);
      history.replaceState(null, "", consoleUrl);
      return;
    }
    history.replaceState(null, "", consoleUrl);
  } else {
    user = await manager.getUser();
  }
  if (user && !user.expired) {
    await showApp();
  } else {
    showLogin("");
  }
}

function showLogin(reason) {
  user = null;
  terminalView?.detach();
  $("app-view").hidden = true;
  $("logout").hidden = true;
  $("who").textContent = "";
  $("login-reason").textContent = reason;
  $("login-view").hidden = false;
  $("login").focus();
}

async function logIn() {
  await manager.signinRedirect();
}

async function logOut() {
  terminalView?.detach();
  const metadata = await manager.metadataService.getMetadata().catch(() => ({}));
  if (metadata.end_session_endpoint) {
    await manager.signoutRedirect();
    return;
  }
  await manager.removeUser();
  showLogin("You are logged out.");
}

// ---------------------------------------------------------------------------------------
// The API.

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.code;
  }
}

async function api(method, path, body, headers = {}) {
  if (!user || user.expired) throw new LoginNeeded();
  const response = await fetch(path, {
    method,
    headers: {
      authorization: `Bearer ${user.access_token}`,
      ...(body ? { "content-type": "application/json" } : {}),
      ...headers,
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (response.status === 401) {
    showLogin("Your login is no longer accepted. Log in again.");
    throw new LoginNeeded();
  }
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

// Runs an action started from the UI; errors end up in the status line, not the console.
function guarded(action) {
  return async (...args) => {
    try {
      await action(...args);
    } catch (error) {
      if (!(error instanceof LoginNeeded)) setStatus("error", error.message);
    }
  };
}

// ---------------------------------------------------------------------------------------
// Status line and placement.

function describe(placement) {
  return placement ? `${placement.node_id} (${placement.region}, ${placement.trust_tier})` : "its node";
}

function setStatus(state, text) {
  const status = $("status");
  status.dataset.state = state;
  status.textContent = text;
}

function showPlacement(placement) {
  if (!placement) return;
  $("placement").hidden = false;
  $("placement-node").textContent = placement.node_id;
  $("placement-region").textContent = placement.region;
  $("placement-tier").textContent = placement.trust_tier;
  $("placement-reasons").textContent = placement.reasons.join(", ");
}

function statusText(frame) {
  const where = describe(frame.placement);
  const why = frame.reason ? `: ${frame.reason}` : "";
  switch (frame.state) {
    case "connecting":
      return frame.reason ? `Starting: ${frame.reason}…` : `Connecting to ${where}…`;
    case "running":
      return `Connected to ${where}.`;
    case "interrupted":
      return `Interrupted${why}. Waiting for the session to come back…`;
    case "resuming":
      return `Resuming on ${where}${why}…`;
    case "resumed":
      return `Resumed on ${where}. This is a new shell: what ran before is gone.`;
    case "failed":
      return `The session failed${why}.`;
    default:
      return `${frame.state}${why}`;
  }
}

// ---------------------------------------------------------------------------------------
// The terminal.

// The same numbers as the Rust clients' (fogshell_shared::frame::ACK_EVERY and
// fogshell_shared::ctrl_c::HOLD_AT_MOST). Acknowledge drawn output every this many bytes (the
// node lets the shell run 128 KiB ahead)…
const ACK_EVERY = 16 * 1024;
// …and hold output after a Ctrl-C for the gateway's `flush` answer this long at most.
const CTRL_C_HOLD_MS = 1000;

class TerminalView {
  constructor(element) {
    this.term = new Terminal({
      cursorBlink: true,
      fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace",
      fontSize: 14,
      scrollback: 5000,
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(element);
    this.term.onData((data) => this.sendInput(encoder.encode(data)));
    this.term.onBinary((data) => this.sendInput(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
    this.term.onResize(({ cols, rows }) => this.send({ type: "resize", cols, rows }));
    this.term.attachCustomKeyEventHandler((event) => this.shortcut(event));
    new ResizeObserver(() => this.fit.fit()).observe(element);
    this.sessionId = null;
    this.ws = null;
    // Where the next output byte sits in the shell's output (from `running` frames), so a
    // reconnect asks for exactly what it missed.
    this.offset = null;
    // Output bytes dropped as stale after Ctrl-Cs (also on the terminal as `data-dropped`).
    this.dropped = 0;
  }

  // Ctrl+Shift+C copies, Ctrl+Shift+V pastes, Ctrl+Shift+E leaves the terminal.
  shortcut(event) {
    if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
    switch (event.code) {
      case "KeyC":
        if (this.term.hasSelection()) navigator.clipboard.writeText(this.term.getSelection());
        return false;
      case "KeyV":
        navigator.clipboard.readText().then((text) => this.term.paste(text));
        return false;
      case "KeyE":
        $("refresh").focus();
        return false;
      default:
        return true;
    }
  }

  send(frame) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  sendInput(bytes) {
    if (this.ws?.readyState !== WebSocket.OPEN) return;
    this.hold?.sent(bytes);
    this.send({ type: "stdin", data_b64: bytesToBase64(bytes) });
  }

  attach(sessionId, attach, placement) {
    this.detach();
    this.sessionId = sessionId;
    this.finished = false;
    this.retries = 0;
    this.offset = null;
    // Once the node's own gateway failed this session, its terminal goes through the relay.
    this.relayOnly = false;
    $("terminal-section").hidden = false;
    $("terminal-session").textContent = sessionId;
    this.term.reset();
    this.fit.fit();
    this.connect(attach, false, placement);
    this.term.focus();
  }

  connect(attach, reconnecting, placement) {
    setStatus("connecting", statusText({ state: "connecting", placement }));
    // The best path first: the node's own gateway when the answer names one, the relay as
    // its fallback (the same token opens both).
    const direct = Boolean(attach.fallback_ws_url) && !this.relayOnly;
    const url = new URL(direct ? attach.ws_url : (attach.fallback_ws_url ?? attach.ws_url));
    url.searchParams.set("token", attach.token);
    url.searchParams.set("cols", String(this.term.cols));
    url.searchParams.set("rows", String(this.term.rows));
    const resumeAt = reconnecting ? this.offset : null;
    if (resumeAt !== null) url.searchParams.set("from_offset", String(resumeAt));
    const ws = new WebSocket(url);
    this.ws = ws;
    $("terminal").dataset.path = direct ? "direct" : "relay";
    // A gateway that does not answer within a second is given up for the relay.
    const giveUp = direct
      ? setTimeout(() => {
          if (this.ws !== ws || ws.readyState === WebSocket.OPEN) return;
          this.relayOnly = true;
          this.ws = null;
          ws.close();
          this.connect(attach, reconnecting, placement);
        }, DIRECT_TIMEOUT_MS)
      : null;
    ws.onopen = () => clearTimeout(giveUp);
    // Flow control: acknowledge output once xterm.js has drawn it, so a flood (`yes`) runs
    // only a small window ahead of the screen and Ctrl-C stops it at once.
    let consumed = 0;
    let acked = 0;
    const drawn = (length) => {
      consumed += length;
      // The first output is acknowledged at once: from then on the node paces the shell.
      if ((acked === 0 || consumed - acked >= ACK_EVERY) && ws.readyState === WebSocket.OPEN) {
        acked = consumed;
        ws.send(JSON.stringify({ type: "ack", bytes: consumed }));
      }
    };
    // Ctrl-C: output arriving after it waits for the gateway's `flush` answer, and what the
    // interrupt made stale is dropped, as a local tty drops it (the same rules as
    // fogshell_shared::ctrl_c). Dropped bytes count as consumed for the acknowledgements.
    const element = $("terminal");
    let received = 0;
    let pending = 0;
    let held = [];
    let timer = null;
    const draw = (bytes) => {
      if (bytes.length > 0) this.term.write(bytes, () => drawn(bytes.length));
    };
    const drawHeld = () => {
      clearTimeout(timer);
      timer = null;
      const chunks = held;
      held = [];
      for (const chunk of chunks) draw(chunk.bytes);
    };
    this.hold = {
      sent: (bytes) => {
        const interrupts = bytes.filter((b) => b === 0x03).length;
        if (interrupts === 0) return;
        if (pending === 0) {
          // An answer that never comes (an older gateway) must not freeze the screen.
          timer = setTimeout(() => {
            if (this.ws !== ws) return;
            pending = 0;
            drawHeld();
          }, CTRL_C_HOLD_MS);
        }
        pending += interrupts;
      },
    };
    const stdout = (bytes) => {
      const at = received;
      received += bytes.length;
      if (pending > 0) held.push({ at, bytes });
      else draw(bytes);
    };
    const flush = (bytes, discard) => {
      if (pending === 0) return;
      pending -= 1;
      if (discard) {
        let dropped = 0;
        held = held.flatMap((chunk) => {
          const stale = Math.min(Math.max(bytes - chunk.at, 0), chunk.bytes.length);
          dropped += stale;
          if (stale === chunk.bytes.length) return [];
          return [{ at: chunk.at + stale, bytes: chunk.bytes.subarray(stale) }];
        });
        if (dropped > 0) {
          this.dropped += dropped;
          element.dataset.dropped = String(this.dropped);
          drawn(dropped);
        }
      }
      if (pending === 0) drawHeld();
    };
    // Without an offset to resume from, the node replays its buffer: start from a clean screen.
    let fresh = reconnecting && resumeAt === null;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      switch (frame.type) {
        case "stdout": {
          const bytes = base64ToBytes(frame.data_b64);
          stdout(bytes);
          if (this.offset !== null) this.offset += bytes.length;
          break;
        }
        case "flush":
          if (typeof frame.bytes === "number") flush(frame.bytes, frame.discard === true);
          break;
        case "status":
          // A reconnect replays the node's buffer from the start: begin from a clean screen.
          if (fresh && frame.state === "running") {
            this.term.reset();
            fresh = false;
          }
          this.retries = 0;
          if (typeof frame.offset === "number") this.offset = frame.offset;
          showPlacement(frame.placement);
          setStatus(frame.state, statusText(frame));
          if (frame.state === "failed") this.finished = true;
          break;
        case "exit":
          this.finished = true;
          setStatus("exited", `The shell exited with status ${frame.code}.`);
          refreshSessions();
          break;
        case "error":
          setStatus("error", frame.message);
          break;
      }
    };
    ws.onclose = () => {
      clearTimeout(giveUp);
      // What was held for an answer that cannot come now is drawn (the reconnect resumes
      // after it).
      if (this.ws === ws) {
        pending = 0;
        drawHeld();
      }
      if (this.ws !== ws || this.finished || this.sessionId === null) return;
      // A node's gateway that dropped the terminal (or sent it away, 1001) is not tried
      // again for this session: the relay reaches the shell wherever it is.
      if (direct) this.relayOnly = true;
      this.reconnect();
    };
  }

  // A dropped connection: a fresh attach token for the same session, the same shell.
  async reconnect() {
    const sessionId = this.sessionId;
    this.retries += 1;
    const delay = Math.min(250 * 2 ** Math.min(this.retries, 5), 5000);
    setStatus("connecting", `Connection lost; reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    if (this.sessionId !== sessionId || this.finished) return;
    try {
      const attach = await api("POST", `/v1/sessions/${sessionId}/attach`);
      if (this.sessionId === sessionId) this.connect(attach, true);
    } catch (error) {
      if (error instanceof LoginNeeded) return;
      if (error instanceof ApiError && (error.status === 404 || error.status === 409)) {
        this.finished = true;
        setStatus("failed", `The session cannot be attached again: ${error.message}`);
        return;
      }
      this.reconnect();
    }
  }

  detach() {
    this.sessionId = null;
    const ws = this.ws;
    this.ws = null;
    ws?.close(1000, "detached");
  }
}

let terminalView = null;

// ---------------------------------------------------------------------------------------
// Sessions.

async function loadProfiles() {
  const { items } = await api("GET", "/v1/profiles");
  const select = $("profile");
  select.replaceChildren(
    ...items.map((p) => {
      const option = document.createElement("option");
      option.value = p.name;
      const mib = Math.round(p.memory_bytes / 1048576);
      option.textContent = `${p.name} — ${p.cpu_millis / 1000} CPU, ${mib} MiB, ${p.min_trust_tier} or better`;
      return option;
    }),
  );
  select.value = items.some((p) => p.name === "default") ? "default" : items[0]?.name;
}

// How long a gateway probe may take, and how long a node's own gateway gets to open a
// terminal before the console goes to the coordinator's relay.
const PROBE_TIMEOUT_MS = 1000;
const DIRECT_TIMEOUT_MS = 1000;

// Round trips timed per gateway, after one that opens the connection: the smallest is the
// path's, so a stall on one request does not decide where the session runs.
const PROBE_SAMPLES = 3;

// Times the round trip to a gateway's probe.
async function probe(url) {
  const once = async () => {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), PROBE_TIMEOUT_MS);
    try {
      const response = await fetch(url, { cache: "no-store", signal: abort.signal });
      return response.ok;
    } finally {
      clearTimeout(timer);
    }
  };
  try {
    if (!(await once())) return null;
    let best = Infinity;
    for (let i = 0; i < PROBE_SAMPLES; i++) {
      const started = performance.now();
      if (!(await once())) return null;
      best = Math.min(best, performance.now() - started);
    }
    return Math.round(best);
  } catch {
    return null;
  }
}

// The user's real paths, for placement: the round trip to the coordinator's relay and to
// each node's own gateway this browser can reach (as Coder's clients time workspace proxies).
async function measureGateways() {
  try {
    const { items } = await api("GET", "/v1/gateways");
    const timed = await Promise.all(items.map(async (g) => [g, await probe(g.probe_url)]));
    const hint = {};
    for (const [gateway, ms] of timed) {
      if (ms === null) continue;
      if (gateway.kind === "relay") hint.relay_rtt_ms = ms;
      else if (gateway.node_id) (hint.gateway_rtt_ms ??= {})[gateway.node_id] = ms;
    }
    return Object.keys(hint).length > 0 ? hint : undefined;
  } catch (error) {
    if (error instanceof LoginNeeded) throw error;
    return undefined;
  }
}

async function createSession(event) {
  event.preventDefault();
  setStatus("connecting", "Measuring the way to your terminal…");
  const placement_hint = await measureGateways();
  setStatus("connecting", "Placing the session…");
  // Answered once placed: the terminal connects while the node starts the shell (the
  // gateway holds it until then), so the two waits overlap.
  const created = await api(
    "POST",
    "/v1/sessions",
    {
      profile: $("profile").value,
      ttl_seconds: Number($("ttl").value),
      ...(placement_hint ? { placement_hint } : {}),
    },
    { prefer: "respond-async" },
  );
  showPlacement(created.placement);
  terminalView.attach(created.session_id, created.attach, created.placement);
  refreshSessions();
}

async function refreshSessions() {
  const { items } = await api("GET", "/v1/sessions?limit=100");
  const rows = items
    .filter((s) => s.status !== "terminated" && s.status !== "failed")
    .map((session) => {
      const row = document.createElement("tr");
      row.dataset.session = session.session_id;
      const cells = [
        session.session_id,
        session.status,
        session.placement?.node_id ?? "",
        new Date(session.expires_at).toLocaleString(),
      ].map((text, i) => {
        const cell = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) cell.scope = "row";
        const content = i === 0 ? document.createElement("code") : cell;
        content.textContent = text;
        if (i === 0) cell.append(content);
        return cell;
      });
      const actions = document.createElement("td");
      if (session.status === "running") {
        const attach = document.createElement("button");
        attach.type = "button";
        attach.textContent = "Attach";
        attach.setAttribute("aria-label", `Attach to session ${session.session_id}`);
        attach.onclick = guarded(async () => {
          const info = await api("POST", `/v1/sessions/${session.session_id}/attach`);
          showPlacement(session.placement);
          terminalView.attach(session.session_id, info, session.placement);
        });
        actions.append(attach);
      }
      const terminate = document.createElement("button");
      terminate.type = "button";
      terminate.textContent = "Terminate";
      terminate.setAttribute("aria-label", `Terminate session ${session.session_id}`);
      terminate.onclick = guarded(async () => {
        if (terminalView.sessionId === session.session_id) terminalView.detach();
        await api("DELETE", `/v1/sessions/${session.session_id}`);
        setStatus("exited", `Session ${session.session_id} terminated.`);
        await refreshSessions();
      });
      actions.append(terminate);
      row.append(...cells, actions);
      return row;
    });
  $("sessions").tBodies[0].replaceChildren(...rows);
}

async function showApp() {
  const claims = claimsOf(user.access_token);
  $("who").textContent = [claims.sub, claims.tenant].filter(Boolean).join(" · ");
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("logout").hidden = false;
  terminalView ??= new TerminalView($("terminal"));
  await loadProfiles();
  await refreshSessions();
  $("profile").focus();
}

// ---------------------------------------------------------------------------------------

$("login").addEventListener("click", guarded(logIn));
$("logout").addEventListener("click", guarded(logOut));
$("create").addEventListener("submit", guarded(createSession));
$("refresh").addEventListener("click", guarded(refreshSessions));
setUpLogin().catch((error) => showLogin(`The console could not start: ${error.message}`));
