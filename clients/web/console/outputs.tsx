import { useEffect, useState } from "preact/hooks";

import {
  type CompareRunsResponse,
  DocumentType,
  type EtterClient,
  type OutputItem,
  OutputKind,
  type RunStatus,
  type StepComparison,
  type StepProgress,
  StepState,
} from "../src/index.js";
import { CallError, Empty, Loading, StatusBadge } from "./common.js";
import { millis, stepLabel, stepName, tokens } from "./format.js";

/** A score as the page shows it: `0.62`, a rank as `#3`, a proficiency as `4/5`. */
function score(name: string, value: number): string {
  if (name === "rank") return `#${value}`;
  if (name === "proficiency") return `${value}/5`;
  if (name === "skills") return `${value}`;
  return value.toFixed(2);
}

function kindName(kind: OutputKind): string {
  switch (kind) {
    case OutputKind.DOCUMENT:
      return "document";
    case OutputKind.TASK:
      return "task";
    case OutputKind.TOP_TASK:
      return "top task";
    case OutputKind.STANDARD_NAME:
      return "standard name";
    case OutputKind.SKILL:
      return "skill";
    case OutputKind.SKILL_CLUSTER:
      return "skill cluster";
    case OutputKind.CATALOG_ENTRY:
      return "catalog entry";
    case OutputKind.RESKILLING_PATH:
      return "reskilling path";
    case OutputKind.FEASIBILITY:
      return "feasibility";
    default:
      return "output";
  }
}

function documentType(type: DocumentType): string {
  switch (type) {
    case DocumentType.JOB_DESCRIPTION:
      return "Job description";
    case DocumentType.PROCESS_MAP:
      return "Process map";
    case DocumentType.SUPPORTING:
      return "Supporting";
    default:
      return "Document";
  }
}

