import { useEffect, useState } from "preact/hooks";

import { type EtterClient, isFinal, RoleStatus, type RunStatus, StepState } from "../src/index.js";
import { CallError, Loading, Progress, StatusBadge } from "./common.js";
import { explain, fieldLabel } from "./explain.js";
import { millis, seconds, stepLabel, stepName, time, tokens, waitLabel } from "./format.js";
import type { LiveRuns } from "./live.js";
import type { PageConfig } from "./login.js";
import { DocumentsPanel, OutputsPanel } from "./outputs.js";
import { Timeline } from "./timeline.js";

/** Whether a step did work (attempts and tokens mean something). */
function ran(state: StepState): boolean {
  return ![StepState.SKIPPED, StepState.PENDING, StepState.CANCELLED, StepState.UNSPECIFIED].includes(state);
}

const RETRYABLE = [RoleStatus.FAILED, RoleStatus.DEGRADED, RoleStatus.CANCELLED, RoleStatus.STALE];
/** States a Retry with another model accepts: the retryable ones and READY. */
const REMODELLABLE = [RoleStatus.READY, ...RETRYABLE];
const CANCELLABLE = [RoleStatus.QUEUED, RoleStatus.PROCESSING];

/** One run: where it is, its steps with durations, tokens and errors, and what to do next. */
export function RunView(props: { client: EtterClient; live: LiveRuns; workflowId: string; config: PageConfig | undefined }) {
  const { client, live, workflowId } = props;
  const [fetched, setFetched] = useState<RunStatus>();
  const [error, setError] = useState<unknown>();
  const [actionError, setActionError] = useState<unknown>();
  const [busy, setBusy] = useState("");
  const models = props.config?.models ?? [];
  const [model, setModel] = useState("");
  const livePosition = live.state.queue.get(workflowId);
  // Read once; after that the company stream's events carry the run's whole status, so the
  // newer of the two is shown without another call per event.
  useEffect(() => {
    let stale = false;
    client
      .status(workflowId)
      .then((r) => !stale && (setFetched(r), setError(undefined)))
      .catch((e: unknown) => !stale && setError(e));
    return () => {
      stale = true;
    };
  }, [client, workflowId]);
  const streamed = live.state.runs.get(workflowId);
  const run = streamed && (!fetched || streamed.sequence >= fetched.sequence) ? streamed : fetched;
  const setRun = (next: RunStatus) => {
    setFetched(next);
    live.upsert(next);
  };

  if (error !== undefined && !run) return <CallError error={error} />;
  if (!run) return <Loading what="the run" />;

  const act = async (what: "retry" | "remodel" | "cancel") => {
    setBusy(what);
    setActionError(undefined);
    try {
      if (what === "retry" || what === "remodel") {
        const chosen = what === "remodel" ? model || models[0] || "" : "";
        const next = await client.retry(run.workflowId, [], undefined, chosen);
        live.upsert(next);
        location.hash = `#/run/${encodeURIComponent(next.workflowId)}`;
      } else {
        setRun(await client.cancel(run.workflowId, "cancelled from the console"));
      }
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy("");
    }
  };

  const failure = run.error;
  const explanation = failure?.code ? explain(failure.code, failure.recoverable) : undefined;
  const position = livePosition?.positionInQueue ?? run.positionInQueue;
  const eta = livePosition?.estimatedDurationSeconds ?? run.estimatedDurationSeconds;
  const waiting = waitLabel(livePosition?.waitReason ?? run.waitReason);
  const temporal = props.config?.temporal_ui_url
    ? `${props.config.temporal_ui_url.replace(/\/$/, "")}/namespaces/${props.config.temporal_namespace}/workflows/${run.workflowId}`
    : "";

  return (
    <section class="run" data-testid="run" data-workflow-id={run.workflowId}>
      <p><a href="#/live">← Live</a></p>
      <h1>
        {run.roleName} <StatusBadge status={run.status} />
      </h1>
      <dl class="facts">
        <dt>Run</dt>
        <dd>{run.workflowId} (run {run.runNumber})</dd>
        <dt>Progress</dt>
        <dd><Progress run={run} /> {run.currentSteps.length > 0 && <>now: {run.currentSteps.map(stepName).join(", ")}</>}</dd>
        {run.status === RoleStatus.QUEUED && (
          <>
            <dt>Queue</dt>
            <dd data-testid="queue">position {position || "—"}</dd>
          </>
        )}
        {waiting && !isFinal(run.status) && (
          <>
            <dt>Waiting</dt>
            <dd data-testid="waiting">{waiting}</dd>
          </>
        )}
        {CANCELLABLE.includes(run.status) && (
          <>
            <dt>ETA</dt>
            <dd data-testid="eta">{eta > 0n ? `done in about ${seconds(eta)}` : "done in under a second"} <span class="muted small">(from measured step times)</span></dd>
          </>
        )}
        <dt>Tokens</dt>
        <dd>{tokens(run.tokensUsed?.totalTokens ?? 0)} used of about {tokens(run.tokenEstimate?.totalTokens ?? 0)} estimated</dd>
        <dt>Created</dt>
        <dd>{time(run.createTime)}{run.endTime && isFinal(run.status) ? ` · ended ${time(run.endTime)}` : ""}</dd>
        {run.batchId && (
          <>
            <dt>Batch</dt>
            <dd><a href={`#/history/${encodeURIComponent(run.batchId)}`}>{run.batchId}</a></dd>
          </>
        )}
        {run.supersededBy && (
          <>
            <dt>Retried as</dt>
            <dd><a href={`#/run/${encodeURIComponent(run.supersededBy)}`}>{run.supersededBy}</a></dd>
          </>
        )}
        {run.supersedes && (
          <>
            <dt>Retry of</dt>
            <dd>
              <a href={`#/run/${encodeURIComponent(run.supersedes)}`}>{run.supersedes}</a> ·{" "}
              <a data-testid="compare-link" href={`#/compare/${encodeURIComponent(run.supersedes)}/${encodeURIComponent(run.workflowId)}`}>
                compare the two runs
              </a>
            </dd>
          </>
        )}
        {run.dashboardUrl && (
          <>
            <dt>Result</dt>
            <dd><a href={run.dashboardUrl} target="_blank" rel="noreferrer">Open in the Etter dashboard</a></dd>
          </>
        )}
        {temporal && (
          <>
            <dt>Workflow</dt>
            <dd><a href={temporal} target="_blank" rel="noreferrer">Temporal Web UI</a></dd>
          </>
        )}
        <dt>Trace id</dt>
        <dd class="small">{run.traceId || "—"}</dd>
      </dl>

      {failure?.code && explanation && (
        <div
          class={`explain ${run.status === RoleStatus.FAILED || run.status === RoleStatus.VALIDATION_ERROR ? "bad" : "warn"}`}
          data-testid="explanation"
        >
          <strong>{explanation.what}</strong>
          <p>{explanation.next}</p>
          {run.fieldViolations.length > 0 && (
            <ul>
              {run.fieldViolations.map((v) => (
                <li key={v.field + v.description}>{fieldLabel(v.field)}: {v.description}</li>
              ))}
            </ul>
          )}
          <p class="muted small">
            {failure.step && <>Step {stepName(failure.step)} · </>}
            {failure.code}: {failure.message}
          </p>
        </div>
      )}

      <div class="actions">
        {RETRYABLE.includes(run.status) && !run.supersededBy && (
          <button onClick={() => act("retry")} disabled={busy !== ""} data-testid="retry">
            {busy === "retry" ? "Retrying…" : "Retry"}
          </button>
        )}
        {REMODELLABLE.includes(run.status) && !run.supersededBy && models.length > 0 && (
          <span class="remodel">
            <select name="model" aria-label="Model" value={model || models[0]} onChange={(e) => setModel(e.currentTarget.value)}>
              {models.map((m) => (
                <option key={m} value={m}>{m}</option>
              ))}
            </select>
            <button class="secondary" onClick={() => act("remodel")} disabled={busy !== ""} data-testid="retry-model">
              {busy === "remodel" ? "Re-running…" : "Re-run the AI steps with this model"}
            </button>
          </span>
        )}
        {CANCELLABLE.includes(run.status) && (
          <button class="danger" onClick={() => act("cancel")} disabled={busy !== ""} data-testid="cancel">
            {busy === "cancel" ? "Cancelling…" : "Cancel"}
          </button>
        )}
      </div>
      {actionError !== undefined && <CallError error={actionError} />}

      <h2>Timeline</h2>
      <Timeline run={run} />

      <OutputsPanel run={run} />

      <h2>Steps</h2>
      <table class="steps" data-testid="steps">
        <thead>
          <tr>
            <th>Step</th>
            <th>Status</th>
            <th>Started</th>
            <th>Took</th>
            <th>Attempts</th>
            <th>Tokens</th>
            <th>Model</th>
            <th>Problem</th>
          </tr>
        </thead>
        <tbody>
          {(run.progress?.steps ?? []).map((step) => (
            <tr key={step.name} class={`step ${stepLabel(step.status).toLowerCase()}`} data-step={step.name}>
              <td>
                {stepName(step.name)}
                {step.critical && <span class="muted small"> · critical</span>}
              </td>
              <td>
                {stepLabel(step.status)}
                {step.status === StepState.REUSED && step.reusedFrom && <div class="muted small">from {step.reusedFrom}</div>}
              </td>
              <td>{time(step.startedAt)}</td>
              <td>{step.durationMs > 0n ? millis(step.durationMs) : "—"}</td>
              <td>{ran(step.status) && step.attempts ? step.attempts : "—"}</td>
              <td>{ran(step.status) && step.tokens?.totalTokens ? tokens(step.tokens.totalTokens) : "—"}</td>
              <td class="small" data-testid="model">{step.model || "—"}</td>
              <td>
                {step.error?.code && step.status === StepState.COMPLETED ? (
                  <span class="muted small">
                    An earlier attempt failed ({step.error.code}); attempt {step.attempts} succeeded.
                  </span>
                ) : (
                  step.error?.code && (
                    <>
                      {explain(step.error.code, step.error.recoverable).what}
                      <div class="muted small">{step.error.message}</div>
                    </>
                  )
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>

      <DocumentsPanel run={run} />
    </section>
  );
}
