// Drives `ferry ui` in Debian's headless Chromium, as a person would (run by cli/tests/ui.rs):
// the runs page shows a run started after it was opened, without a reload; the run's page
// draws its DAG with live statuses; a running step's log lines arrive; an output downloads
// with the right bytes; the run is cancelled from its page. Screenshots of the three main
// pages go where SCREENSHOTS says.
//
// Environment: UI_URL, FERRY_BIN, PROJECT_DIR, EXPECTED_OUTPUT, SCREENSHOTS, CHROMIUM,
// PLAYWRIGHT (the playwright-core module's path).
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

const { chromium } = await import(process.env.PLAYWRIGHT);
const url = process.env.UI_URL;
const shots = process.env.SCREENSHOTS;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("dialog", (dialog) => dialog.accept());

  // The runs page, then a run started after it: its row appears without a reload.
  await page.goto(url);
  await page.evaluate(() => { window.notReloaded = true; });
  const run = execFileSync(process.env.FERRY_BIN, ["run", "--detach"], {
    cwd: process.env.PROJECT_DIR,
    encoding: "utf8",
  }).trim();
  const row = page.locator(`tr[data-run="${run}"]`);
  await row.waitFor({ timeout: 45000 });
  assert.equal(await page.evaluate(() => window.notReloaded), true, "the page reloaded");
  await page.screenshot({ path: `${shots}/runs.png` });

  // Its page: the DAG, with the slow step running (live), the quick one done.
  await row.locator("a").click();
  await page.waitForURL(`**/runs/${run}`);
  await page.locator('g.node[data-step="slow"].status-running').waitFor({ timeout: 45000 });
  await page.locator('g.node[data-step="make"].status-succeeded').waitFor({ timeout: 45000 });
  assert.equal(await page.locator("g.node").count(), 3);
  assert.equal(await page.locator("svg.dag path.edge").count(), 2);
  await page.screenshot({ path: `${shots}/run.png` });

  // The running step's log, lines arriving.
  await page.locator('g.node[data-step="slow"]').click();
  await page.waitForURL(`**/runs/${run}/steps/slow`);
  await page.waitForFunction(() => (document.getElementById("log")?.textContent || "").includes("tick 3"), null, { timeout: 45000 });
  const before = Number(await page.locator("#log").getAttribute("data-lines"));
  await page.waitForFunction((n) => Number(document.getElementById("log").dataset.lines) > n, before, { timeout: 30000 });
  await page.screenshot({ path: `${shots}/step.png` });

  // An output of the finished step downloads with its bytes.
  await page.goto(`${url.replace(/\/$/, "")}/runs/${run}/steps/make`);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.locator('a[href$="/outputs/data/result.txt"]').click(),
  ]);
  const bytes = readFileSync(await download.path(), "utf8");
  assert.equal(bytes, process.env.EXPECTED_OUTPUT);

  // Cancel from the run's page, confirmed; the page shows it cancelled by itself.
  await page.goto(`${url.replace(/\/$/, "")}/runs/${run}`);
  await page.locator("button.danger").click();
  await page.locator(".facts .status-cancelled").waitFor({ timeout: 60000 });
  await page.locator('g.node[data-step="after"].status-cancelled').waitFor({ timeout: 60000 });
  console.log(`ok ${run}`);
} finally {
  await browser.close();
}
