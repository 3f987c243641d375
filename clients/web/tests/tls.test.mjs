// The TypeScript client in Node.js over TLS: an etter-server that requires client certificates
// from the project CA (`scripts/services up` makes it under .etter/tls), reached with the CA and
// a client certificate through `nodeTransport`, and refused without the certificate. The console
// is served over HTTPS by the same listener.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { createHash, X509Certificate } from "node:crypto";
import { request } from "node:https";
import { join } from "node:path";
import { build } from "esbuild";

import { Deployment, launchBrowser, REPO, screenshot } from "./harness.mjs";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run scripts/services up and source .etter/services.env`);
  return value;
}

const pki = {
  ca: readFileSync(required("ETTER_TEST__TLS_CA")),
  cert: readFileSync(required("ETTER_TEST__TLS_CLIENT_CERT")),
  key: readFileSync(required("ETTER_TEST__TLS_CLIENT_KEY")),
};

/** The client's TypeScript, bundled for Node (its packages resolved from clients/web/node_modules). */
async function loadClient() {
  const dir = mkdtempSync(join(REPO, "clients", "web", "node_modules", ".etter-test-"));
  const entry = join(dir, "entry.ts");
  const outfile = join(dir, "client.mjs");
  const src = join(REPO, "clients", "web", "src");
  await build({
    stdin: {
      contents: `export { EtterClient } from ${JSON.stringify(join(src, "client.ts"))};\n` +
        `export { nodeTransport } from ${JSON.stringify(join(src, "node.ts"))};\n`,
      resolveDir: dir,
      loader: "ts",
      sourcefile: entry,
    },
    bundle: true,
    platform: "node",
    format: "esm",
    packages: "external",
    outfile,
    logLevel: "warning",
  });
  return import(outfile);
}

const deployment = new Deployment();
after(() => deployment.stopAll());
const ready = await deployment.start("etter-server", "serve", {
  ETTER_SERVER__TLS__CERT_FILE: required("ETTER_TEST__TLS_SERVER_CERT"),
  ETTER_SERVER__TLS__KEY_FILE: required("ETTER_TEST__TLS_SERVER_KEY"),
  ETTER_SERVER__TLS__CLIENT_CA_FILE: required("ETTER_TEST__TLS_CA"),
});
const origin = `https://localhost:${ready.grpc_addr.split(":").pop()}`;
const token = execFileSync(
  join(REPO, "target", "debug", "etter-server"),
  ["token", "--company", deployment.company, "--role", "viewer"],
  { env: deployment.env, encoding: "utf8" },
).trim();
const { EtterClient, nodeTransport } = await loadClient();

test("the client reaches a server that requires client certificates with the CA and its certificate", async () => {
  const client = new EtterClient(origin, token, nodeTransport(pki));
  const usage = await client.usage(deployment.company);
  assert.equal(usage.companyId, deployment.company);
});

test("without a client certificate the call is refused", async () => {
  const client = new EtterClient(origin, token, nodeTransport({ ca: pki.ca }));
  await assert.rejects(client.usage(deployment.company), (err) => {
    assert.match(String(err), /unavailable|certificate|socket|closed|reset/i);
    return true;
  });
});

test("the console works over HTTPS: signed in, live over grpc-web", async () => {
  // A server with TLS and no client certificates asked (a browser shows none here), and Chromium
  // trusting exactly its certificate's key (its SPKI hash), not every certificate.
  const https = new Deployment();
  try {
    const served = await https.start("etter-server", "serve", {
      ETTER_SERVER__TLS__CERT_FILE: required("ETTER_TEST__TLS_SERVER_CERT"),
      ETTER_SERVER__TLS__KEY_FILE: required("ETTER_TEST__TLS_SERVER_KEY"),
    });
    const certificate = new X509Certificate(readFileSync(required("ETTER_TEST__TLS_SERVER_CERT")));
    const spki = certificate.publicKey.export({ type: "spki", format: "der" });
    const pin = createHash("sha256").update(spki).digest("base64");
    const browser = await launchBrowser([`--ignore-certificate-errors-spki-list=${pin}`]);
    try {
      const page = await browser.newPage();
      await page.goto(`https://localhost:${served.grpc_addr.split(":").pop()}/console/`);
      await page.getByRole("heading", { name: "Development sign-in" }).waitFor();
      await page.fill("input[name=dev-company]", https.company);
      await page.getByRole("button", { name: "Sign in" }).click();
      await page.getByTestId("connection").filter({ hasText: "Live" }).waitFor();
      assert.equal(await page.getByTestId("company").textContent(), https.company);
      await screenshot(page, "https-live");
    } finally {
      await browser.close();
    }
  } finally {
    await https.stopAll();
  }
});

test("the console is served over HTTPS on the same port", async () => {
  const page = await new Promise((resolve, reject) => {
    const req = request(`${origin}/console/`, { ...pki }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (chunk) => (body += chunk));
      res.on("end", () => resolve({ status: res.statusCode, body }));
    });
    req.on("error", reject);
    req.end();
  });
  assert.equal(page.status, 200);
  assert.match(page.body, /<html/i);
});
