import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";

import { type RunStatus, StepState } from "../src/index.js";
import { millis, seconds, stepLabel, stepName } from "./format.js";

/** Width of the drawing in SVG units; it scales to the page. */
const WIDTH = 1000;
/** Where the bars start: the step names are left of it. */
const LABELS = 190;
const ROW = 24;
const AXIS = 26;

/** An axis label: `450 ms`, `2.5 s`, `3 min 20 s`. */
function tick(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return seconds(ms / 1000);
}

function ms(ts: Timestamp | undefined): number | undefined {
  if (!ts || (ts.seconds === 0n && ts.nanos === 0)) return undefined;
  return timestampMs(ts);
}

/** The CSS class of an attempt's bar. */
function tone(state: StepState): string {
  switch (state) {
    case StepState.COMPLETED:
      return "completed";
    case StepState.FAILED:
      return "failed";
    case StepState.RETRYING:
      return "retrying";
    case StepState.RUNNING:
      return "running";
    case StepState.CANCELLED:
      return "cancelled";
    default:
      return "other";
  }
}

/**
 * The run's steps on one time axis: each attempt a bar from its start to its end (a retried
 * step shows a segment per attempt), so steps that ran at the same time (the pipeline's parallel
 * branches) are bars side by side over the same stretch of time. Reused and skipped steps have
 * no time of their own and say so on their row. A running step's bar grows to now.
 */
export function Timeline(props: { run: RunStatus; now?: number }) {
  const steps = props.run.progress?.steps ?? [];
  const now = props.now ?? Date.now();
  const spans = steps.flatMap((step) =>
    step.attemptSpans.flatMap((span) => {
      const start = ms(span.startedAt);
      if (start === undefined) return [];
      return [{ step, span, start, end: ms(span.finishedAt) ?? now }];
    }),
  );
  if (spans.length === 0) {
    return <p class="muted" data-testid="timeline-empty">No step has started yet.</p>;
  }
  const t0 = Math.min(...spans.map((s) => s.start));
  const t1 = Math.max(t0 + 1, ...spans.map((s) => s.end));
  const x = (t: number) => LABELS + ((t - t0) / (t1 - t0)) * (WIDTH - LABELS - 8);
  const height = steps.length * ROW + AXIS;
  const ticks = [0, 0.25, 0.5, 0.75, 1];
  return (
    <svg
      class="timeline"
      data-testid="timeline"
      viewBox={`0 0 ${WIDTH} ${height}`}
      role="img"
      aria-label={`Timeline of ${steps.length} steps over ${millis(t1 - t0)}`}
    >
      {ticks.map((f) => (
        <g key={f} class="tick">
          <line x1={x(t0 + f * (t1 - t0))} x2={x(t0 + f * (t1 - t0))} y1={0} y2={height - AXIS + 4} />
          <text x={x(t0 + f * (t1 - t0))} y={height - 8} text-anchor={f === 0 ? "start" : f === 1 ? "end" : "middle"}>
            {f === 0 ? "0" : tick(f * (t1 - t0))}
          </text>
        </g>
      ))}
      {steps.map((step, row) => {
        const y = row * ROW;
        const own = spans.filter((s) => s.step === step);
        return (
          <g key={step.name} data-step={step.name} class={`lane ${stepLabel(step.status).toLowerCase()}`}>
            <text class="label" x={4} y={y + ROW / 2 + 4}>
              {stepName(step.name)}
            </text>
            {own.map(({ span, start, end }) => (
              <rect
                key={span.attempt}
                class={`bar ${tone(span.status)}`}
                data-testid="bar"
                data-step={step.name}
                data-attempt={span.attempt}
                data-start={start}
                data-end={end}
                x={x(start)}
                y={y + 4}
                width={Math.max(2, x(end) - x(start))}
                height={ROW - 8}
                rx={3}
              >
                <title>
                  {stepName(step.name)}, attempt {span.attempt}: {stepLabel(span.status).toLowerCase()} in {millis(end - start)}
                  {span.errorCode ? ` (${span.errorCode})` : ""}
                </title>
              </rect>
            ))}
            {own.length === 0 && (
              <text
                class={`note ${step.status === StepState.REUSED ? "reused" : ""}`}
                data-testid={step.status === StepState.REUSED ? "reused" : undefined}
                x={LABELS + 4}
                y={y + ROW / 2 + 4}
              >
                {step.status === StepState.REUSED
                  ? `reused${step.reusedFrom ? ` from ${step.reusedFrom}` : ""}`
                  : stepLabel(step.status).toLowerCase()}
              </text>
            )}
          </g>
        );
      })}
    </svg>
  );
}
