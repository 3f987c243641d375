import { timestampMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";

import {
  type EtterClient,
  FINAL_STATUSES,
  type GetUsageResponse,
  type HistoryResponse,
  isFinal,
  RoleStatus,
  type RunStatus,
} from "../src/index.js";
import { CallError, Empty, Loading, Progress, StatusBadge } from "./common.js";
import { seconds, stepName, time, tokens, waitLabel } from "./format.js";
import { type LiveRuns, RECENT_MS } from "./live.js";

/** When a run last mattered: its end, or its creation while it has not ended. */
function lastMoment(run: RunStatus): number {
  const ts = run.endTime ?? run.createTime;
  return ts ? Number(ts.seconds) * 1000 : 0;
}

/** The company's active runs and its runs of the last 24 hours, live: active ones first, then
 * the ended ones, newest first. */
export function LiveView(props: { live: LiveRuns }) {
  const { runs, queue, loaded } = props.live.state;
  const newest = (a: RunStatus, b: RunStatus) => Number((b.createTime?.seconds ?? 0n) - (a.createTime?.seconds ?? 0n));
  const since = Date.now() - RECENT_MS;
  const active = [...runs.values()].filter((r) => !isFinal(r.status)).sort(newest);
  const ended = [...runs.values()].filter((r) => isFinal(r.status) && lastMoment(r) >= since).sort(newest);
  const all = [...active, ...ended];
  if (!loaded && all.length === 0) return <Loading what="the company's runs" />;
  return (
    <section>
      <h1>Live</h1>
      <p class="muted" data-testid="live-summary">
        {active.length} active · {ended.length} ended in the last 24 hours. Updates arrive as they happen.
      </p>
      {all.length === 0 ? (
        <Empty>
          No runs are active for this company, and none ran in the last 24 hours. <a href="#/push">Push a role</a> or{" "}
          <a href="#/batch">upload a CSV</a> to start.
        </Empty>
      ) : (
        <table class="runs" data-testid="live-runs">
          <thead>
            <tr>
              <th>Role</th>
              <th>Status</th>
              <th>Step</th>
              <th>Progress</th>
              <th>Queue / ETA</th>
              <th>Tokens</th>
              <th>Ended</th>
            </tr>
          </thead>
          <tbody>
            {all.map((run) => {
              const position = queue.get(run.workflowId);
              const place = position?.positionInQueue ?? run.positionInQueue;
              const eta = position?.estimatedDurationSeconds ?? run.estimatedDurationSeconds;
              const waiting = waitLabel(position?.waitReason ?? run.waitReason);
              return (
                <tr key={run.workflowId} data-workflow-id={run.workflowId} data-role={run.roleName}>
                  <td>
                    <a href={`#/run/${encodeURIComponent(run.workflowId)}`}>{run.roleName}</a>
                    <div class="muted small">{run.workflowId}</div>
                  </td>
                  <td><StatusBadge status={run.status} /></td>
                  <td data-testid="step">{run.currentStep ? stepName(run.currentStep) : isFinal(run.status) ? "—" : waiting || "waiting"}</td>
                  <td><Progress run={run} /></td>
                  <td>
                    {run.status === RoleStatus.QUEUED && place > 0 ? `#${place} · ` : ""}
                    {isFinal(run.status) ? "done" : eta > 0n ? `about ${seconds(eta)}` : "—"}
                  </td>
                  <td>{tokens(run.tokensUsed?.totalTokens ?? 0)}</td>
                  <td class="small">{isFinal(run.status) ? time(run.endTime) : "—"}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

const FILTER_STATUSES = [RoleStatus.QUEUED, RoleStatus.PROCESSING, ...FINAL_STATUSES];

/** Every run of the company, newest first, a page at a time, with filters. */
export function HistoryView(props: { client: EtterClient; company: string; batchId?: string }) {
  const [status, setStatus] = useState<RoleStatus | 0>(0);
  const [batchId, setBatchId] = useState(props.batchId ?? "");
  const [roleId, setRoleId] = useState("");
  const [needsReview, setNeedsReview] = useState(false);
  const [after, setAfter] = useState("");
  const [tokensStack, setTokensStack] = useState<string[]>([""]);
  const [page, setPage] = useState<HistoryResponse>();
  const [error, setError] = useState<unknown>();
  const [loading, setLoading] = useState(true);
  const pageToken = tokensStack[tokensStack.length - 1] ?? "";

  useEffect(() => {
    let stale = false;
    setLoading(true);
    props.client
      .history(props.company, {
        statuses: status ? [status] : [],
        batchId: batchId.trim(),
        roleId: roleId.trim(),
        ...(needsReview ? { needsReview: true } : {}),
        ...(after ? { createdAfter: new Date(after) } : {}),
        pageSize: 25,
        pageToken,
      })
      .then((p) => !stale && (setPage(p), setError(undefined)))
      .catch((e: unknown) => !stale && setError(e))
      .finally(() => !stale && setLoading(false));
    return () => {
      stale = true;
    };
  }, [props.client, props.company, status, batchId, roleId, needsReview, after, pageToken]);

  const refilter = <T,>(set: (v: T) => void) => (v: T) => {
    set(v);
    setTokensStack([""]);
  };

  return (
    <section>
      <h1>History</h1>
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          Status
          <select name="status" value={status} onChange={(e) => refilter(setStatus)(Number(e.currentTarget.value) as RoleStatus)}>
            <option value={0}>any</option>
            {FILTER_STATUSES.map((s) => (
              <option key={s} value={s}>{RoleStatus[s]}</option>
            ))}
          </select>
        </label>
        <label>
          Batch
          <input name="batch" placeholder="batch-…" value={batchId} onChange={(e) => refilter(setBatchId)(e.currentTarget.value)} />
        </label>
        <label>
          Role id
          <input name="role" placeholder="cr-…" value={roleId} onChange={(e) => refilter(setRoleId)(e.currentTarget.value)} />
        </label>
        <label>
          Since
          <input name="after" type="date" value={after} onChange={(e) => refilter(setAfter)(e.currentTarget.value)} />
        </label>
        <label class="check">
          <input name="review" type="checkbox" checked={needsReview} onChange={(e) => refilter(setNeedsReview)(e.currentTarget.checked)} />
          needs review
        </label>
      </form>
      {error !== undefined && <CallError error={error} />}
      {loading && !page ? (
        <Loading what="history" />
      ) : page && page.runs.length === 0 ? (
        <Empty>No runs match these filters.</Empty>
      ) : (
        page && (
          <table class="runs" data-testid="history">
            <thead>
              <tr>
                <th>Role</th>
                <th>Status</th>
                <th>Created</th>
                <th>Ended</th>
                <th>Tokens</th>
                <th>Batch</th>
              </tr>
            </thead>
            <tbody>
              {page.runs.map((run) => (
                <tr key={run.workflowId} data-workflow-id={run.workflowId}>
                  <td>
                    <a href={`#/run/${encodeURIComponent(run.workflowId)}`}>{run.roleName}</a>
                    {run.needsReview && <span class="badge warn">review</span>}
                  </td>
                  <td><StatusBadge status={run.status} /></td>
                  <td>{time(run.createTime)}</td>
                  <td>{time(run.endTime)}</td>
                  <td>{tokens(run.tokensUsed?.totalTokens ?? 0)}</td>
                  <td class="small">{run.batchId || "—"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        )
      )}
      <div class="pager">
        <button disabled={tokensStack.length <= 1 || loading} onClick={() => setTokensStack(tokensStack.slice(0, -1))}>
          ← Newer
        </button>
        <span class="muted">Page {tokensStack.length}</span>
        <button
          disabled={!page?.nextPageToken || loading}
          onClick={() => page?.nextPageToken && setTokensStack([...tokensStack, page.nextPageToken])}
        >
          Older →
        </button>
      </div>
    </section>
  );
}

const DAY_MS = 24 * 60 * 60 * 1000;

/** `1234567` → `1.2M`, for axis labels. */
function compact(n: number): string {
  return new Intl.NumberFormat("en", { notation: "compact", maximumFractionDigits: 1 }).format(n);
}

/**
 * Tokens per day of the month as bars, their running total as a line, and the month's budget as
 * a dashed line on the same scale: how fast the budget goes, drawn in the page (inline SVG).
 */
export function UsageChart(props: { usage: GetUsageResponse }) {
  const { usage } = props;
  const start = usage.periodStart ? timestampMs(usage.periodStart) : 0;
  const end = usage.periodEnd ? timestampMs(usage.periodEnd) : start + 31 * DAY_MS;
  const days = Math.max(1, Math.round((end - start) / DAY_MS));
  const perDay = new Map(usage.days.map((d) => [d.date, Number(d.totalTokens)]));
  // The running total stops today in the current month (the rest has not happened).
  const lastDay = Math.min(days, Math.ceil((Math.min(Date.now(), end) - start) / DAY_MS));
  const daily: number[] = [];
  const total: number[] = [];
  let sum = 0;
  for (let i = 0; i < days; i++) {
    const used = perDay.get(new Date(start + i * DAY_MS).toISOString().slice(0, 10)) ?? 0;
    sum += used;
    daily.push(used);
    total.push(sum);
  }
  const budget = Number(usage.budgetTokens);
  const top = Math.max(budget, sum, ...daily, 1) * 1.1;
  const [W, H, left, right, up, down] = [900, 240, 56, 12, 10, 26];
  const plotW = W - left - right;
  const plotH = H - up - down;
  const x = (i: number) => left + (i / days) * plotW;
  const y = (v: number) => up + plotH - (v / top) * plotH;
  const barW = (plotW / days) * 0.7;
  const line = total
    .slice(0, Math.max(1, lastDay))
    .map((v, i) => `${(x(i) + x(i + 1)) / 2},${y(v)}`)
    .join(" ");
  const labelled = [0, 7, 14, 21, days - 1];
  return (
    <svg class="chart" data-testid="usage-chart" viewBox={`0 0 ${W} ${H}`} role="img" aria-label={`Tokens per day in ${usage.period}`}>
      <line class="axis" x1={left} x2={W - right} y1={y(0)} y2={y(0)} />
      {[0, top / 2, top / 1.1].map((v) => (
        <text key={v} x={left - 6} y={y(v) + 4} text-anchor="end">{compact(Math.round(v))}</text>
      ))}
      {daily.map((v, i) =>
        v > 0 ? (
          <rect
            key={i}
            class="day"
            data-testid="day-bar"
            data-day={i + 1}
            data-tokens={v}
            x={(x(i) + x(i + 1) - barW) / 2}
            y={y(v)}
            width={barW}
            height={Math.max(1, y(0) - y(v))}
          >
            <title>{`day ${i + 1}: ${v.toLocaleString()} tokens`}</title>
          </rect>
        ) : null,
      )}
      <polyline class="cumulative" data-testid="cumulative" points={line}>
        <title>{`${sum.toLocaleString()} tokens so far this month`}</title>
      </polyline>
      {budget > 0 && (
        <g>
          <line class="budget" data-testid="budget-line" data-tokens={budget} x1={left} x2={W - right} y1={y(budget)} y2={y(budget)} />
          <text x={W - right} y={y(budget) - 4} text-anchor="end">budget {budget.toLocaleString()}</text>
        </g>
      )}
      {labelled.map((i) => (
        <text key={i} x={(x(i) + x(i + 1)) / 2} y={H - 8} text-anchor="middle">{i + 1}</text>
      ))}
    </svg>
  );
}

/** This month's token use against the budget, per day and per step. */
export function UsageView(props: { client: EtterClient; company: string }) {
  const [period, setPeriod] = useState(new Date().toISOString().slice(0, 7));
  const [usage, setUsage] = useState<GetUsageResponse>();
  const [error, setError] = useState<unknown>();
  useEffect(() => {
    setUsage(undefined);
    props.client
      .usage(props.company, period)
      .then((u) => (setUsage(u), setError(undefined)))
      .catch(setError);
  }, [props.client, props.company, period]);

  const budget = Number(usage?.budgetTokens ?? 0n);
  const used = Number(usage?.usedTokens ?? 0n);
  const reserved = Number(usage?.reservedTokens ?? 0n);
  const pct = (n: number) => `${budget ? Math.min(100, (n / budget) * 100) : 0}%`;
  return (
    <section>
      <h1>Usage</h1>
      <label>
        Month <input name="period" type="month" value={period} onChange={(e) => setPeriod(e.currentTarget.value)} />
      </label>
      {error !== undefined && <CallError error={error} />}
      {!usage && error === undefined && <Loading what="usage" />}
      {usage && (
        <div data-testid="usage">
          <p class="usage-line">
            <strong>{tokens(used)}</strong> tokens used, {tokens(reserved)} reserved by queued and running runs
            {budget ? <>, of a budget of {tokens(budget)} ({tokens(Number(usage.remainingTokens ?? 0n))} left)</> : <>; no budget is set</>}.
            {usage.currency && <> Cost so far: {(Number(usage.usedCostMicros) / 1e6).toFixed(2)} {usage.currency}.</>}
          </p>
          {budget > 0 && (
            <div class="budget" title="used · reserved · left">
              <span class="used" style={{ width: pct(used) }} />
              <span class="reserved" style={{ width: pct(reserved) }} />
            </div>
          )}
          <UsageChart usage={usage} />
          <p class="muted small">Bars: tokens used each day (UTC) · line: the month's total so far{budget ? " · dashed: the budget" : ""}.</p>
          {usage.steps.length === 0 ? (
            <Empty>No tokens were used in {usage.period}.</Empty>
          ) : (
            <table class="steps">
              <thead>
                <tr>
                  <th>Step</th>
                  <th>Tokens</th>
                  <th>Share</th>
                </tr>
              </thead>
              <tbody>
                {[...usage.steps]
                  .sort((a, b) => Number(b.totalTokens - a.totalTokens))
                  .map((s) => (
                    <tr key={s.step}>
                      <td>{stepName(s.step)}</td>
                      <td>{tokens(s.totalTokens)}</td>
                      <td>{used ? `${Math.round((Number(s.totalTokens) / used) * 100)} %` : "—"}</td>
                    </tr>
                  ))}
              </tbody>
            </table>
          )}
        </div>
      )}
    </section>
  );
}
