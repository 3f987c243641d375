// The operator console in Chromium against a live server and worker: what a customer-success
// manager sees. Assertions are on the page's text and state, never on network responses.
//
//   node --test clients/web/tests/        (./etter test runs it after the workspace build)
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { Deployment, launchBrowser, screenshot } from "./harness.mjs";

const READY = 90_000;
let deployment;
let browser;
let page;

before(async () => {
  deployment = new Deployment();
  await deployment.startServer();
  await deployment.start("etter-worker", "run");
  browser = await launchBrowser();
  page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  page.on("pageerror", (err) => console.error("page error:", err));
});

after(async () => {
  await browser?.close();
  await deployment?.stopAll();
});

/** A marker that a reload would wipe: set once, checked after live updates. */
async function markPage() {
  await page.evaluate(() => {
    window.__notReloaded = true;
  });
}
async function assertNotReloaded() {
  assert.equal(await page.evaluate(() => window.__notReloaded === true), true, "the page was reloaded");
}

/** Follows a link of the top navigation. */
async function go(name) {
  await page.getByRole("navigation").getByRole("link", { name, exact: true }).click();
}

/** Fills the push form and presses Push; resolves with the result banner. */
async function pushRole(role, draupRoleId, documentUri) {
  await page.fill("input[name=role_name]", role);
  await page.fill("input[name=draup_role_id]", draupRoleId);
  await page.fill("textarea[name=documents]", documentUri);
  await page.getByRole("button", { name: "Push", exact: true }).click();
  const result = page.getByTestId("push-result").filter({ hasText: role.toLowerCase().replace(/ /g, "-") });
  await result.waitFor();
  return result;
}

/** The status badge of the live row of a role. */
function liveStatus(role) {
  return page.locator(`[data-testid=live-runs] tr[data-role="${role}"] .badge`);
}

test("the dev login signs a CSM in and the live view is empty but connected", async () => {
  await page.goto(deployment.url);
  await assert.doesNotReject(page.getByRole("heading", { name: "Development sign-in" }).waitFor());
  await screenshot(page, "01-login");
  await page.fill("input[name=dev-company]", deployment.company);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("connection").filter({ hasText: "Live" }).waitFor();
  assert.equal(await page.getByTestId("company").textContent(), deployment.company);
  await page.getByText("No runs are active for this company").waitFor();
  await screenshot(page, "02-live-empty");
});

test("a pushed role reaches READY on the live view without reloading", async () => {
  await go("Push a role");
  const pushed = await pushRole("Claims Adjuster", "draup-1001", deployment.uri("jd.txt"));
  assert.match(await pushed.textContent(), /^Queued: role-onboard-/);
  await screenshot(page, "03-pushed");

  await markPage();
  await go("Live");
  await liveStatus("Claims Adjuster").filter({ hasText: "Ready" }).waitFor({ timeout: READY });
  await assertNotReloaded();
  await screenshot(page, "04-live-ready");

  // Its page: every planned step finished, with durations and tokens.
  await page.locator('[data-testid=live-runs] tr[data-role="Claims Adjuster"] a').click();
  const steps = page.locator("[data-testid=steps] tbody tr");
  await steps.first().waitFor();
  const rows = await steps.allTextContents();
  assert.ok(rows.some((r) => r.startsWith("AI assessment") && r.includes("Completed")), rows.join("\n"));
  assert.ok(rows.filter((r) => r.includes("Completed")).length >= 4, rows.join("\n"));
  assert.match(await page.getByTestId("run").textContent(), /used of about .* estimated/);
  await screenshot(page, "05-run-ready");
});

