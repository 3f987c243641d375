"""Typed exceptions for the control plane's errors.

Every error the server returns is a ``google.rpc.Status`` with an ``ErrorInfo`` (a stable
``reason`` such as ``RATE_LIMITED``) and the standard detail that fits: ``BadRequest`` field
violations, ``RetryInfo`` (when to try again), ``QuotaFailure`` (what limit, with the numbers),
``PreconditionFailure``. :func:`from_rpc_error` turns a ``grpc.RpcError`` into the
:class:`EtterError` subclass of its status code, with those details as attributes.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "Aborted",
    "DeadlineExceeded",
    "EtterError",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QuotaViolation",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    """One invalid field of a request: its path (``documents[0].uri``) and what is wrong."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted limit: what it is about (``company:acme``) and the numbers."""

    subject: str
    description: str


@dataclass
class EtterError(Exception):
    """An error answered by the control plane."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    field_violations: list[FieldViolation] = field(default_factory=list)
    retry_after: _dt.timedelta | None = None
    quota_violations: list[QuotaViolation] = field(default_factory=list)
    preconditions: list[FieldViolation] = field(default_factory=list)
    trace_id: str = ""

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        parts = [f"{self.code.name}: {self.message}"]
        if self.reason:
            parts.append(f"reason={self.reason}")
        if self.field_violations:
            parts.append("fields=" + ", ".join(f"{v.field}: {v.description}" for v in self.field_violations))
        if self.retry_after is not None:
            parts.append(f"retry after {self.retry_after.total_seconds():.3f}s")
        if self.quota_violations:
            parts.append("quota=" + "; ".join(f"{q.subject}: {q.description}" for q in self.quota_violations))
        if self.trace_id:
            parts.append(f"trace_id={self.trace_id}")
        return " | ".join(parts)


class InvalidArgument(EtterError):
    """The request is invalid; :attr:`field_violations` names every bad field."""


class Unauthenticated(EtterError):
    """No valid bearer token (missing, expired, wrong signature or audience, ...)."""


class PermissionDenied(EtterError):
    """The caller may not do this, or does not act for the company named."""


class NotFound(EtterError):
    """The run, role or batch does not exist, or belongs to a company the caller cannot see."""


class FailedPrecondition(EtterError):
    """The current state refuses the request; :attr:`preconditions` says what and what to do."""


class Aborted(EtterError):
    """A concurrent request changed what this one was about; look again and decide."""


class ResourceExhausted(EtterError):
    """A limit: :attr:`retry_after` for a rate limit, :attr:`quota_violations` for caps and budgets."""


class Unavailable(EtterError):
    """A dependency is down for now; retrying later can succeed."""


class DeadlineExceeded(EtterError):
    """The call took longer than its deadline."""


class Internal(EtterError):
    """A server bug; the server's log has the details (find them by :attr:`trace_id`)."""


_BY_CODE: dict[grpc.StatusCode, type[EtterError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: Internal,
}


def metadata_value(metadata: Any, key: str) -> str:
    """The first value of ``key`` in call metadata (sync tuples or ``grpc.aio`` Metadata)."""
    for item in metadata or ():
        k, v = item[0], item[1]
        if k == key:
            return v.decode() if isinstance(v, bytes) else str(v)
    return ""


def from_status(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None, trace_id: str = ""
) -> EtterError:
    """The typed error of a decoded ``google.rpc.Status`` (``None`` when there were no details)."""
    cls = _BY_CODE.get(code, EtterError)
    error = cls(code=code, message=message, trace_id=trace_id)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            error.reason, error.domain = info.reason, info.domain
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            error.field_violations += [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            error.retry_after = retry.retry_delay.ToTimedelta()
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            error.quota_violations += [QuotaViolation(v.subject, v.description) for v in quota.violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            error.preconditions += [FieldViolation(v.type, v.description) for v in failure.violations]
    return error


def from_rpc_error(err: grpc.RpcError) -> EtterError:
    """The typed error of a failed call, sync or ``grpc.aio`` alike: an ``aio.AioRpcError`` has
    the same synchronous ``code()``, ``details()`` and metadata accessors as a sync call's error."""
    code = err.code() if callable(getattr(err, "code", None)) else grpc.StatusCode.UNKNOWN
    message = err.details() if callable(getattr(err, "details", None)) else str(err)
    # An error before any message comes as one block of headers, which gRPC reports as trailers.
    trace_id = ""
    for part in ("initial_metadata", "trailing_metadata"):
        if not trace_id and callable(getattr(err, part, None)):
            trace_id = metadata_value(getattr(err, part)(), "etter-trace-id")
    status: status_pb2.Status | None = None
    try:
        status = rpc_status.from_call(err)  # type: ignore[arg-type]  # any RpcError that is also a Call
    except (AttributeError, ValueError, TypeError):
        status = None
    return from_status(code, message or "", status, trace_id)
