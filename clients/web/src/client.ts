/**
 * `EtterClient`: the verbs of the Python client (`push`, `pushBatch`, `status`, `watch`, `retry`, `compare`,
 * `cancel`, `history`, `usage`, `audit`) over the generated grpc-web client, with plain
 * arguments, errors decoded into {@link EtterError}, and a `watch` that reconnects and resumes
 * from its token without missing or repeating an event.
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

import { bearerAuth, type TokenSource } from "./auth.js";
import { EtterError } from "./errors.js";
import {
  type CompareRunsResponse,
  type GetUsageResponse,
  type HistoryResponse,
  type ListAuditEntriesResponse,
  type PushBatchResponse,
  type PushResponse,
  PipelineService,
  type WatchStatusResponse,
} from "./gen/etter/pipeline/v1/pipeline_service_pb.js";
import {
  type Document,
  DocumentSchema,
  DocumentType,
  Priority,
  RoleStatus,
  type RunOptions,
  RunOptionsSchema,
  type RunStatus,
} from "./gen/etter/pipeline/v1/resources_pb.js";

/** A document: a URI (a job description), or a URI with its type. */
export type DocumentInput = string | { type: "job_description" | "process_map" | "supporting"; uri: string };

/** Options of a run. */
export interface RunOptionsInput {
  /** Skip the enhancement steps (only the core assessment runs). */
  skipEnhancement?: boolean;
  /** Dispatch order inside the company. */
  priority?: "low" | "normal" | "high";
  /** Run every step again even when its inputs did not change. */
  forceRerun?: boolean;
  /** The run must have ended by then: refused if it would not, cancelled if still queued then. */
  deadline?: Date;
}

/** One role to push. */
export interface RoleInput extends RunOptionsInput {
  roleName: string;
  draupRoleId: string;
  documents: DocumentInput[];
  /** The caller's reference for a batch row (echoed in its result). */
  clientRef?: string;
}

/** What `watch` watches: one run, one batch, or a company's active runs. */
export type WatchScope = { workflowId: string } | { batchId: string } | { companyId: string };

/** The state of a watch's connection, for "live" / "reconnecting" indicators. */
export type ConnectionState =
  | { state: "connecting" }
  | { state: "live" }
  | { state: "reconnecting"; attempt: number; error: EtterError; retryInMs: number };

export interface WatchOptions {
  /** Resume a batch or company stream after this token (from a message's `resumeToken`). */
  resumeToken?: string;
  /** Resume a run stream after this event sequence. */
  afterSequence?: bigint;
  /** Stops the watch. */
  signal?: AbortSignal;
  /** Told whenever the connection changes. */
  onConnection?: (state: ConnectionState) => void;
  /** Longest wait between reconnection attempts (default 5 s). */
  maxBackoffMs?: number;
}

/** History filters. */
export interface HistoryFilter {
  statuses?: RoleStatus[];
  roleId?: string;
  batchId?: string;
  needsReview?: boolean;
  createdAfter?: Date;
  createdBefore?: Date;
  pageSize?: number;
  pageToken?: string;
}

/** Errors a reconnect cannot fix: the stream ends with them. */
const PERMANENT = new Set(["UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION"]);

const DOCUMENT_TYPES = {
  job_description: DocumentType.JOB_DESCRIPTION,
  process_map: DocumentType.PROCESS_MAP,
  supporting: DocumentType.SUPPORTING,
} as const;

const PRIORITIES = { low: Priority.LOW, normal: Priority.NORMAL, high: Priority.HIGH } as const;

/** A document message from a URI or a `{type, uri}`. */
export function toDocument(doc: DocumentInput): Document {
  return typeof doc === "string"
    ? create(DocumentSchema, { type: DocumentType.JOB_DESCRIPTION, uri: doc })
    : create(DocumentSchema, { type: DOCUMENT_TYPES[doc.type], uri: doc.uri });
}

function toOptions(options: RunOptionsInput): RunOptions {
  return create(RunOptionsSchema, {
    skipEnhancementWorkflows: options.skipEnhancement ?? false,
    forceRerun: options.forceRerun ?? false,
    priority: options.priority ? PRIORITIES[options.priority] : Priority.UNSPECIFIED,
    ...(options.deadline ? { deadline: timestampFromDate(options.deadline) } : {}),
  });
}

/** The request of a push, or of its quote. */
function pushRequest(companyId: string, role: RoleInput, id: string, validateOnly: boolean) {
  return {
    companyId,
    roleName: role.roleName,
    draupRoleId: role.draupRoleId,
    documents: role.documents.map(toDocument),
    options: toOptions(role),
    requestId: id,
    validateOnly,
  };
}