/** What the run produced: counts, the leading tasks and skills with their scores, and why it needs review. */
export function OutputsPanel(props: { run: RunStatus }) {
  const outputs = props.run.outputs;
  if (!outputs) return null;
  return (
    <div data-testid="outputs">
      <h2>What it produced</h2>
      <p class="counts">
        {outputs.tasks} tasks ({outputs.topTasks} top) · {outputs.skills} skills in {outputs.skillClusters} clusters ·{" "}
        {outputs.catalogEntries} catalog entries · {outputs.reskillingPaths} reskilling paths · mean confidence{" "}
        {outputs.meanConfidence.toFixed(2)}
      </p>
      {outputs.reviewReasons.length > 0 && (
        <div class="explain warn" data-testid="review">
          <strong>Worth a person's look</strong>
          <ul>
            {outputs.reviewReasons.map((r) => (
              <li key={r.step + r.reason}>
                {stepName(r.step)}: {r.reason}
              </li>
            ))}
          </ul>
        </div>
      )}
      <div class="two">
        <table class="outputs" data-testid="leading-tasks">
          <thead>
            <tr>
              <th>Leading task</th>
              <th title="How much of the task AI could do alone">Automation</th>
              <th title="How much AI could help a person doing it">Augmentation</th>
              <th>Confidence</th>
            </tr>
          </thead>
          <tbody>
            {outputs.leadingTasks.map((t) => (
              <tr key={t.key}>
                <td>{t.name}</td>
                <td>{score("automation", t.scores.automation ?? 0)}</td>
                <td>{score("augmentation", t.scores.augmentation ?? 0)}</td>
                <td class={(t.scores.confidence ?? 1) < 0.5 ? "low" : ""}>{score("confidence", t.scores.confidence ?? 0)}</td>
              </tr>
            ))}
          </tbody>
        </table>
        <table class="outputs" data-testid="leading-skills">
          <thead>
            <tr>
              <th>Leading skill</th>
              <th>Confidence</th>
            </tr>
          </thead>
          <tbody>
            {outputs.leadingSkills.map((s) => (
              <tr key={s.key}>
                <td>{s.name}</td>
                <td class={(s.scores.confidence ?? 1) < 0.5 ? "low" : ""}>{score("confidence", s.scores.confidence ?? 0)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}

/** The run's documents, each with the hash of the content the run read. */
export function DocumentsPanel(props: { run: RunStatus }) {
  return (
    <div>
      <h2>Documents</h2>
      <table class="documents" data-testid="documents">
        <thead>
          <tr>
            <th>Type</th>
            <th>Where</th>
            <th>Content (SHA-256)</th>
          </tr>
        </thead>
        <tbody>
          {props.run.documents.map((d) => (
            <tr key={d.uri}>
              <td>{documentType(d.type)}</td>
              <td class="small">{d.uri}</td>
              <td class="hash" title={d.contentHash} data-hash={d.contentHash}>
                {d.contentHash ? `${d.contentHash.slice(0, 12)}…` : <span class="muted">not read yet</span>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

/** `a → b`, or just `a` when both are the same. */
function arrow(a: string, b: string): string {
  return a === b ? a : `${a || "—"} → ${b || "—"}`;
}

function side(progress: StepProgress | undefined): { state: string; took: string; tokens: string; model: string } {
  if (!progress) return { state: "not planned", took: "—", tokens: "—", model: "" };
  return {
    state: stepLabel(progress.status),
    took: progress.durationMs > 0n ? millis(progress.durationMs) : "—",
    tokens: progress.tokens?.totalTokens ? tokens(progress.tokens.totalTokens) : "—",
    model: progress.model,
  };
}

function itemLabel(item: OutputItem | undefined): string {
  return item ? `${kindName(item.kind)} “${item.name}”` : "";
}

/** How one output changed: its name, and each score that moved. */
function changeLabel(base: OutputItem | undefined, run: OutputItem | undefined): string {
  if (!base || !run) return itemLabel(run ?? base);
  const parts: string[] = [];
  if (base.name !== run.name) parts.push(`renamed from “${base.name}”`);
  if (base.contentHash !== run.contentHash) parts.push(`content ${base.contentHash.slice(0, 8)}… → ${run.contentHash.slice(0, 8)}…`);
  for (const name of new Set([...Object.keys(base.scores), ...Object.keys(run.scores)])) {
    const [a, b] = [base.scores[name], run.scores[name]];
    if (a !== b) parts.push(`${name} ${a === undefined ? "—" : score(name, a)} → ${b === undefined ? "—" : score(name, b)}`);
  }
  return `${itemLabel(run)}: ${parts.join(", ")}`;
}

function StepRow(props: { step: StepComparison }) {
  const { step } = props;
  const [base, run] = [side(step.base), side(step.run)];
  const reused = step.run?.status === StepState.REUSED;
  const differences = step.added.length + step.removed.length + step.changed.length;
  return (
    <>
      <tr
        class={`compare ${step.ran ? "ran" : reused ? "reused" : "idle"}`}
        data-testid="compare-row"
        data-step={step.step}
        data-ran={String(step.ran)}
        data-reused={String(reused)}
        data-input-changed={String(step.inputChanged)}
        data-model-changed={String(step.modelChanged)}
      >
        <td>{stepName(step.step)}</td>
        <td>{step.ran ? <span class="badge busy">ran</span> : reused ? <span class="badge">reused</span> : run.state}</td>
        <td>{step.inputChanged ? <span class="badge warn">changed</span> : step.base && step.run ? "same" : "—"}</td>
        <td>{arrow(base.took, run.took)}</td>
        <td>{arrow(base.tokens, run.tokens)}</td>
        <td class={step.modelChanged ? "changed" : ""}>{arrow(base.model, run.model) || "—"}</td>
        <td data-testid="difference">
          {differences === 0
            ? step.outputChanged
              ? "changed"
              : "—"
            : [
                step.added.length ? `+${step.added.length}` : "",
                step.removed.length ? `−${step.removed.length}` : "",
                step.changed.length ? `~${step.changed.length}` : "",
              ]
                .filter(Boolean)
                .join(" ")}
        </td>
      </tr>
      {differences > 0 && (
        <tr class="details">
          <td colSpan={7}>
            <ul data-testid="changes" data-step={step.step}>
              {step.added.map((i) => (
                <li key={`+${i.key}`} class="added">+ {itemLabel(i)}</li>
              ))}
              {step.removed.map((i) => (
                <li key={`-${i.key}`} class="removed">− {itemLabel(i)}</li>
              ))}
              {step.changed.map((c) => (
                <li key={`~${c.run?.key ?? c.base?.key}`} class="changed">~ {changeLabel(c.base, c.run)}</li>
              ))}
            </ul>
          </td>
        </tr>
      )}
    </>
  );
}

/** Two runs of one role side by side, step by step. */
export function CompareView(props: { client: EtterClient; base: string; workflowId: string }) {
  const [answer, setAnswer] = useState<CompareRunsResponse>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    let stale = false;
    setAnswer(undefined);
    props.client
      .compare(props.base, props.workflowId)
      .then((a) => !stale && (setAnswer(a), setError(undefined)))
      .catch((e: unknown) => !stale && setError(e));
    return () => {
      stale = true;
    };
  }, [props.client, props.base, props.workflowId]);
  if (error !== undefined) return <CallError error={error} />;
  if (!answer?.base || !answer.run) return <Loading what="the comparison" />;
  const { base, run } = answer;
  const ran = answer.steps.filter((s) => s.ran).length;
  const reused = answer.steps.filter((s) => s.run?.status === StepState.REUSED).length;
  return (
    <section data-testid="compare">
      <p>
        <a href={`#/run/${encodeURIComponent(run.workflowId)}`}>← Run {run.runNumber}</a>
      </p>
      <h1>
        {run.roleName}: run {base.runNumber} → run {run.runNumber}
      </h1>
      <p class="muted">
        <a href={`#/run/${encodeURIComponent(base.workflowId)}`}>{base.workflowId}</a> <StatusBadge status={base.status} /> →{" "}
        <a href={`#/run/${encodeURIComponent(run.workflowId)}`}>{run.workflowId}</a> <StatusBadge status={run.status} />
        {" · "}
        {ran} steps ran again, {reused} reused · tokens {tokens(base.tokensUsed?.totalTokens ?? 0)} →{" "}
        {tokens(run.tokensUsed?.totalTokens ?? 0)}
      </p>
      {answer.steps.length === 0 ? (
        <Empty>The runs have no steps to compare.</Empty>
      ) : (
        <table class="steps compare" data-testid="comparison">
          <thead>
            <tr>
              <th>Step</th>
              <th>This time</th>
              <th>Inputs</th>
              <th>Took</th>
              <th>Tokens</th>
              <th>Model</th>
              <th>Outputs</th>
            </tr>
          </thead>
          <tbody>
            {answer.steps.map((s) => (
              <StepRow key={s.step} step={s} />
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
