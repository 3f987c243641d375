import { Code, ConnectError } from "@connectrpc/connect";

import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "./gen/google/rpc/error_details_pb.js";

/** gRPC status names by code. */
const CODE_NAMES: Record<number, string> = {
  [Code.Canceled]: "CANCELLED",
  [Code.Unknown]: "UNKNOWN",
  [Code.InvalidArgument]: "INVALID_ARGUMENT",
  [Code.DeadlineExceeded]: "DEADLINE_EXCEEDED",
  [Code.NotFound]: "NOT_FOUND",
  [Code.AlreadyExists]: "ALREADY_EXISTS",
  [Code.PermissionDenied]: "PERMISSION_DENIED",
  [Code.ResourceExhausted]: "RESOURCE_EXHAUSTED",
  [Code.FailedPrecondition]: "FAILED_PRECONDITION",
  [Code.Aborted]: "ABORTED",
  [Code.OutOfRange]: "OUT_OF_RANGE",
  [Code.Unimplemented]: "UNIMPLEMENTED",
  [Code.Internal]: "INTERNAL",
  [Code.Unavailable]: "UNAVAILABLE",
  [Code.DataLoss]: "DATA_LOSS",
  [Code.Unauthenticated]: "UNAUTHENTICATED",
};

export interface FieldViolation {
  field: string;
  description: string;
}

export interface QuotaViolation {
  subject: string;
  description: string;
}

export interface Precondition {
  type: string;
  subject: string;
  description: string;
}

/** A failed call, with the `google.rpc` details the server attached. */
export class EtterError extends Error {
  /** `INVALID_ARGUMENT`, `UNAVAILABLE`, … */
  readonly codeName: string;
  /** `ErrorInfo.reason`: `RATE_LIMITED`, `QUEUE_FULL`, … (empty when none). */
  reason = "";
  fieldViolations: FieldViolation[] = [];
  /** `RetryInfo.retry_delay`, in milliseconds. */
  retryAfterMs: number | undefined;
  quotaViolations: QuotaViolation[] = [];
  preconditions: Precondition[] = [];
  /** The call's trace id (`etter-trace-id`), to quote to support. */
  traceId = "";

  constructor(codeName: string, message: string) {
    super(message);
    this.name = "EtterError";
    this.codeName = codeName;
  }

  /** The typed error of anything a call threw. */
  static from(err: unknown): EtterError {
    if (err instanceof EtterError) return err;
    const connect = ConnectError.from(err);
    const error = new EtterError(CODE_NAMES[connect.code] ?? "UNKNOWN", connect.rawMessage);
    error.traceId = connect.metadata.get("etter-trace-id") ?? "";
    for (const info of connect.findDetails(ErrorInfoSchema)) error.reason ||= info.reason;
    for (const bad of connect.findDetails(BadRequestSchema)) {
      error.fieldViolations.push(...bad.fieldViolations.map((v) => ({ field: v.field, description: v.description })));
    }
    for (const retry of connect.findDetails(RetryInfoSchema)) {
      const delay = retry.retryDelay;
      if (delay) error.retryAfterMs = Number(delay.seconds) * 1000 + Math.round(delay.nanos / 1e6);
    }
    for (const quota of connect.findDetails(QuotaFailureSchema)) {
      error.quotaViolations.push(...quota.violations.map((v) => ({ subject: v.subject, description: v.description })));
    }
    for (const failure of connect.findDetails(PreconditionFailureSchema)) {
      error.preconditions.push(
        ...failure.violations.map((v) => ({ type: v.type, subject: v.subject, description: v.description })),
      );
    }
    return error;
  }
}
