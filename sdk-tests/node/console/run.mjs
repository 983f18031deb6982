// Drives Kiln's browser console (served at /) in headless Debian Chromium through playwright-core.
//
//   node console/run.mjs <scenario> <baseUrl> <screenshotDir>
//
// Runs ./scenarios/<scenario>.mjs: `export default async function (page, ctx)`. Environment:
// KILN_FAKE_AUDIO (a WAV file the fake microphone plays), KILN_CHROMIUM (the browser, default
// /usr/bin/chromium), KILN_CONSOLE_TIMEOUT_MS (the whole run's limit, default 300000).
// The browser may reach only the Kiln under test: any request elsewhere fails the run.

import { execFile } from "node:child_process";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const [scenario, rawBase, screenshotDir] = process.argv.slice(2);
if (!scenario || !rawBase || !screenshotDir) {
  console.error("usage: node console/run.mjs <scenario> <baseUrl> <screenshotDir>");
  process.exit(2);
}
const base = rawBase.replace(/\/+$/, "");
const baseOrigin = new URL(base).origin;
const timeoutMs = Number(process.env.KILN_CONSOLE_TIMEOUT_MS || 300000);

function fail(message) {
  console.error(`console scenario ${scenario} FAILED: ${message}`);
  process.exit(1);
}

const watchdog = setTimeout(() => fail(`timed out after ${timeoutMs} ms`), timeoutMs);
watchdog.unref();

/** Runs the real curl against the Kiln under test; returns the parsed JSON answer. */
function curl(method, route, body) {
  const args = ["-sS", "-X", method, "-H", "content-type: application/json"];
  if (process.env.KILN_TOKEN) args.push("-H", `authorization: Bearer ${process.env.KILN_TOKEN}`);
  if (body !== undefined) args.push("--data-binary", typeof body === "string" ? body : JSON.stringify(body));
  args.push(`${base}${route}`);
  return new Promise((resolve, reject) => {
    execFile("curl", args, { maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) return reject(new Error(`curl ${method} ${route}: ${stderr || error.message}`));
      try {
        resolve(JSON.parse(stdout));
      } catch {
        reject(new Error(`curl ${method} ${route}: not JSON: ${stdout.slice(0, 500)}`));
      }
    });
  });
}

function expect(condition, message) {
  if (!condition) throw new Error(`expectation failed: ${message}`);
}

async function main() {
  const module = await import(pathToFileURL(path.join(here, "scenarios", `${scenario}.mjs`)).href);
  const whoami = await curl("GET", "/kiln/whoami");
  expect(whoami.success && whoami.result.account_id, `GET /kiln/whoami: ${JSON.stringify(whoami)}`);
  mkdirSync(screenshotDir, { recursive: true });

  // No traffic beyond the server under test: Chromium's own background services (updates,
  // sync, safe browsing, DNS of Google's hosts) stay off.
  const args = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-domain-reliability", "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream", "--autoplay-policy=no-user-gesture-required"];
  if (process.env.KILN_FAKE_AUDIO) args.push(`--use-file-for-fake-audio-capture=${process.env.KILN_FAKE_AUDIO}`);
  const browser = await chromium.launch({
    executablePath: process.env.KILN_CHROMIUM || "/usr/bin/chromium",
    args,
    timeout: 60000,
  });
  const foreign = [];
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
    await context.grantPermissions(["microphone"], { origin: baseOrigin });
    // Nothing but the Kiln under test (blob: and data: URLs never reach the network).
    await context.route("**/*", (route) => {
      const url = route.request().url();
      if (url.startsWith(`${baseOrigin}/`)) return route.continue();
      foreign.push(url);
      return route.abort("blockedbyclient");
    });
    const page = await context.newPage();
    page.setDefaultTimeout(60000);
    page.on("pageerror", (error) => console.log(`[page error] ${error.message}`));
    page.on("console", (message) => {
      if (message.type() === "error" || message.type() === "warning") {
        console.log(`[console ${message.type()}] ${message.text()}`);
      }
    });
    let loads = 0;
    const ctx = {
      base,
      account: whoami.result.account_id,
      screenshot: async (name) => {
        const file = path.join(screenshotDir, `${name}.png`);
        await page.screenshot({ path: file, fullPage: true });
        console.log(`screenshot ${file}`);
      },
      curl,
      expect,
      /** Loads the console afresh at `#/<route>` and waits until that page has rendered. */
      open: async (route) => {
        loads += 1;
        await page.goto(`${base}/?load=${loads}#/${route}`);
        const id = route.split("?")[0];
        await page.waitForSelector(`main#page[data-page="${id}"]`);
      },
      log: (...parts) => console.log(...parts),
    };
    await module.default(page, ctx);
    await context.close();
  } finally {
    await browser.close();
  }
  expect(!foreign.length, `the browser tried to reach other hosts: ${foreign.join(", ")}`);
  console.log(`console scenario ${scenario} passed`);
}

main().then(() => process.exit(0), (error) => fail(error && error.stack ? error.stack : String(error)));
