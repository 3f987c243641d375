import type { ComponentChildren } from "preact";

import { EtterError, type RoleStatus, type RunStatus, StepState } from "../src/index.js";
import { callProblem, fieldLabel } from "./explain.js";
import { statusLabel, statusTone } from "./format.js";

export function StatusBadge(props: { status: RoleStatus }) {
  return (
    <span class={`badge ${statusTone(props.status)}`} data-status={statusLabel(props.status)}>
      {statusLabel(props.status)}
    </span>
  );
}

/** Steps that produced their output (completed or reused) of the steps planned. The contract's
 * `progress.current` also counts failed and skipped steps, which reads as "all done" on a failed run. */
export function Progress(props: { run: RunStatus }) {
  const total = props.run.progress?.total ?? 0;
  const steps = props.run.progress?.steps ?? [];
  const done = steps.length
    ? Math.min(total, steps.filter((s) => s.status === StepState.COMPLETED || s.status === StepState.REUSED).length)
    : (props.run.progress?.current ?? 0);
  const pct = total ? Math.round((done / total) * 100) : 0;
  return (
    <span class="progress" title={`${done} of ${total} planned steps done`}>
      <span class="bar"><span style={{ width: `${pct}%` }} /></span>
      <span class="count">{done}/{total}</span>
    </span>
  );
}

/** A failed call, in plain language, with the server's field problems and the trace id. */
export function CallError(props: { error: unknown; children?: ComponentChildren }) {
  const error = EtterError.from(props.error);
  return (
    <div class="banner bad" role="alert" data-testid="call-error">
      <strong>{callProblem(error.codeName, error.message, error.reason, error.fieldViolations.length > 0)}</strong>
      {error.fieldViolations.length > 0 && (
        <ul>
          {error.fieldViolations.map((v) => (
            <li key={v.field + v.description}>
              {fieldLabel(v.field)}: {v.description}
            </li>
          ))}
        </ul>
      )}
      {error.quotaViolations.map((q) => (
        <div key={q.subject}>{q.description}</div>
      ))}
      {error.retryAfterMs !== undefined && <div>Try again in {Math.ceil(error.retryAfterMs / 1000)} s.</div>}
      {props.children}
      {error.traceId && <div class="muted small">Trace id for support: {error.traceId}</div>}
    </div>
  );
}

export function Loading(props: { what: string }) {
  return (
    <div class="loading" role="status">
      <span class="spinner" /> Loading {props.what}…
    </div>
  );
}

export function Empty(props: { children: ComponentChildren }) {
  return <div class="empty">{props.children}</div>;
}
