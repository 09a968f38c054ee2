// The console end to end in Debian's headless Chromium, driven by Playwright: log in through
// a real OpenID provider, create a session with the keyboard, see `echo` rendered, resize and
// see `stty size` follow, drop the WebSocket and keep the same shell, terminate, log out.
//
// Started by tests/tests/console.rs, which runs the provider (test/oidc-server.mjs), a
// coordinator and a node, and passes:
//   CONSOLE_URL      http://127.0.0.1:PORT/console/
//   OIDC_LOGIN       the test user's login and password, `login:password`
//   SCREENSHOT       where to save a screenshot of the console with a live terminal
//   EDGE_GATEWAY     set when the node runs its own gateway: the terminal must reach it
//                    directly, then fall back to the coordinator's relay when it is cut
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

// axe-core, the accessibility rules engine, run in the page (through the debugging protocol,
// so the page's own content security policy stays as it is).
const axeSource = await readFile(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const consoleUrl = process.env.CONSOLE_URL;
const [login, password] = (process.env.OIDC_LOGIN ?? "alice:wonderland").split(":");
const screenshot = process.env.SCREENSHOT;
const edge = Boolean(process.env.EDGE_GATEWAY);
const TIMEOUT = 20_000;

function step(text) {
  console.log(`--> ${text}`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  page.on("console", (m) => {
    if (m.type() === "error") console.log(`[page] ${m.text()}`);
  });
  // Every terminal socket goes through here, so the test can drop one as a network would.
  const sockets = [];
  // The gateway's answers to Ctrl-C, as they pass.
  const flushes = [];
  await page.routeWebSocket(/\/v1\/sessions\/[^/]+\/pty/, (ws) => {
    const server = ws.connectToServer();
    ws.onMessage((message) => server.send(message));
    server.onMessage((message) => {
      if (typeof message === "string" && message.startsWith('{"type":"flush"')) flushes.push(JSON.parse(message));
      ws.send(message);
    });
    sockets.push(ws);
  });
  const terminalText = () =>
    page.evaluate(() => document.querySelector("#terminal .xterm-rows")?.innerText ?? "");
  const waitForOutput = async (needle) => {
    await page.waitForFunction(
      (n) => (document.querySelector("#terminal .xterm-rows")?.innerText ?? "").includes(n),
      needle,
    );
  };
  const waitForStatus = (state) => page.waitForSelector(`#status[data-state="${state}"]`);

  step("log in through the OpenID provider");
  await page.goto(consoleUrl);
  await page.getByRole("button", { name: "Log in with your organisation" }).click();
  // The development issuer (`fogshell-coordinator up`) has no login form: it sends the
  // browser straight back. A real provider asks who you are.
  const appShown = page.waitForSelector("#app-view:not([hidden])").then(() => "app");
  const formShown = page.waitForSelector('input[name="login"]').then(() => "form");
  appShown.catch(() => {});
  formShown.catch(() => {});
  if ((await Promise.race([appShown, formShown])) === "form") {
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', password);
    await page.click('button[type="submit"]');
  }
  await page.waitForSelector("#app-view:not([hidden])");
  check((await page.textContent("#who")).includes(login), "the console does not say who is logged in");
  const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }));
  check(!stored.includes("eyJ"), `a token reached web storage: ${stored}`);

  step("create a session with the keyboard only");
  // The picker takes the focus once the profiles are loaded (an API call away).
  await page
    .waitForFunction(() => document.activeElement?.id === "profile", null, { timeout: 5000 })
    .catch(() => check(false, "the profile picker is not focused"));
  await page.keyboard.press("Tab"); // lifetime
  await page.keyboard.press("Tab"); // Create and attach
  await page.keyboard.press("Enter");
  await waitForStatus("running");
  check((await page.textContent("#placement-node")).length > 0, "no placement shown");
  check((await page.textContent("#placement-reasons")).includes("FOG_LOWEST_LATENCY"), "no reason codes shown");
  const path = () => page.evaluate(() => document.querySelector("#terminal")?.dataset.path);
  if (edge) {
    step("the terminal reaches the node's own gateway, chosen by the measured path");
    check((await path()) === "direct", `the terminal went ${await path()}, not to the node's gateway`);
    check(
      (await page.textContent("#placement-reasons")).includes("USER_PATH_DIRECT"),
      "placement did not rank by the measured path",
    );
  }

  step("no serious accessibility violations (axe-core, WCAG 2 A and AA)");
  await page.evaluate(axeSource);
  const audit = await page.evaluate(() =>
    // The terminal's own rendering is xterm.js's; its screen-reader mode is a user setting.
    globalThis.axe.run({ exclude: [[".xterm-screen"]] }, { runOnly: ["wcag2a", "wcag2aa"] }),
  );
  const serious = audit.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(
    serious.length === 0,
    `accessibility: ${serious.map((v) => `${v.id} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`).join("; ")}`,
  );

  step("type into the terminal and see it rendered");
  await page.keyboard.type('export MARK="sa""me-shell"; echo "fogshell-""ok"\n');
  await waitForOutput("fogshell-ok");
  if (screenshot) await page.screenshot({ path: screenshot });

  step("resize the window and see stty size follow");
  const sizeAfter = async (width, height) => {
    await page.setViewportSize({ width, height });
    await page.waitForTimeout(300);
    const marker = `size-${width}`;
    await page.keyboard.type(`echo ${marker.replace("-", '-""')} $(stty size)\n`);
    await waitForOutput(`${marker} `);
    const line = (await terminalText()).split("\n").find((l) => l.startsWith(`${marker} `));
    const [rows, cols] = line.slice(marker.length + 1).trim().split(/\s+/).map(Number);
    const shownRows = await page.evaluate(() => document.querySelectorAll("#terminal .xterm-rows > div").length);
    return { rows, cols, shownRows };
  };
  const wide = await sizeAfter(1280, 900);
  const narrow = await sizeAfter(800, 700);
  check(wide.rows === wide.shownRows, `stty says ${wide.rows} rows, the terminal shows ${wide.shownRows}`);
  check(narrow.rows === narrow.shownRows, `stty says ${narrow.rows} rows, the terminal shows ${narrow.shownRows}`);
  check(narrow.cols < wide.cols && narrow.rows < wide.rows, `stty did not follow: ${JSON.stringify({ wide, narrow })}`);

  step(edge ? "cut the node's gateway: the console falls back to the relay, same shell" : "drop the WebSocket and see the reconnect keep the shell");
  check(sockets.length === 1, `expected one terminal socket, saw ${sockets.length}`);
  await sockets[0].close({ code: 1006, reason: "network lost" }).catch(() => sockets[0].close());
  await page.waitForFunction(() => document.querySelector("#status")?.textContent.includes("reconnecting"));
  await waitForStatus("running");
  check(sockets.length === 2, "the console did not open a new socket");
  await page.locator("#terminal").click();
  await page.keyboard.type('echo "again $MARK"\n');
  await waitForOutput("again same-shell");
  if (edge) check((await path()) === "relay", `after the cut the terminal went ${await path()}, not to the relay`);

  step("Ctrl-C stops a flood at once: what it made stale is not drawn");
  await page.keyboard.type("yes\n");
  await waitForOutput("y\ny\ny");
  await page.waitForTimeout(300);
  await page.keyboard.press("Control+C");
  await page.keyboard.type('echo "after-""flood"\n');
  await waitForOutput("after-flood");
  check(flushes.some((f) => f.discard === true), `no flush answer that discards: ${JSON.stringify(flushes)}`);
  const dropped = Number(await page.evaluate(() => document.querySelector("#terminal")?.dataset.dropped ?? "0"));
  check(dropped > 0, "the console drew all the output the interrupt made stale");

  step("leave the terminal with the keyboard");
  await page.keyboard.press("Control+Shift+E");
  check(await page.evaluate(() => document.activeElement?.id === "refresh"), "Ctrl+Shift+E did not leave the terminal");

  step("terminate the session");
  const row = page.locator("#sessions tbody tr").first();
  await row.getByRole("button", { name: /Terminate/ }).click();
  await page.waitForFunction(() => document.querySelectorAll("#sessions tbody tr").length === 0);
  check((await page.textContent("#status")).includes("terminated"), "no word of the termination");

  step("log out");
  await page.getByRole("button", { name: "Log out" }).click();
  // The provider may ask to confirm the logout.
  await page.waitForURL((url) => url.href.startsWith(consoleUrl) || !url.href.startsWith(new URL(consoleUrl).origin));
  if (!page.url().startsWith(consoleUrl)) {
    await page.locator('button[type="submit"], button[autofocus]').first().click();
  }
  await page.waitForSelector("#login-view:not([hidden])");
  step("all passed");
} catch (error) {
  failed = true;
  console.error(`console test failed: ${error.stack ?? error}`);
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