test("a CSV with bad rows is answered row by row, the bad ones explained", async () => {
  await go("Upload CSV");
  // A file without the needed columns is refused before anything is sent.
  await page.setInputFiles("input[name=csv]", { name: "wrong.csv", mimeType: "text/csv", buffer: Buffer.from("name,id\nA,1\n") });
  const fileError = page.getByTestId("csv-error");
  await fileError.waitFor();
  assert.match(await fileError.textContent(), /draup_role_id, documents are missing/);

  const csv = [
    "role_name,draup_role_id,documents,client_ref",
    `Underwriter,draup-2001,${deployment.uri("jd.txt")},uw`,
    `Actuary,,${deployment.uri("jd.txt")},act`,
    "Fraud Investigator,draup-2003,,fraud",
    `Underwriter,draup-2001,${deployment.uri("jd.txt")},uw-again`,
  ].join("\n");
  await page.setInputFiles("input[name=csv]", { name: "roles.csv", mimeType: "text/csv", buffer: Buffer.from(csv) });
  await page.getByTestId("csv-summary").filter({ hasText: "4 roles read" }).waitFor();

  // Checked first: each row's fate, and the batch's tokens and time, before anything exists.
  await page.getByTestId("check-first").click();
  const quote = page.getByTestId("quote-summary");
  await quote.waitFor();
  const said = await quote.textContent();
  assert.match(said, /nothing created yet: 1 would be queued, 2 would be rejected, 1 duplicate in this file/);
  assert.match(said, /About [\d,.]+k? tokens/);
  assert.match(said, /All done in about \d/);
  const quoted = await page.locator("[data-testid=batch-quote] [data-testid=batch-rows] tbody tr").allTextContents();
  assert.equal(quoted.length, 4, quoted.join("\n"));
  assert.match(quoted[0], /^2Underwriter.*Would be queued/);
  assert.match(quoted[1], /^3Actuary.*Would be rejected.*Draup role ID: /);
  assert.match(quoted[2], /^4Fraud Investigator.*Would be rejected.*Documents: /);
  await screenshot(page, "06a-batch-checked");

  await page.getByRole("button", { name: "Push the batch" }).click();
  const rows = page.locator("[data-testid=batch-result] [data-testid=batch-rows] tbody tr");
  await rows.first().waitFor();
  const text = await rows.allTextContents();
  assert.equal(text.length, 4, text.join("\n"));
  assert.match(text[0], /^2Underwriter.*Queued/);
  assert.match(text[1], /^3Actuary.*Rejected.*Draup role ID: must not be empty/);
  assert.match(text[2], /^4Fraud Investigator.*Rejected.*Documents: /);
  assert.match(text[3], /^5Underwriter.*Duplicate in this file.*Same role as row 2; this row was ignored/);
  assert.match(await page.getByTestId("batch-result").textContent(), /1 queued, 2 rejected, 1 duplicate in this file/);
  await screenshot(page, "06-batch-rows");

  // The batch's link opens its history: the queued row and the two rejected ones, explained.
  await page.getByTestId("batch-result").getByRole("link", { name: /^batch-/ }).click();
  const history = page.locator("[data-testid=history] tbody tr");
  await page.waitForFunction(() => document.querySelectorAll("[data-testid=history] tbody tr").length === 3);
  const runs = (await history.allTextContents()).join("\n");
  assert.match(runs, /Underwriter/);
  assert.equal((runs.match(/Rejected/g) ?? []).length, 2, runs);
});

