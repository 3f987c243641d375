import {
  type ConnectionState,
  type EtterClient,
  EtterError,
  isFinal,
  type QueuePosition,
  type RunStatus,
} from "../src/index.js";

export interface LiveState {
  /** The company's runs seen on the stream: active ones, and those that ended while watching. */
  runs: Map<string, RunStatus>;
  /** Queue positions and ETAs of queued runs, from heartbeats. */
  queue: Map<string, QueuePosition>;
  connection: ConnectionState | { state: "failed"; error: EtterError };
  /** Whether the opening snapshot has arrived. */
  loaded: boolean;
}

/**
 * The one WatchStatus stream of the console: a company's active runs. Every view reads from it;
 * the browser has only ~6 connections per origin, so nothing else streams.
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
        const { runs, queue } = this.state;
        switch (message.kind.case) {
          case "snapshot":
            for (const run of message.kind.value.runs) runs.set(run.workflowId, run);
            if (message.kind.value.last) this.state.loaded = true;
            break;
          case "event": {
            const event = message.kind.value;
            if (event.run) runs.set(event.workflowId, event.run);
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