/** The request of a batch, or of its quote. */
function batchRequest(
  companyId: string,
  roles: RoleInput[],
  defaults: RunOptionsInput,
  id: string,
  validateOnly: boolean,
) {
  return {
    companyId,
    items: roles.map((role) => ({
      roleName: role.roleName,
      draupRoleId: role.draupRoleId,
      documents: role.documents.map(toDocument),
      clientRef: role.clientRef ?? "",
      ...(role.skipEnhancement !== undefined || role.priority !== undefined || role.deadline !== undefined
        ? { options: toOptions(role) }
        : {}),
    })),
    defaultOptions: toOptions(defaults),
    requestId: id,
    validateOnly,
  };
}

/** A fresh idempotency key. */
export function requestId(): string {
  return globalThis.crypto.randomUUID();
}

/** The states a run ends in. */
export const FINAL_STATUSES: readonly RoleStatus[] = [
  RoleStatus.READY,
  RoleStatus.DEGRADED,
  RoleStatus.FAILED,
  RoleStatus.CANCELLED,
  RoleStatus.STALE,
  RoleStatus.VALIDATION_ERROR,
];

/** Whether a run has ended. */
export function isFinal(status: RoleStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

/** `READY`, `PROCESSING`, … */
export function statusName(status: RoleStatus): string {
  return RoleStatus[status] ?? "UNSPECIFIED";
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** Makes the transport a client speaks over, with the client's interceptors. */
export type TransportFactory = (baseUrl: string, interceptors: Interceptor[]) => Transport;

/** grpc-web over the browser's `fetch` (the default). */
export const grpcWebTransport: TransportFactory = (baseUrl, interceptors) =>
  createGrpcWebTransport({ baseUrl, interceptors });

export class EtterClient {
  readonly raw: Client<typeof PipelineService>;

  /**
   * @param baseUrl the server's origin (`https://etter.example.com`, or `location.origin` for
   *   the console it serves)
   * @param token a bearer token, or a function returning the current one
   * @param transport how to reach it: grpc-web (the default, for browsers), or in Node.js
   *   `nodeTransport(...)` of `@etter/pipeline-client/node` for a private CA or a client
   *   certificate
   */
  constructor(
    readonly baseUrl: string,
    token: TokenSource,
    transport: TransportFactory = grpcWebTransport,
  ) {
    this.raw = createClient(PipelineService, transport(baseUrl, [bearerAuth(token)]));
  }

  private async call<T>(run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw EtterError.from(err);
    }
  }

  /** Queues one role; answers its run id, queue position, ETA and token estimate. */
  push(companyId: string, role: RoleInput, id: string = requestId()): Promise<PushResponse> {
    return this.call(() => this.raw.push(pushRequest(companyId, role, id, false)));
  }

  /**
   * What `push` would answer (plan, tokens and cost, queue position, wait reason, ETA) without
   * creating or reserving anything; refused as the push would be.
   */
  quote(companyId: string, role: RoleInput): Promise<PushResponse> {
    return this.call(() => this.raw.push(pushRequest(companyId, role, "", true)));
  }

  /** Queues many roles; invalid rows are answered per item, not thrown. */
  pushBatch(
    companyId: string,
    roles: RoleInput[],
    defaults: RunOptionsInput = {},
    id: string = requestId(),
  ): Promise<PushBatchResponse> {
    return this.call(() => this.raw.pushBatch(batchRequest(companyId, roles, defaults, id, false)));
  }

  /**
   * What `pushBatch` would answer — per row the outcome or its problems, the plan, tokens and ETA;
   * for the whole, tokens, cost and when the last run would end — without creating anything.
   */
  quoteBatch(companyId: string, roles: RoleInput[], defaults: RunOptionsInput = {}): Promise<PushBatchResponse> {
    return this.call(() => this.raw.pushBatch(batchRequest(companyId, roles, defaults, "", true)));
  }

  /** A run by workflow id. */
  async status(workflowId: string): Promise<RunStatus> {
    const answer = await this.call(() => this.raw.getStatus({ target: { case: "workflowId", value: workflowId } }));
    if (!answer.run) throw new EtterError("INTERNAL", "the server answered no run");
    return answer.run;
  }

  /**
   * Starts a new run of an ended run, reusing what it kept; `steps` re-runs those and what follows.
   * `model` asks another model (one the server allows) for the steps it re-runs; with no `steps`,
   * every step that asks a model re-runs, and a READY run may be retried so too.
   */
  async retry(workflowId: string, steps: string[] = [], id: string = requestId(), model = ""): Promise<RunStatus> {
    const answer = await this.call(() =>
      this.raw.retry({ target: { case: "workflowId", value: workflowId }, steps, requestId: id, model }),
    );
    if (!answer.run) throw new EtterError("INTERNAL", "the server answered no run");
    return answer.run;
  }

  /** Two runs of one role step by step: what ran or was reused, inputs, costs, models, output differences. */
  compare(baseWorkflowId: string, workflowId: string): Promise<CompareRunsResponse> {
    return this.call(() => this.raw.compareRuns({ baseWorkflowId, workflowId }));
  }

  /** Cancels a queued or running run. */
  async cancel(workflowId: string, reason = "", id: string = requestId()): Promise<RunStatus> {
    const answer = await this.call(() => this.raw.cancel({ workflowId, reason, requestId: id }));
    if (!answer.run) throw new EtterError("INTERNAL", "the server answered no run");
    return answer.run;
  }

  /** One page of a company's runs, newest first. */
  history(companyId: string, filter: HistoryFilter = {}): Promise<HistoryResponse> {
    return this.call(() =>
      this.raw.history({
        companyId,
        statuses: filter.statuses ?? [],
        roleId: filter.roleId ?? "",
        batchId: filter.batchId ?? "",
        ...(filter.needsReview !== undefined ? { needsReview: filter.needsReview } : {}),
        ...(filter.createdAfter ? { createTimeAfter: timestampFromDate(filter.createdAfter) } : {}),
        ...(filter.createdBefore ? { createTimeBefore: timestampFromDate(filter.createdBefore) } : {}),
        pageSize: filter.pageSize ?? 50,
        pageToken: filter.pageToken ?? "",
      }),
    );
  }

  /** Every run matching the filter, page after page. */
  async *historyAll(companyId: string, filter: HistoryFilter = {}): AsyncGenerator<RunStatus> {
    let pageToken = filter.pageToken ?? "";
    do {
      const page = await this.history(companyId, { ...filter, pageToken });
      yield* page.runs;
      pageToken = page.nextPageToken;
    } while (pageToken);
  }

  /** The company's token budget and usage in a month (`YYYY-MM`; this month by default). */
  usage(companyId: string, period = ""): Promise<GetUsageResponse> {
    return this.call(() => this.raw.getUsage({ companyId, period }));
  }

  /** One page of the audit log (admins). */
  audit(
    filter: { companyId?: string; actor?: string; action?: string; deniedOnly?: boolean; pageSize?: number; pageToken?: string } = {},
  ): Promise<ListAuditEntriesResponse> {
    return this.call(() =>
      this.raw.listAuditEntries({
        companyId: filter.companyId ?? "",
        actor: filter.actor ?? "",
        action: filter.action ?? "",
        deniedOnly: filter.deniedOnly ?? false,
        pageSize: filter.pageSize ?? 50,
        pageToken: filter.pageToken ?? "",
      }),
    );
  }

  /**
   * Every message of one WatchStatus scope. A dropped stream is reopened with the last resume
   * token (or after the last run event), so nothing is missed or repeated; waits grow up to
   * `maxBackoffMs`. A company watch runs until `signal` aborts (the server ends streams after
   * their lifetime: it is reopened too); a run or batch watch ends when the server ends it, once
   * everything in it has ended. Errors a reconnect cannot fix (authentication, permission, not
   * found, invalid) are thrown.
   */
  async *watch(scope: WatchScope, options: WatchOptions = {}): AsyncGenerator<WatchStatusResponse> {
    let resumeToken = options.resumeToken ?? "";
    let afterSequence = options.afterSequence ?? 0n;
    const maxBackoff = options.maxBackoffMs ?? 5000;
    const forever = "companyId" in scope;
    let attempt = 0;
    const request = () => ({
      scope:
        "workflowId" in scope
          ? { case: "workflowId" as const, value: scope.workflowId }
          : "batchId" in scope
            ? { case: "batchId" as const, value: scope.batchId }
            : { case: "companyId" as const, value: scope.companyId },
      resumeToken: "workflowId" in scope ? "" : resumeToken,
      afterSequence: "workflowId" in scope ? afterSequence : 0n,
    });
    options.onConnection?.({ state: "connecting" });
    while (!options.signal?.aborted) {
      try {
        // Live as soon as the server answers the call (a resumed stream may then be quiet).
        const onHeader = () => {
          attempt = 0;
          options.onConnection?.({ state: "live" });
        };
        const call = this.raw.watchStatus(request(), { ...(options.signal ? { signal: options.signal } : {}), onHeader });
        for await (const message of call) {
          if (message.resumeToken) resumeToken = message.resumeToken;
          if (message.kind.case === "event" && message.kind.value.sequence > afterSequence) {
            afterSequence = message.kind.value.sequence;
          }
          yield message;
        }
        if (!forever) return;
      } catch (err) {
        if (options.signal?.aborted) return;
        const error = EtterError.from(err);
        if (PERMANENT.has(error.codeName)) throw error;
        attempt += 1;
        const retryInMs = Math.min(maxBackoff, 250 * 2 ** Math.min(attempt - 1, 8));
        options.onConnection?.({ state: "reconnecting", attempt, error, retryInMs });
        await sleep(retryInMs, options.signal);
      }
    }
  }
}