test("a missing document is refused at the push; a failed run says what went wrong and Retry after the fix ends READY", async () => {
  await go("Push a role");
  const uri = deployment.uri("policy_admin_jd.txt");
  await page.fill("input[name=role_name]", "Policy Administrator");
  await page.fill("input[name=draup_role_id]", "draup-3001");
  await page.fill("textarea[name=documents]", uri);
  await page.getByRole("button", { name: "Push", exact: true }).click();
  // Refused before anything is queued: the form names the document and says it is not there.
  const refused = page.getByTestId("call-error");
  await refused.waitFor();
  const why = await refused.textContent();
  assert.match(why, /Documents #1 address/);
  assert.match(why, /^Nothing was sent on: correct what is listed below/);
  assert.ok(why.includes(uri), why);
  assert.match(why, /not found; check the URI and that the upload finished/);
  await screenshot(page, "07-push-refused");

  // The CSM uploads it, in an encoding that only reading it shows to be wrong (Latin-1), and
  // pushes again: queued, then failed with what to do.
  writeFileSync(join(deployment.docs, "policy_admin_jd.txt"), Buffer.from("Policy Administrator\n\nR\xe9sum\xe9 of the role.\n", "latin1"));
  await page.getByRole("button", { name: "Push", exact: true }).click();
  const pushed = page.getByTestId("push-result").filter({ hasText: "policy-administrator" });
  await pushed.waitFor();
  await pushed.locator("a").click();

  const explanation = page.getByTestId("explanation");
  await explanation.waitFor({ timeout: READY });
  const said = await explanation.textContent();
  assert.match(said, /A text document is not in UTF-8/);
  assert.match(said, /Save it as UTF-8 text, then press Retry/);
  assert.match(said, /DOCUMENT_NOT_UTF8/);
  assert.match(await page.getByTestId("run").locator("h1").textContent(), /Failed/);
  await screenshot(page, "08a-run-failed");

  // The CSM saves the document as UTF-8, and retries.
  writeFileSync(join(deployment.docs, "policy_admin_jd.txt"), "Policy Administrator\n\nMaintains insurance policies: issues, renews and amends them.\n");
  const failedRun = await page.getByTestId("run").getAttribute("data-workflow-id");
  await page.getByTestId("retry").click();
  await page.waitForFunction((old) => {
    const run = document.querySelector("[data-testid=run]");
    return run && run.getAttribute("data-workflow-id") !== old;
  }, failedRun);
  assert.match(await page.getByTestId("run").getAttribute("data-workflow-id"), /-2$/);
  await page.getByTestId("run").locator("h1 .badge", { hasText: "Ready" }).waitFor({ timeout: READY });
  await screenshot(page, "08b-retried-ready");
});

test("the live stream survives a server restart: it reconnects and catches up", async () => {
  await go("Push a role");
  for (const [n, role] of ["Customer Service Representative", "Actuarial Analyst"].entries()) {
    await pushRole(role, `draup-40${n}`, deployment.uri("jd.txt"));
  }
  await markPage();
  await go("Live");
  await liveStatus("Actuarial Analyst").waitFor();

  await deployment.stop("etter-server", "SIGKILL");
  await page.getByTestId("reconnecting").waitFor();
  assert.match(await page.getByTestId("connection").textContent(), /Reconnecting/);
  await screenshot(page, "09-reconnecting");

  await deployment.startServer();
  await page.getByTestId("connection").filter({ hasText: "Live" }).waitFor({ timeout: 30_000 });
  for (const role of ["Customer Service Representative", "Actuarial Analyst"]) {
    await liveStatus(role).filter({ hasText: "Ready" }).waitFor({ timeout: READY });
  }
  assert.equal(await page.getByTestId("reconnecting").count(), 0);
  await assertNotReloaded();
  await screenshot(page, "10-caught-up");
});

test("history pages with filters, and usage shows this month's tokens by step", async () => {
  await go("History");
  const rows = page.locator("[data-testid=history] tbody tr");
  await rows.first().waitFor();
  const all = await rows.allTextContents();
  assert.ok(all.length >= 6, all.join("\n"));
  await page.selectOption("select[name=status]", { label: "FAILED" });
  await page.waitForFunction(() => {
    const cells = [...document.querySelectorAll("[data-testid=history] tbody tr")];
    return cells.length > 0 && cells.every((r) => r.textContent.includes("Failed"));
  });
  assert.match((await rows.allTextContents()).join("\n"), /Policy Administrator/);
  await screenshot(page, "11-history-failed");

  await go("Usage");
  const usage = page.getByTestId("usage");
  await usage.waitFor();
  assert.match(await usage.textContent(), /[\d,]+ tokens used/);
  assert.match(await usage.locator("table").textContent(), /AI assessment/);
  await screenshot(page, "12-usage");
});

/** The timeline's bars of a step: [start, end] in ms, one per attempt. */
async function bars(step) {
  return page.locator(`[data-testid=timeline] rect[data-step="${step}"]`).evaluateAll((rects) =>
    rects.map((r) => [Number(r.getAttribute("data-start")), Number(r.getAttribute("data-end"))]),
  );
}

/** Waits for the run page to show a run other than `old`, then for it to be READY. */
async function followToReady(old) {
  await page.waitForFunction((id) => {
    const run = document.querySelector("[data-testid=run]");
    return run && run.getAttribute("data-workflow-id") !== id;
  }, old);
  await page.getByTestId("run").locator("h1 .badge", { hasText: "Ready" }).waitFor({ timeout: READY });
  return page.getByTestId("run").getAttribute("data-workflow-id");
}

test("the run page draws parallel steps side by side, a retried step as segments, what it produced and its documents", async () => {
  // A worker whose two AI branches take 2 s each and whose standardization fails once.
  await deployment.stop("etter-worker");
  await deployment.start("etter-worker-faults", "run", {
    ETTER_TEST_FAULTS: "slow:step_executor;slow:skills_miner;fail_once:standardization",
  });
  try {
    await go("Push a role");
    const pushed = await pushRole("Timeline Analyst", "draup-6001", deployment.uri("jd.txt"));
    await pushed.locator("a").click();
    await page.getByTestId("run").locator("h1 .badge", { hasText: "Ready" }).waitFor({ timeout: READY });

    const [executor] = await bars("step_executor");
    const [miner] = await bars("skills_miner");
    assert.ok(executor && miner, "both branches have a bar");
    // Side by side: the two branches ran over a common stretch of time.
    const overlap = Math.min(executor[1], miner[1]) - Math.max(executor[0], miner[0]);
    assert.ok(overlap > 1000, `the branches overlap by ${overlap} ms: ${executor} / ${miner}`);
    const [assessment] = await bars("ai_assessment");
    assert.ok(assessment[1] <= Math.min(executor[0], miner[0]) + 50, "the branches start after the assessment");
    // The retried step: a segment per attempt, the first given up on, the second completed.
    const standardization = page.locator('[data-testid=timeline] rect[data-step="standardization"]');
    assert.equal(await standardization.count(), 2);
    assert.match(await standardization.nth(0).getAttribute("class"), /retrying/);
    assert.match(await standardization.nth(1).getAttribute("class"), /completed/);

    // What the run produced: the leading tasks and skills with their scores.
    const outputs = page.getByTestId("outputs");
    assert.match(await outputs.locator(".counts").textContent(), /^\d+ tasks \(\d+ top\) · \d+ skills in \d+ clusters/);
    const tasks = await page.locator("[data-testid=leading-tasks] tbody tr").allTextContents();
    assert.ok(tasks.length > 0 && tasks.every((t) => /(\d\.\d\d){3}$/.test(t)), tasks.join("\n"));
    assert.ok((await page.locator("[data-testid=leading-skills] tbody tr").count()) > 0);
    // Its documents, each with the hash of what the run read.
    const hash = await page.locator("[data-testid=documents] td.hash").first().getAttribute("data-hash");
    assert.match(hash, /^[0-9a-f]{64}$/);
    assert.deepEqual(await page.locator("[data-testid=model]").allTextContents().then((m) => [...new Set(m)].sort()), ["offline", "—"]);
    await screenshot(page, "15-run-timeline");
  } finally {
    await deployment.stop("etter-worker-faults");
    await deployment.start("etter-worker", "run");
  }
});

test("a STALE re-run compared with the run before shows what ran again and what was reused", async () => {
  writeFileSync(join(deployment.docs, "process.md"), "# Claims\n\n1. Receive the claim.\n2. Assign an adjuster.\n");
  await go("Push a role");
  await page.fill("input[name=role_name]", "Stale Adjuster");
  await page.fill("input[name=draup_role_id]", "draup-7001");
  await page.fill("textarea[name=documents]", `${deployment.uri("jd.txt")}\nprocess_map=${deployment.uri("process.md")}`);
  await page.getByRole("button", { name: "Push", exact: true }).click();
  const pushed = page.getByTestId("push-result").filter({ hasText: "stale-adjuster" });
  await pushed.waitFor();
  await pushed.locator("a").click();
  const run = page.getByTestId("run");
  await run.locator("h1 .badge", { hasText: "Ready" }).waitFor({ timeout: READY });
  const first = await run.getAttribute("data-workflow-id");

  // The process map changes; the staleness scan marks the role STALE, and the page shows it live.
  writeFileSync(join(deployment.docs, "process.md"), "# Claims\n\n1. Receive the claim.\n2. Assign an adjuster.\n3. Close it.\n");
  await deployment.run("etter-worker", ["scan"]);
  await run.locator("h1 .badge", { hasText: "Stale" }).waitFor({ timeout: 30_000 });
  await page.getByTestId("retry").click();
  await followToReady(first);

  await page.getByTestId("compare-link").click();
  await page.getByTestId("comparison").waitFor();
  const row = (step) => page.locator(`[data-testid=compare-row][data-step="${step}"]`);
  assert.equal(await row("document_linking").getAttribute("data-ran"), "true");
  assert.equal(await row("document_linking").getAttribute("data-input-changed"), "true");
  assert.match(await page.locator('[data-testid=changes][data-step="document_linking"]').textContent(), /content [0-9a-f]{8}… → [0-9a-f]{8}…/);
  for (const reused of ["role_setup", "skills_miner", "step_executor"]) {
    assert.equal(await row(reused).getAttribute("data-reused"), "true", reused);
    assert.equal(await row(reused).getAttribute("data-ran"), "false", reused);
  }
  assert.match(await page.getByTestId("compare").textContent(), /\d+ steps ran again, \d+ reused/);
  await screenshot(page, "16-compare-stale");
});

test("a READY run re-run with another model records that model, and the comparison shows what changed", async () => {
  await go("Live");
  await page.locator('[data-testid=live-runs] tr[data-role="Claims Adjuster"] a').first().click();
  const run = page.getByTestId("run");
  await run.locator("h1 .badge", { hasText: "Ready" }).waitFor();
  const before = await run.getAttribute("data-workflow-id");
  await page.selectOption("select[name=model]", "offline-cautious");
  await page.getByTestId("retry-model").click();
  await followToReady(before);
  const assessment = page.locator('[data-testid=steps] tr[data-step="ai_assessment"] [data-testid=model]');
  assert.equal(await assessment.textContent(), "offline-cautious");
  assert.equal(await page.locator('[data-testid=steps] tr[data-step="role_setup"] [data-testid=model]').textContent(), "—");
  await screenshot(page, "17-run-other-model");

  await page.getByTestId("compare-link").click();
  const row = page.locator('[data-testid=compare-row][data-step="ai_assessment"]');
  await row.waitFor();
  assert.equal(await row.getAttribute("data-model-changed"), "true");
  assert.match(await row.textContent(), /offline → offline-cautious/);
  assert.match(await page.locator('[data-testid=changes][data-step="ai_assessment"]').textContent(), /confidence 0\.\d\d → 0\.\d\d/);
  await screenshot(page, "18-compare-model");
});

test("the live page lists the runs of the last 24 hours after a reload, and usage draws the month", async () => {
  await go("Live");
  await page.reload();
  await page.getByTestId("connection").filter({ hasText: "Live" }).waitFor();
  // Ended before the page opened: read from history, not from the stream.
  await liveStatus("Claims Adjuster").first().waitFor();
  assert.match(await page.getByTestId("live-summary").textContent(), /^\d+ active · [1-9]\d* ended in the last 24 hours/);
  await screenshot(page, "19-live-24h");

  await go("Usage");
  const chart = page.getByTestId("usage-chart");
  await chart.waitFor();
  const today = new Date().getUTCDate();
  const bar = chart.locator(`[data-testid=day-bar][data-day="${today}"]`);
  assert.ok(Number(await bar.getAttribute("data-tokens")) > 0, "today's bar carries today's tokens");
  assert.equal(await chart.getByTestId("budget-line").getAttribute("data-tokens"), "1000000");
  // The running total has a point for each day of the month so far, and rose above zero.
  const points = (await chart.getByTestId("cumulative").getAttribute("points")).split(" ").map((p) => p.split(",").map(Number));
  assert.equal(points.length, today, points.join(" "));
  const zero = Number(await chart.locator("line.axis").getAttribute("y1"));
  assert.ok(points[points.length - 1][1] < zero, `today's total is above the zero line (${zero}): ${points.join(" ")}`);
  await screenshot(page, "20-usage-chart");
});

test("with no worker a run waits with an ETA, and Cancel stops it", async () => {
  await deployment.stop("etter-worker");
  await go("Push a role");
  const pushed = await pushRole("Fraud Investigator", "draup-5001", deployment.uri("jd.txt"));
  await pushed.locator("a").click();
  const run = page.getByTestId("run");
  await run.locator("h1 .badge", { hasText: /Queued|Processing/ }).waitFor();
  assert.match(await page.getByTestId("eta").textContent(), /^done in (about \d+|under a second)/);
  await screenshot(page, "13-waiting");
  await page.getByTestId("cancel").click();
  await run.locator("h1 .badge", { hasText: "Cancelled" }).waitFor();
  assert.match(await page.getByTestId("explanation").textContent(), /^The run was cancelled: nothing more runs for it\.Press Retry/);
  assert.equal(await page.getByTestId("retry").count(), 1, "a cancelled run can be retried");
  await screenshot(page, "14-cancelled");
});
