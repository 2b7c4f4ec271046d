// Loads the status page in Debian's chromium through playwright-core and prints, as one
// JSON object, what a person sees (rows, backends, store figures) and every request the
// page made. Requests to any other origin are aborted and listed in `foreign`.
//
// Environment: PAGE_URL, CHROMIUM (executable), PROFILE_DIR (an empty directory),
// SCREENSHOT (PNG path), NODE_PATH (where playwright-core is installed).
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { chromium } = require(require.resolve("playwright-core", { paths: [process.env.NODE_PATH] }));

const url = process.env.PAGE_URL;
const origin = new URL(url).origin;

const context = await chromium.launchPersistentContext(process.env.PROFILE_DIR, {
  executablePath: process.env.CHROMIUM,
  headless: true,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  viewport: { width: 1280, height: 900 },
});

const requests = [];
const foreign = [];
const consoleErrors = [];
try {
  await context.route("**/*", (route) => {
    const u = route.request().url();
    if (new URL(u).origin === origin) return route.continue();
    foreign.push(u);
    return route.abort();
  });
  await context.addInitScript(() => {
    // The viewer's clock is an hour ahead of the server's: ages must be the server's.
    const serverNow = Date.now;
    Date.now = () => serverNow() + 3600 * 1000;
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => {
      window.__violations.push(e.blockedURI + " (" + e.violatedDirective + ")");
    });
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on("request", (r) => requests.push(r.url()));
  page.on("console", (m) => {
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));

  await page.goto(url, { waitUntil: "load" });
  await page.waitForSelector("tr[data-scaled-object]", { timeout: 15000 });
  // Wait for one more refresh, so the page has redrawn from fresh data at least twice.
  const first = await page.getAttribute("body", "data-refreshed");
  await page.waitForFunction(
    (before) => document.body.getAttribute("data-refreshed") !== before,
    first,
    { timeout: 15000 },
  );

  const seen = await page.evaluate(() => {
    const text = (root, sel) => (root.querySelector(sel)?.textContent ?? "").trim();
    const rows = [...document.querySelectorAll("section.namespace")].flatMap((section) =>
      [...section.querySelectorAll("tr[data-scaled-object]")].map((tr) => {
        const cells = tr.querySelectorAll("td");
        const svg = tr.querySelector("svg.sparkline");
        return {
          namespace: section.getAttribute("data-namespace"),
          scaledObject: text(tr, ".name"),
          metric: text(tr, ".metric"),
          signal: text(cells[1], ".tag"),
          value: cells[2].textContent.trim(),
          threshold: text(cells[3], ".threshold"),
          active: cells[4].textContent.trim(),
          state: text(cells[5], ".state"),
          error: text(cells[5], ".error"),
          query: text(tr, ".query"),
          sparklinePoints: svg ? Number(svg.getAttribute("data-points")) : 0,
          sparklineLines: svg ? svg.querySelectorAll("polyline").length : 0,
        };
      }),
    );
    const backends = [...document.querySelectorAll("#backend-rows tr[data-backend]")].map((tr) =>
      [...tr.querySelectorAll("td")].map((td) => td.textContent.trim()),
    );
    const store = Object.fromEntries(
      [...document.querySelectorAll("#store dd")].map((dd) => [dd.id, dd.textContent.trim()]),
    );
    return { rows, backends, store, violations: window.__violations };
  });
  await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  process.stdout.write(
    JSON.stringify({ ...seen, requests, foreign, consoleErrors }) + "\n",
  );
} finally {
  await context.close();
}
