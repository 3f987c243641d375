// Builds the operator console (console/) into dist/console/, which is checked in and compiled
// into etter-server. Deterministic: the same sources give the same bytes, so
// `scripts/codegen --check` can rebuild into a temporary directory and compare.
//
//   node scripts/build-console.mjs [outdir]      (npm run build:console)
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = process.argv[2] ?? join(root, "dist", "console");
mkdirSync(out, { recursive: true });

await build({
  entryPoints: { app: join(root, "console", "main.tsx") },
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: out,
  logLevel: "warning",
});
await build({
  entryPoints: { app: join(root, "console", "style.css") },
  bundle: true,
  minify: true,
  outdir: out,
  logLevel: "warning",
});
copyFileSync(join(root, "console", "index.html"), join(out, "index.html"));
