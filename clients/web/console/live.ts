import {
  type ConnectionState,
  type EtterClient,
  EtterError,
  isFinal,
  type QueuePosition,
  type RunStatus,
} from "../src/index.js";

/** How far back the Live page shows ended runs. */
export const RECENT_MS = 24 * 60 * 60 * 1000;
/** Runs of the last day read when the page opens, at most (newest first). */
const RECENT_MAX = 300;

export interface LiveState {
  /** The company's runs: active ones (from the stream), those of the last 24 hours (read once
   * from History when the page opens), and those that ended while watching. */
  runs: Map<string, RunStatus>;
  /** Queue positions and ETAs of queued runs, from heartbeats. */
  queue: Map<string, QueuePosition>;
  connection: ConnectionState | { state: "failed"; error: EtterError };
  /** Whether the opening snapshot has arrived. */
  loaded: boolean;
}

/**
 * The one WatchStatus stream of the console: a company's active runs. Every view reads from it;
 * the browser has only ~6 connections per origin, so nothing else streams. The runs of the last
 * 24 hours that had ended before the page opened are read once from History; every change after
 * that arrives on the stream.
 */
export class LiveRuns {
  state: LiveState = { runs: new Map(), queue: new Map(), connection: { state: "connecting" }, loaded: false };
  private listeners = new Set<() => void>();
  private abort = new AbortController();

  constructor(
    private readonly client: EtterClient,
    readonly company: string,
  ) {
    void this.run();
    void this.recent();
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stop(): void {
    this.abort.abort();
  }

  /** Puts a run the console just created or changed in the list without waiting for its event. */
  upsert(run: RunStatus): void {
    this.state.runs.set(run.workflowId, run);
    this.emit();
  }

  /** Keeps `run` unless a newer state of it is known (the stream may have been first). */
  private keep(run: RunStatus): void {
    const known = this.state.runs.get(run.workflowId);
    if (!known || known.sequence < run.sequence) this.state.runs.set(run.workflowId, run);
  }

  /** Reads the company's runs created in the last 24 hours, newest first. A failure leaves the
   * page with what the stream brings; the stream's own errors are what the page reports. */
  private async recent(): Promise<void> {
    let pageToken = "";
    let read = 0;
    try {
      do {
        const page = await this.client.history(this.company, {
          createdAfter: new Date(Date.now() - RECENT_MS),
          pageSize: 100,
          pageToken,
        });
        for (const run of page.runs) this.keep(run);
        read += page.runs.length;
        pageToken = page.nextPageToken;
        this.emit();
      } while (pageToken && read < RECENT_MAX && !this.abort.signal.aborted);
    } catch {
      // Nothing to add: the live stream still shows the active runs.
    }
  }

  private emit(): void {
    this.state = { ...this.state };
    for (const listener of this.listeners) listener();
  }

  private async run(): Promise<void> {
    try {
      for await (const message of this.client.watch(
        { companyId: this.company },
        {
          signal: this.abort.signal,
          onConnection: (connection) => {
            this.state.connection = connection;
            this.emit();
          },
        },
      )) {
        const { queue } = this.state;
        switch (message.kind.case) {
          case "snapshot":
            for (const run of message.kind.value.runs) this.keep(run);
            if (message.kind.value.last) this.state.loaded = true;
            break;
          case "event": {
            const event = message.kind.value;
            if (event.run) this.keep(event.run);
            if (event.run && isFinal(event.run.status)) queue.delete(event.workflowId);
            this.state.loaded = true;
            break;
          }
          case "heartbeat":
            queue.clear();
            for (const position of message.kind.value.queue) queue.set(position.workflowId, position);
            this.state.loaded = true;
            break;
          default:
            break;
        }
        this.emit();
      }
    } catch (err) {
      this.state.connection = { state: "failed", error: EtterError.from(err) };
      this.emit();
    }
  }
}
