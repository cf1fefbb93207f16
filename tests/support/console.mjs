// Drives Debian's headless Chromium over the DevTools protocol (on a pipe,
// no port) for tests/console.rs: opens pages of the console, waits until
// they have drawn, reads their tables, types into filters, presses Tab,
// takes screenshots, runs axe-core, and records every request the page
// made.
//
//   node console.mjs < plan.json > result.json
//
// plan: { chromium, axe (path of axe.min.js), authorization (or null),
//         steps: [{ url, width, height, screenshot, axe, type: {selector, text}, tabs,
//                   watch: {signal, until} }] }
// watch: once drawn, reads the page, creates the file `signal` (so the test
// can change what the daemon shows) and waits, without reloading, until the
// text of the view's tables contains `until`; then reads the page again.
// Every wait is bounded; the caller bounds the whole run too.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const WAIT_MS = 20000;
const plan = JSON.parse(readFileSync(0, "utf8"));
const profile = mkdtempSync(join(tmpdir(), "airlock-console-"));
const browser = spawn(plan.chromium, [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
  "--disable-background-networking", "--disable-sync", "--disable-default-apps",
  "--remote-debugging-pipe", "--user-data-dir=" + profile, "about:blank",
], { stdio: ["ignore", "ignore", "pipe", "pipe", "pipe"], detached: true });
// Chromium starts helpers (zygote, renderers, crashpad) in its process
// group: stopping means stopping them all, or they keep writing into the
// profile while it is removed.
const stopBrowser = () => {
  try { process.kill(-browser.pid, "SIGKILL"); } catch (e) { browser.kill("SIGKILL"); }
};
let stderr = "";
browser.stderr.on("data", (d) => { stderr += d; });

const toBrowser = browser.stdio[3];
const fromBrowser = browser.stdio[4];
let nextId = 1;
const pending = new Map();
const listeners = [];
let buffer = Buffer.alloc(0);
fromBrowser.on("data", (chunk) => {
  buffer = Buffer.concat([buffer, chunk]);
  let end;
  while ((end = buffer.indexOf(0)) >= 0) {
    const message = JSON.parse(buffer.subarray(0, end).toString("utf8"));
    buffer = buffer.subarray(end + 1);
    if (message.id && pending.has(message.id)) {
      const { resolve, reject } = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) reject(new Error(JSON.stringify(message.error))); else resolve(message.result);
    } else if (message.method) {
      listeners.forEach((l) => l(message));
    }
  }
});

