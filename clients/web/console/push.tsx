import { useState } from "preact/hooks";

import {
  BatchItemOutcome,
  type EtterClient,
  parseRolesCsv,
  type PushBatchResponse,
  type PushResponse,
  requestId,
  type RoleInput,
} from "../src/index.js";
import { CallError } from "./common.js";
import { fieldLabel } from "./explain.js";
import { cost, seconds, tokens } from "./format.js";
import type { LiveRuns } from "./live.js";

/** Lines of `URI` or `process_map=URI` / `supporting=URI`. */
function documentsFrom(text: string): RoleInput["documents"] {
  return text
    .split(/\n/)
    .map((l) => l.trim())
    .filter(Boolean)
    .map((line) => {
      const [kind, ...rest] = line.split("=");
      const uri = rest.join("=");
      return (kind === "process_map" || kind === "supporting") && uri ? { type: kind, uri } : line;
    });
}

/** One role: name, Draup id, documents by URI, options. */
export function PushView(props: { client: EtterClient; live: LiveRuns; company: string }) {
  const [roleName, setRoleName] = useState("");
  const [draupRoleId, setDraupRoleId] = useState("");
  const [documents, setDocuments] = useState("");
  const [skipEnhancement, setSkipEnhancement] = useState(false);
  const [priority, setPriority] = useState<"low" | "normal" | "high">("normal");
  const [result, setResult] = useState<PushResponse>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  // One idempotency key per filled-in form: pressing Push twice queues the role once.
  const [key, setKey] = useState(requestId);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    setResult(undefined);
    try {
      const answer = await props.client.push(
        props.company,
        { roleName: roleName.trim(), draupRoleId: draupRoleId.trim(), documents: documentsFrom(documents), skipEnhancement, priority },
        key,
      );
      setResult(answer);
      setKey(requestId());
      props.client.status(answer.workflowId).then((run) => props.live.upsert(run)).catch(() => undefined);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <section>
      <h1>Push a role</h1>
      <form class="card form" onSubmit={submit} data-testid="push-form">
        <label>
          Role name
          <input name="role_name" value={roleName} onInput={(e) => setRoleName(e.currentTarget.value)} placeholder="Claims Adjuster" />
        </label>
        <label>
          Draup role ID
          <input name="draup_role_id" value={draupRoleId} onInput={(e) => setDraupRoleId(e.currentTarget.value)} placeholder="draup-role-12345" />
        </label>
        <label>
          Documents <span class="muted">(one address per line: file:// or s3://; prefix process_map= for a process map)</span>
          <textarea name="documents" rows={3} value={documents} onInput={(e) => setDocuments(e.currentTarget.value)} placeholder="s3://bucket/claims-adjuster-jd.pdf" />
        </label>
        <div class="row">
          <label class="check">
            <input name="skip_enhancement" type="checkbox" checked={skipEnhancement} onChange={(e) => setSkipEnhancement(e.currentTarget.checked)} />
            core assessment only (skip enhancement steps)
          </label>
          <label>
            Priority{" "}
            <select name="priority" value={priority} onChange={(e) => setPriority(e.currentTarget.value as "low" | "normal" | "high")}>
              <option value="low">low</option>
              <option value="normal">normal</option>
              <option value="high">high</option>
            </select>
          </label>
        </div>
        <button type="submit" disabled={busy}>{busy ? "Pushing…" : "Push"}</button>
      </form>
      {error !== undefined && <CallError error={error} />}
      {result && (
        <div class="banner ok" role="status" data-testid="push-result">
          {result.created ? "Queued" : "Already queued"}: <a href={`#/run/${encodeURIComponent(result.workflowId)}`}>{result.workflowId}</a>
          {result.positionInQueue > 0 && <> · position {result.positionInQueue}</>}
          {result.estimatedDurationSeconds > 0n && <> · done in about {seconds(result.estimatedDurationSeconds)}</>}
          {result.tokenEstimate && <> · about {tokens(result.tokenEstimate.totalTokens)} tokens</>}
        </div>
      )}
    </section>
  );
}

const OUTCOME_LABEL: Record<number, string> = {
  [BatchItemOutcome.ACCEPTED]: "Queued",
  [BatchItemOutcome.REJECTED]: "Rejected",
  [BatchItemOutcome.DUPLICATE]: "Duplicate in this file",
  [BatchItemOutcome.EXISTING]: "Already running",
};

/** The outcomes a check (a quote) foresees. */
const QUOTED_LABEL: Record<number, string> = {
  [BatchItemOutcome.ACCEPTED]: "Would be queued",
  [BatchItemOutcome.REJECTED]: "Would be rejected",
  [BatchItemOutcome.DUPLICATE]: "Duplicate in this file",
  [BatchItemOutcome.EXISTING]: "Already running",
};

/** The CSV row (header = row 1) of the first item with the same role name as item `index`. */
function firstRowOf(result: PushBatchResponse, roles: RoleInput[] | undefined, index: number): string {
  const name = roles?.[index]?.roleName.trim().toLowerCase();
  const first = result.items.find((i) => i.index < index && roles?.[i.index]?.roleName.trim().toLowerCase() === name);
  return first ? String(first.index + 2) : "above";
}

/** A CSV of roles: every row answered, bad rows explained. */
export function BatchView(props: { client: EtterClient; company: string }) {
  const [roles, setRoles] = useState<RoleInput[]>();
  const [fileName, setFileName] = useState("");
  const [fileError, setFileError] = useState("");
  const [skipEnhancement, setSkipEnhancement] = useState(false);
  const [result, setResult] = useState<PushBatchResponse>();
  // The result is a check's (a quote): nothing was created.
  const [checked, setChecked] = useState(false);
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState<"" | "check" | "push">("");
  const [key, setKey] = useState(requestId);

  const choose = async (e: Event) => {
    const file = (e.currentTarget as HTMLInputElement).files?.[0];
    setResult(undefined);
    setError(undefined);
    setRoles(undefined);
    setFileError("");
    if (!file) return;
    setFileName(file.name);
    const parsed = parseRolesCsv(await file.text());
    if (parsed.error !== undefined) setFileError(parsed.error);
    else setRoles(parsed.roles);
    setKey(requestId());
  };

  const send = async (quote: boolean) => {
    if (!roles) return;
    setBusy(quote ? "check" : "push");
    setError(undefined);
    try {
      setResult(
        quote
          ? await props.client.quoteBatch(props.company, roles, { skipEnhancement })
          : await props.client.pushBatch(props.company, roles, { skipEnhancement }, key),
      );
      setChecked(quote);
    } catch (err) {
      setError(err);
    } finally {
      setBusy("");
    }
  };

  const submit = (e: Event) => {
    e.preventDefault();
    void send(false);
  };

  const labels = checked ? QUOTED_LABEL : OUTCOME_LABEL;
  const counts = new Map<number, number>();
  for (const item of result?.items ?? []) counts.set(item.outcome, (counts.get(item.outcome) ?? 0) + 1);
  const summary = [...counts.entries()].map(([outcome, n]) => `${n} ${labels[outcome]?.toLowerCase() ?? "other"}`).join(", ");
  const price = result?.tokenEstimate ? cost(result.tokenEstimate.costMicros, result.tokenEstimate.currency) : "";
  const eta = result?.progress?.estimatedDurationSeconds ?? 0n;

  return (
    <section>
      <h1>Upload a CSV batch</h1>
      <p class="muted">
        Columns: <code>role_name</code>, <code>draup_role_id</code>, <code>documents</code> (addresses separated by <code>;</code>),
        optionally <code>client_ref</code>. Good rows are queued even when others have problems.
      </p>
      <form class="card form" onSubmit={submit}>
        <label>
          CSV file
          <input name="csv" type="file" accept=".csv,text/csv" onChange={choose} />
        </label>
        {fileError && <div class="banner bad" role="alert" data-testid="csv-error">{fileName}: {fileError}</div>}
        {roles && <p data-testid="csv-summary">{fileName}: {roles.length} role{roles.length === 1 ? "" : "s"} read.</p>}
        <label class="check">
          <input type="checkbox" checked={skipEnhancement} onChange={(e) => setSkipEnhancement(e.currentTarget.checked)} />
          core assessment only (skip enhancement steps)
        </label>
        <div class="actions">
          <button type="button" class="secondary" disabled={!roles || busy !== ""} onClick={() => void send(true)} data-testid="check-first">
            {busy === "check" ? "Checking…" : "Check first"}
          </button>
          <button type="submit" disabled={!roles || busy !== ""}>{busy === "push" ? "Uploading…" : "Push the batch"}</button>
        </div>
      </form>
      {error !== undefined && <CallError error={error} />}
      {result && (
        <div data-testid={checked ? "batch-quote" : "batch-result"}>
          {checked ? (
            <div class="banner" role="status" data-testid="quote-summary">
              Checked, nothing created yet: {summary}.
              {result.tokenEstimate && <> About {tokens(result.tokenEstimate.totalTokens)} tokens{price && <> ({price})</>}.</>}
              {eta > 0n && <> All done in about {seconds(eta)}.</>} Fix the rows below if needed, then push the batch.
            </div>
          ) : (
            <div class="banner ok" role="status">
              Batch <a href={`#/history/${encodeURIComponent(result.batchId)}`}>{result.batchId}</a>: {summary}.
              {result.tokenEstimate && <> About {tokens(result.tokenEstimate.totalTokens)} tokens.</>} Follow them in <a href="#/live">Live</a>.
            </div>
          )}
          <table class="runs" data-testid="batch-rows">
            <thead>
              <tr>
                <th>Row</th>
                <th>Role</th>
                <th>Outcome</th>
                <th>What to fix</th>
              </tr>
            </thead>
            <tbody>
              {result.items.map((item) => {
                const role = roles?.[item.index];
                return (
                  <tr key={item.index} data-outcome={labels[item.outcome] ?? ""} class={item.outcome === BatchItemOutcome.REJECTED ? "rejected" : ""}>
                    <td>{item.index + 2}</td>
                    <td>
                      {item.workflowId && !(checked && item.outcome !== BatchItemOutcome.EXISTING) ? (
                        <a href={`#/run/${encodeURIComponent(item.workflowId)}`}>{role?.roleName || "(no name)"}</a>
                      ) : (
                        role?.roleName || "(no name)"
                      )}
                      {item.clientRef && <div class="muted small">{item.clientRef}</div>}
                    </td>
                    <td>{labels[item.outcome] ?? "?"}</td>
                    <td>
                      {item.outcome === BatchItemOutcome.DUPLICATE ? (
                        `Same role as row ${firstRowOf(result, roles, item.index)}; this row was ignored.`
                      ) : item.fieldViolations.length > 0 ? (
                        <ul class="problems">
                          {item.fieldViolations.map((v) => (
                            <li key={v.field + v.description}>{fieldLabel(v.field)}: {v.description}</li>
                          ))}
                        </ul>
                      ) : item.outcome === BatchItemOutcome.EXISTING ? (
                        "This role is already queued or running."
                      ) : (
                        "—"
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </div>
      )}
    </section>
  );
}
