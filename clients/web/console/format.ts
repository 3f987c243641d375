import { timestampDate, type Timestamp } from "@bufbuild/protobuf/wkt";

import { RoleStatus, StepState, WaitReason } from "../src/index.js";

/** `PROCESSING` → `Processing`. */
export function statusLabel(status: RoleStatus): string {
  const name = RoleStatus[status] ?? "UNSPECIFIED";
  return name === "VALIDATION_ERROR" ? "Rejected" : name.charAt(0) + name.slice(1).toLowerCase();
}

/** The CSS class of a status badge. */
export function statusTone(status: RoleStatus): string {
  switch (status) {
    case RoleStatus.READY:
      return "ok";
    case RoleStatus.DEGRADED:
    case RoleStatus.STALE:
      return "warn";
    case RoleStatus.FAILED:
    case RoleStatus.VALIDATION_ERROR:
      return "bad";
    case RoleStatus.PROCESSING:
      return "busy";
    default:
      return "idle";
  }
}

/** A cost in millionths of `currency` (`12.35 USD`); empty without a currency (no prices set). */
export function cost(micros: bigint, currency: string): string {
  if (!currency) return "";
  return `${(Number(micros) / 1_000_000).toFixed(2)} ${currency}`;
}

/** What a waiting run waits for, in words; empty when it is not waiting. */
export function waitLabel(reason: WaitReason | undefined): string {
  switch (reason) {
    case WaitReason.DISPATCH:
      return "starting now";
    case WaitReason.COMPANY_CAP:
      return "waiting for the company's other runs";
    case WaitReason.GLOBAL_CAP:
      return "waiting for room in the pipeline";
    case WaitReason.TOKEN_BUDGET:
      return "held: the company's token budget is used up";
    case WaitReason.TEMPORAL_UNAVAILABLE:
      return "waiting: the workflow engine is unreachable";
    case WaitReason.NO_WORKER:
      return "waiting: no worker is running";
    case WaitReason.WORKER_SLOT:
      return "waiting for a free worker";
    case WaitReason.DOCUMENT_CHECKS:
      return "checking its documents";
    case WaitReason.DOCUMENT_STORE_UNAVAILABLE:
      return "waiting: the document store is unreachable";
    default:
      return "";
  }
}

export function stepLabel(state: StepState): string {
  const name = StepState[state] ?? "UNSPECIFIED";
  return name.charAt(0) + name.slice(1).toLowerCase();
}

/** `ai_assessment` → `AI assessment`. */
export function stepName(step: string): string {
  const words = step.split("_").join(" ");
  return words.replace(/^ai\b/, "AI").replace(/^\w/, (c) => c.toUpperCase());
}

/** 65 → `1 min 5 s`. */
export function seconds(total: number | bigint): string {
  const s = Math.max(0, Math.round(Number(total)));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min${s % 60 ? ` ${s % 60} s` : ""}`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function millis(ms: number | bigint): string {
  const n = Number(ms);
  return n < 1000 ? `${n} ms` : seconds(n / 1000);
}

export function time(ts: Timestamp | undefined): string {
  if (!ts || (ts.seconds === 0n && ts.nanos === 0)) return "—";
  return timestampDate(ts).toLocaleString();
}

export function tokens(n: number | bigint): string {
  return Number(n).toLocaleString();
}