function send(method, params = {}, sessionId) {
  const id = nextId++;
  toBrowser.write(JSON.stringify({ id, method, params, sessionId }) + "\0");
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject });
    setTimeout(() => { if (pending.delete(id)) reject(new Error(method + " timed out")); }, WAIT_MS);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  const page = (method, params) => send(method, params, sessionId);
  const requests = [];
  listeners.push((m) => {
    if (m.sessionId === sessionId && m.method === "Network.requestWillBeSent") requests.push(m.params.request.url);
  });
  await page("Network.enable");
  await page("Page.enable");
  await page("Runtime.enable");
  if (plan.authorization) await page("Network.setExtraHTTPHeaders", { headers: { Authorization: plan.authorization } });

  const evaluate = async (expression, awaitPromise = false) => {
    const { result, exceptionDetails } = await page("Runtime.evaluate", { expression, awaitPromise, returnByValue: true });
    if (exceptionDetails) throw new Error(expression.slice(0, 60) + ": " + JSON.stringify(exceptionDetails));
    return result.value;
  };
  // Waits until the page has drawn `after` times or more (console.js counts).
  const drawn = async (after) => {
    const deadline = Date.now() + WAIT_MS;
    while (Date.now() < deadline) {
      const state = await evaluate(`document.body ? [document.body.dataset.state,
        Number(document.body.dataset.draws || 0), document.body.dataset.drawnFor === window.location.search] : null`).catch(() => null);
      if (state && state[0] === "error") throw new Error("the page says: " + await evaluate("document.getElementById('status').textContent"));
      if (state && state[0] === "ready" && state[1] > after && state[2]) return state[1];
      await sleep(100);
    }
    throw new Error("the page did not draw within " + WAIT_MS + " ms");
  };
  const read = () => evaluate(`(() => {
    const section = document.querySelector("main > section:not([hidden])");
    const tables = {};
    section.querySelectorAll("table").forEach((t) => {
      tables[t.id] = Array.from(t.tBodies[0].rows).map((r) => Array.from(r.cells).map((c) => c.innerText.trim()));
    });
    return { view: document.body.dataset.view, state: document.body.dataset.state,
             status: document.getElementById("status").textContent, tables,
             text: section.innerText };
  })()`);

  const results = [];
  for (const step of plan.steps) {
    await page("Emulation.setDeviceMetricsOverride", { width: step.width, height: step.height, deviceScaleFactor: 1, mobile: false });
    await page("Page.navigate", { url: step.url });
    let draws = await drawn(0);
    const result = { url: step.url };
    if (step.type) {
      await evaluate(`document.querySelector(${JSON.stringify(step.type.selector)}).focus()`);
      await page("Input.insertText", { text: step.type.text });
      draws = await drawn(draws);
      result.location = await evaluate("window.location.search");
    }
    if (step.watch) {
      result.before = await read();
      await evaluate("window.airlockNotReloaded = true");
      writeFileSync(step.watch.signal, "");
      const deadline = Date.now() + 3 * WAIT_MS;
      const until = JSON.stringify(step.watch.until);
      const rows = `Array.from(document.querySelectorAll("main > section:not([hidden]) tbody")).map((b) => b.innerText).join("\\n")`;
      while (!(await evaluate(`${rows}.includes(${until})`))) {
        if (Date.now() > deadline) throw new Error("the page never showed " + until);
        await sleep(200);
      }
      result.notReloaded = await evaluate("window.airlockNotReloaded === true");
    }
    if (step.tabs) {
      result.focus = [];
      await evaluate("document.activeElement && document.activeElement.blur()");
      for (let i = 0; i < step.tabs; i += 1) {
        for (const type of ["keyDown", "keyUp"]) {
          await page("Input.dispatchKeyEvent", { type, key: "Tab", code: "Tab", windowsVirtualKeyCode: 9 });
        }
        result.focus.push(await evaluate(`(() => { const e = document.activeElement;
          const label = e.labels && e.labels[0] ? e.labels[0].innerText.split("\\n")[0] : "";
          return e.tagName.toLowerCase() + ":" + (e.name || label || e.innerText || "").trim(); })()`));
      }
    }
    Object.assign(result, await read());
    if (step.screenshot) {
      const { data } = await page("Page.captureScreenshot", { format: "png" });
      writeFileSync(step.screenshot, Buffer.from(data, "base64"));
    }
    if (step.axe) {
      await evaluate(readFileSync(plan.axe, "utf8"));
      result.violations = await evaluate(`axe.run(document, { resultTypes: ["violations"] }).then((r) =>
        r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
          nodes: v.nodes.map((n) => n.target.join(" ")) })))`, true);
    }
    results.push(result);
  }
  return { results, requests };
}

const watchdog = setTimeout(() => { stopBrowser(); process.exit(3); }, 10 * WAIT_MS);
main().then((output) => {
  process.stdout.write(JSON.stringify(output));
  process.exitCode = 0;
}, (error) => {
  process.stderr.write(String(error.stack || error) + "\nchromium said:\n" + stderr.slice(-4000));
  process.exitCode = 1;
}).finally(() => {
  clearTimeout(watchdog);
  browser.on("exit", () => {
    try {
      rmSync(profile, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
    } catch (e) {
      process.stderr.write("cannot remove the Chromium profile " + profile + ": " + e + "\n");
    }
  });
  stopBrowser();
});
