// A live deployment for the console tests: the built etter-server and etter-worker
// (target/debug, or $CARGO_TARGET_DIR/debug) on a private data dir (SQLite store and graph), the
// shared Temporal dev server (from .etter/services.env) on a task queue of its own, documents
// under a private file root, the console's dev login on. And Chromium, driven by playwright-core.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, copyFileSync, createWriteStream } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

export const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const BIN = join(process.env.CARGO_TARGET_DIR || join(REPO, "target"), "debug");
export const ARTIFACTS = process.env.ETTER_ARTIFACTS_DIR
  ? join(process.env.ETTER_ARTIFACTS_DIR, "console")
  : join(process.env.CARGO_TARGET_DIR || join(REPO, "target"), "test-artifacts", "console");

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/services up and source .etter/services.env`);
  return value;
}

export class Deployment {
  constructor() {
    for (const binary of ["etter-server", "etter-worker", "etter-worker-faults"]) {
      if (!existsSync(join(BIN, binary))) {
        throw new Error(`${join(BIN, binary)} is not built: cargo build --workspace --all-targets`);
      }
    }
    this.root = mkdtempSync(join(tmpdir(), "etter-console-"));
    this.docs = join(this.root, "docs");
    mkdirSync(this.docs);
    copyFileSync(join(REPO, "testdata", "documents", "software_engineer_jd.txt"), join(this.docs, "jd.txt"));
    this.company = `web${randomBytes(5).toString("hex")}`;
    this.env = {
      ...process.env,
      ETTER_DATA_DIR: join(this.root, "data"),
      ETTER_STORE__URL: "",
      ETTER_GRAPH__URI: "",
      ETTER_REDIS__URL: "",
      ETTER_TEMPORAL__ADDRESS: required("ETTER_TEMPORAL__ADDRESS"),
      ETTER_TEMPORAL__NAMESPACE: required("ETTER_TEMPORAL__NAMESPACE"),
      ETTER_TEMPORAL__TASK_QUEUE: `etter-console-${this.company}`,
      ETTER_DOCUMENTS__FILE_ROOT: this.docs,
      ETTER_SERVER__LISTEN: "127.0.0.1:0",
      ETTER_SERVER__METRICS_LISTEN: "127.0.0.1:0",
      ETTER_SERVER__CONSOLE_DEV_LOGIN: "true",
      ETTER_SERVER__WATCH_POLL_INTERVAL: "100ms",
      ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL: "1s",
      ETTER_DISPATCH__POLL_INTERVAL: "200ms",
      ETTER_WORKER__METRICS_LISTEN: "127.0.0.1:0",
      ETTER_WORKER__STALENESS_SCAN_INTERVAL: "0s",
      ETTER_LIMITS__CALLS_PER_MINUTE: "1000000",
      ETTER_LIMITS__BURST: "100000",
      ETTER_LIMITS__REFUSED_PER_MINUTE: "1000000",
      // A budget well above what the tests use (about 150,000 tokens): the usage chart draws it.
      ETTER_LIMITS__TOKEN_BUDGET_PER_MONTH: "1000000",
      ETTER_LOG__FILTER: "warn",
    };
    this.processes = new Map();
  }

  /** Starts a binary and resolves with its readiness line. */
  async start(binary, command, env = {}) {
    const log = createWriteStream(join(this.root, `${binary}.log`), { flags: "a" });
    const child = spawn(join(BIN, binary), [command], { env: { ...this.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    child.stderr.pipe(log);
    this.processes.set(binary, child);
    const lines = createInterface({ input: child.stdout });
    const ready = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${binary} printed no readiness line within 60 s`)), 60_000);
      child.once("exit", (code) => reject(new Error(`${binary} exited (${code}) before it was ready; see ${join(this.root, binary + ".log")}`)));
      lines.on("line", (line) => {
        try {
          const parsed = JSON.parse(line);
          if ("ready" in parsed) {
            clearTimeout(timer);
            resolve(parsed);
          }
        } catch {
          // not the readiness line
        }
      });
    });
    child.removeAllListeners("exit");
    return ready;
  }

  /** Runs a one-shot command of a binary (`etter-worker scan`) and resolves with its stdout. */
  async run(binary, args) {
    const child = spawn(join(BIN, binary), args, { env: this.env, stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (err += chunk));
    const code = await new Promise((resolve) => child.once("exit", resolve));
    if (code !== 0) throw new Error(`${binary} ${args.join(" ")} exited ${code}: ${err}`);
    return out;
  }

  async startServer() {
    // The first start picks a free port; a restart takes the same one, as a real restart would.
    const ready = await this.start("etter-server", "serve", this.addr ? { ETTER_SERVER__LISTEN: this.addr } : {});
    this.addr = ready.grpc_addr;
    this.url = `http://${this.addr}/console/`;
  }

  async stop(binary, signal = "SIGTERM") {
    const child = this.processes.get(binary);
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    await exited;
    clearTimeout(timer);
  }

  async stopAll() {
    for (const binary of [...this.processes.keys()]) await this.stop(binary);
  }

  uri(name) {
    return `file://${join(this.docs, name)}`;
  }
}

export async function launchBrowser(extraArgs = []) {
  const executablePath = process.env.ETTER_TOOLS__CHROMIUM || "/usr/bin/chromium";
  return chromium.launch({
    executablePath,
    args: [
      ...extraArgs,
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}

/** Saves a screenshot of the page as a test artifact. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
}
