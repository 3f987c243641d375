"""A client a notebook user enjoys: :class:`PipelineClient`.

It wraps the generated stub with plain Python arguments, typed errors
(:mod:`etter_client.errors`), readable results, a ``watch`` iterator that reconnects and resumes
without missing or repeating an event, and ``history`` / ``audit`` iterators over every page::

    from etter_client import PipelineClient

    client = PipelineClient("127.0.0.1:50051", token)
    run = client.push("acme", "Claims Adjuster", ["file:///docs/jd.pdf"], draup_role_id="draup-1")
    for event in client.watch(workflow_id=run.workflow_id):
        print(event)
"""

from __future__ import annotations

import csv
import datetime as _dt
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from etter_client._gen.etter.pipeline.v1 import pipeline_service_pb2 as pb
from etter_client._gen.etter.pipeline.v1 import resources_pb2 as res
from etter_client._gen.etter.pipeline.v1.pipeline_service_pb2_grpc import PipelineServiceStub
from etter_client.errors import EtterError, from_rpc_error

__all__ = ["BatchProgress", "BatchResult", "PipelineClient", "Run", "Usage", "WatchEvent", "to_dataframe"]

_DOCUMENT_TYPES = {
    "job_description": res.DOCUMENT_TYPE_JOB_DESCRIPTION,
    "process_map": res.DOCUMENT_TYPE_PROCESS_MAP,
    "supporting": res.DOCUMENT_TYPE_SUPPORTING,
}
_FINAL = {"READY", "DEGRADED", "FAILED", "CANCELLED", "VALIDATION_ERROR", "STALE"}


def _status_name(value: res.RoleStatus.ValueType) -> str:
    return res.RoleStatus.Name(value).removeprefix("ROLE_STATUS_")


def _time(ts: Timestamp | None) -> _dt.datetime | None:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=_dt.timezone.utc)


def _document(doc: Any) -> res.Document:
    """A document from a URI (a job description), a ``(type, uri)`` pair or a dict."""
    if isinstance(doc, res.Document):
        return doc
    if isinstance(doc, str):
        kind, uri = "job_description", doc
    elif isinstance(doc, Mapping):
        kind, uri = str(doc.get("type", "job_description")), str(doc["uri"])
    else:
        kind, uri = doc
    key = kind.lower().removeprefix("document_type_")
    if key not in _DOCUMENT_TYPES:
        raise ValueError(f"unknown document type {kind!r}: one of {sorted(_DOCUMENT_TYPES)}")
    return res.Document(type=_DOCUMENT_TYPES[key], uri=uri)


def _options(
    skip_enhancement: bool = False,
    priority: str | None = None,
    force_rerun: bool = False,
    notify_on_complete: bool = False,
) -> res.RunOptions:
    options = res.RunOptions(
        skip_enhancement_workflows=skip_enhancement, force_rerun=force_rerun, notify_on_complete=notify_on_complete
    )
    if priority:
        options.priority = res.Priority.Value("PRIORITY_" + priority.upper())
    return options


@dataclass
class Run:
    """One run of a role, as the server reported it (the full message is :attr:`proto`)."""

    workflow_id: str
    role_id: str
    role_name: str
    company_id: str
    status: str
    current_step: str
    steps_done: int
    steps_total: int
    position_in_queue: int
    estimated_seconds: int
    tokens_estimated: int
    tokens_used: int
    needs_review: bool
    error: str
    trace_id: str
    create_time: _dt.datetime | None
    end_time: _dt.datetime | None
    proto: res.RunStatus = field(repr=False)

    @classmethod
    def from_proto(cls, run: res.RunStatus) -> Run:
        return cls(
            workflow_id=run.workflow_id,
            role_id=run.role_id,
            role_name=run.role_name,
            company_id=run.company_id,
            status=_status_name(run.status),
            current_step=run.current_step,
            steps_done=run.progress.current,
            steps_total=run.progress.total,
            position_in_queue=run.position_in_queue,
            estimated_seconds=run.estimated_duration_seconds,
            tokens_estimated=run.token_estimate.total_tokens,
            tokens_used=run.tokens_used.total_tokens,
            needs_review=run.needs_review,
            error=f"{run.error.code}: {run.error.message}" if run.error.code else "",
            trace_id=run.trace_id,
            create_time=_time(run.create_time),
            end_time=_time(run.end_time),
            proto=run,
        )

    @property
    def final(self) -> bool:
        """Whether the run has ended."""
        return self.status in _FINAL

    def __str__(self) -> str:
        where = f"step {self.current_step}" if self.current_step else f"{self.steps_done}/{self.steps_total} steps"
        return f"{self.role_name} [{self.status}] {where} ({self.workflow_id})"


@dataclass
class BatchResult:
    """What PushBatch answered: one result per item, and the batch's progress."""

    batch_id: str
    created: bool
    accepted: int
    rejected: int
    duplicates: int
    existing: int
    tokens_estimated: int
    items: list[pb.PushBatchItemResult] = field(repr=False)
    proto: pb.PushBatchResponse = field(repr=False)

    @classmethod
    def from_proto(cls, answer: pb.PushBatchResponse) -> BatchResult:
        def count(outcome: int) -> int:
            return sum(1 for item in answer.items if item.outcome == outcome)

        return cls(
            batch_id=answer.batch_id,
            created=answer.created,
            accepted=count(pb.BATCH_ITEM_OUTCOME_ACCEPTED),
            rejected=count(pb.BATCH_ITEM_OUTCOME_REJECTED),
            duplicates=count(pb.BATCH_ITEM_OUTCOME_DUPLICATE),
            existing=count(pb.BATCH_ITEM_OUTCOME_EXISTING),
            tokens_estimated=answer.token_estimate.total_tokens,
            items=list(answer.items),
            proto=answer,
        )

    @property
    def workflow_ids(self) -> list[str]:
        """The runs the batch queued (accepted items)."""
        return [i.workflow_id for i in self.items if i.outcome == pb.BATCH_ITEM_OUTCOME_ACCEPTED]

    def rejections(self) -> dict[int, list[str]]:
        """Per rejected item index: its field violations as ``field: description``."""
        return {
            i.index: [f"{v.field}: {v.description}" for v in i.field_violations]
            for i in self.items
            if i.outcome == pb.BATCH_ITEM_OUTCOME_REJECTED
        }


@dataclass
class BatchProgress:
    """A batch's aggregate progress, as watch snapshots and heartbeats carry it."""

    batch_id: str
    done: int
    total: int
    counts: dict[str, int]
    estimated_seconds: int

    @classmethod
    def from_proto(cls, batch: res.BatchProgress) -> BatchProgress:
        return cls(
            batch_id=batch.batch_id,
            done=batch.done,
            total=batch.total,
            counts={_status_name(c.status): c.count for c in batch.counts},
            estimated_seconds=batch.estimated_duration_seconds,
        )

    @property
    def finished(self) -> bool:
        """Whether every run of the batch has ended."""
        return self.total > 0 and self.done >= self.total

    def __str__(self) -> str:
        states = ", ".join(f"{state} {n}" for state, n in sorted(self.counts.items()))
        left = "" if self.finished else f" · about {self.estimated_seconds} s left"
        return f"{self.done}/{self.total} ended ({states}){left}"


@dataclass
class WatchEvent:
    """One message of a watch stream: a snapshot run, an event of a run, or a heartbeat."""

    kind: str
    workflow_id: str
    sequence: int
    status: str
    step: str
    step_status: str
    run: Run | None
    resume_token: str = field(repr=False)
    proto: pb.WatchStatusResponse = field(repr=False)
    #: A batch watch's aggregate progress, on snapshots and heartbeats.
    batch: BatchProgress | None = None

    @classmethod
    def from_proto(cls, message: pb.WatchStatusResponse) -> list[WatchEvent]:
        kind = message.WhichOneof("kind")
        if kind == "snapshot":
            token = message.resume_token
            batch = BatchProgress.from_proto(message.snapshot.batch) if message.snapshot.HasField("batch") else None
            return [
                cls(
                    "snapshot", r.workflow_id, r.sequence, _status_name(r.status), r.current_step, "",
                    Run.from_proto(r), token, message, batch,
                )
                for r in message.snapshot.runs
            ] or [cls("snapshot", "", 0, "", "", "", None, token, message, batch)]
        if kind == "event":
            event = message.event
            change = event.WhichOneof("change")
            status = _status_name(event.status_change.status) if change == "status_change" else ""
            step = event.step_change.step if change == "step_change" else ""
            step_status = res.StepState.Name(event.step_change.status).removeprefix("STEP_STATE_") if step else ""
            run = Run.from_proto(event.run) if event.HasField("run") else None
            return [cls("event", event.workflow_id, event.sequence, status, step, step_status, run, message.resume_token, message)]
        batch = BatchProgress.from_proto(message.heartbeat.batch) if message.heartbeat.HasField("batch") else None
        return [cls("heartbeat", "", 0, "", "", "", None, message.resume_token, message, batch)]

    def __str__(self) -> str:
        if self.kind == "heartbeat":
            return "heartbeat"
        what = self.status or f"{self.step} {self.step_status}"
        return f"{self.kind} #{self.sequence} {self.workflow_id}: {what}"


@dataclass
class Usage:
    """A company's token budget and usage in a month."""

    company_id: str
    period: str
    budget_tokens: int
    used_tokens: int
    reserved_tokens: int
    remaining_tokens: int
    by_step: dict[str, int]
    used_cost: float
    currency: str
    proto: pb.GetUsageResponse = field(repr=False)

    @classmethod
    def from_proto(cls, answer: pb.GetUsageResponse) -> Usage:
        return cls(
            company_id=answer.company_id,
            period=answer.period,
            budget_tokens=answer.budget_tokens,
            used_tokens=answer.used_tokens,
            reserved_tokens=answer.reserved_tokens,
            remaining_tokens=answer.remaining_tokens,
            by_step={s.step: s.total_tokens for s in answer.steps},
            used_cost=answer.used_cost_micros / 1_000_000,
            currency=answer.currency,
            proto=answer,
        )


def to_dataframe(rows: Iterable[Any]) -> Any:
    """A pandas DataFrame of runs, events or audit entries (needs pandas installed)."""
    try:
        import pandas as pd
    except ImportError as missing:  # pragma: no cover - depends on the environment
        raise ImportError("to_dataframe needs pandas: pip install pandas") from missing
    records = []
    for row in rows:
        record = {k: v for k, v in vars(row).items() if k not in ("proto", "run", "items")}
        records.append(record)
    return pd.DataFrame.from_records(records)


def csv_items(path: Path) -> list[dict[str, Any]]:
    """Batch items from a CSV with columns role_name, draup_role_id, documents (URIs separated by
    ``;``, each optionally ``type=uri``) and optionally client_ref."""
    items = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            documents: list[Any] = []
            for part in filter(None, (p.strip() for p in (row.get("documents") or "").split(";"))):
                kind, sep, uri = part.partition("=")
                documents.append((kind, uri) if sep and "://" not in kind else part)
            items.append(
                {
                    "role_name": row.get("role_name", ""),
                    "draup_role_id": row.get("draup_role_id", ""),
                    "documents": documents,
                    "client_ref": row.get("client_ref", ""),
                }
            )
    return items


def push_request(
    company_id: str,
    role_name: str,
    documents: Sequence[Any],
    draup_role_id: str,
    options: res.RunOptions,
    request_id: str | None,
) -> pb.PushRequest:
    """The PushRequest of :meth:`PipelineClient.push`."""
    return pb.PushRequest(
        company_id=company_id,
        role_name=role_name,
        draup_role_id=draup_role_id,
        documents=[_document(d) for d in documents],
        options=options,
        request_id=request_id or str(uuid.uuid4()),
    )


def batch_request(
    company_id: str, rows: Iterable[Mapping[str, Any]], options: res.RunOptions, request_id: str | None
) -> pb.PushBatchRequest:
    """The PushBatchRequest of :meth:`PipelineClient.push_batch` from item dicts."""
    return pb.PushBatchRequest(
        company_id=company_id,
        items=[
            pb.PushBatchItem(
                role_name=str(row.get("role_name", "")),
                draup_role_id=str(row.get("draup_role_id", "")),
                documents=[_document(d) for d in row.get("documents", ())],
                client_ref=str(row.get("client_ref", "")),
            )
            for row in rows
        ],
        default_options=options,
        request_id=request_id or str(uuid.uuid4()),
    )


def history_request(company_id: str, statuses: Sequence[str], page_size: int, **filters: Any) -> pb.HistoryRequest:
    """The first HistoryRequest of a company's runs (``filters``: role_id, batch_id, needs_review)."""
    request = pb.HistoryRequest(
        company_id=company_id,
        statuses=[res.RoleStatus.Value("ROLE_STATUS_" + s.upper()) for s in statuses],
        page_size=page_size,
    )
    for name, value in filters.items():
        if value not in (None, ""):
            setattr(request, name, value)
    return request


def status_request(workflow_id: str | None, role_id: str | None) -> pb.GetStatusRequest:
    """The GetStatusRequest of a run or of a role's latest run."""
    if (workflow_id is None) == (role_id is None):
        raise ValueError("give workflow_id or role_id")
    return pb.GetStatusRequest(workflow_id=workflow_id) if workflow_id else pb.GetStatusRequest(role_id=role_id or "")


def watch_request(
    workflow_id: str | None, batch_id: str | None, company_id: str | None, token: str, after: int = 0
) -> pb.WatchStatusRequest:
    """The WatchStatusRequest of exactly one scope: a run resumes after a sequence number, a batch
    or company with a resume token."""
    if len([s for s in (workflow_id, batch_id, company_id) if s]) != 1:
        raise ValueError("give exactly one of workflow_id, batch_id or company_id")
    request = pb.WatchStatusRequest()
    if workflow_id:
        request.workflow_id = workflow_id
        request.after_sequence = after
        return request
    request.resume_token = token
    if batch_id:
        request.batch_id = batch_id
    else:
        request.company_id = company_id or ""
    return request


class PipelineClient:
    """A connection to ``etter-server`` acting with one bearer token.

    ``target`` is ``host:port``; ``secure=True`` uses TLS with the system's roots (or pass
    ``credentials``). Every call raises an :class:`~etter_client.errors.EtterError` subclass on
    failure, carrying the server's details.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
    ) -> None:
        if secure or credentials is not None:
            self._channel = grpc.secure_channel(target, credentials or grpc.ssl_channel_credentials())
        else:
            self._channel = grpc.insecure_channel(target)
        self._stub = PipelineServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.timeout = timeout
        self.target = target

    def __repr__(self) -> str:
        return f"PipelineClient({self.target!r})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> PipelineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self._stub, method)(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def push(
        self,
        company_id: str,
        role_name: str,
        documents: Sequence[Any],
        *,
        draup_role_id: str,
        skip_enhancement: bool = False,
        priority: str | None = None,
        force_rerun: bool = False,
        notify_on_complete: bool = False,
        request_id: str | None = None,
    ) -> Run:
        """Queues a role. ``documents``: URIs (job descriptions), ``(type, uri)`` pairs or dicts.
        A ``request_id`` (a fresh one by default) makes a retried call return the first answer."""
        options = _options(skip_enhancement, priority, force_rerun, notify_on_complete)
        answer = self._call("Push", push_request(company_id, role_name, documents, draup_role_id, options, request_id))
        return self.status(answer.workflow_id)

    def push_batch(
        self,
        company_id: str,
        items: Iterable[Mapping[str, Any]] | str | Path,
        *,
        skip_enhancement: bool = False,
        priority: str | None = None,
        request_id: str | None = None,
    ) -> BatchResult:
        """Queues many roles at once: a list of dicts (``role_name``, ``draup_role_id``,
        ``documents``, optional ``client_ref`` and ``options``) or the path of a CSV with those
        columns. Invalid items are answered per item, not raised."""
        rows = csv_items(Path(items)) if isinstance(items, (str, Path)) else list(items)
        request = batch_request(company_id, rows, _options(skip_enhancement, priority), request_id)
        return BatchResult.from_proto(self._call("PushBatch", request))

    def status(self, workflow_id: str | None = None, *, role_id: str | None = None) -> Run:
        """A run by workflow id, or a role's latest run by role id."""
        return Run.from_proto(self._call("GetStatus", status_request(workflow_id, role_id)).run)

    def watch(
        self,
        *,
        workflow_id: str | None = None,
        batch_id: str | None = None,
        company_id: str | None = None,
        until_final: bool = True,
        reconnects: int = 20,
        resume_token: str = "",
        after_sequence: int = 0,
    ) -> Iterator[WatchEvent]:
        """Yields a snapshot, then every event, of one run, a batch or a company's active runs.
        A dropped stream is reopened with its resume token (nothing missed, nothing repeated), up
        to ``reconnects`` times in a row. A run or batch watch ends when everything it watches
        has ended (``until_final``); a company watch runs until you stop iterating. To continue
        in another ``watch`` call: a run's after the last event's ``sequence``
        (``after_sequence``), a batch's or company's with the last message's ``resume_token``."""
        watch_request(workflow_id, batch_id, company_id, resume_token, after_sequence)
        token, after = resume_token, after_sequence
        failures = 0
        open_runs: dict[str, str] = {}
        while True:
            request = watch_request(workflow_id, batch_id, company_id, token, after)
            try:
                for message in self._stub.WatchStatus(request, metadata=self._metadata):
                    failures = 0
                    if message.resume_token:
                        token = message.resume_token
                    for event in WatchEvent.from_proto(message):
                        if event.workflow_id and event.status:
                            open_runs[event.workflow_id] = event.status
                        if workflow_id and event.kind in ("event", "snapshot"):
                            after = max(after, event.sequence)
                        yield event
                    if until_final and not company_id and self._all_final(message, open_runs):
                        return
                if until_final and not company_id and open_runs and all(s in _FINAL for s in open_runs.values()):
                    return
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or failures >= reconnects:
                    raise error from None
            failures += 1
            if failures > reconnects:
                raise EtterError(code=grpc.StatusCode.UNAVAILABLE, message="the watch stream kept dropping")
            time.sleep(min(0.2 * failures, 2.0))

    @staticmethod
    def _all_final(message: pb.WatchStatusResponse, open_runs: dict[str, str]) -> bool:
        if message.WhichOneof("kind") == "snapshot" and not message.snapshot.last:
            return False
        batch = None
        if message.WhichOneof("kind") == "heartbeat" and message.heartbeat.HasField("batch"):
            batch = message.heartbeat.batch
        elif message.WhichOneof("kind") == "snapshot" and message.snapshot.HasField("batch"):
            batch = message.snapshot.batch
        if batch is not None:
            return batch.total > 0 and batch.done >= batch.total
        return bool(open_runs) and all(s in _FINAL for s in open_runs.values())

    def retry(
        self,
        workflow_id: str | None = None,
        *,
        role_id: str | None = None,
        steps: Sequence[str] = (),
        request_id: str | None = None,
    ) -> Run:
        """Starts a new run of a run that failed, degraded, was cancelled or went stale, reusing
        what it kept; ``steps`` re-runs those steps and everything after them."""
        if (workflow_id is None) == (role_id is None):
            raise ValueError("give workflow_id or role_id")
        request = pb.RetryRequest(steps=list(steps), request_id=request_id or str(uuid.uuid4()))
        if workflow_id:
            request.workflow_id = workflow_id
        else:
            request.role_id = role_id or ""
        return Run.from_proto(self._call("Retry", request).run)

    def cancel(self, workflow_id: str, reason: str = "", *, request_id: str | None = None) -> Run:
        """Cancels a queued or running run; finished steps keep their outputs."""
        request = pb.CancelRequest(workflow_id=workflow_id, reason=reason, request_id=request_id or str(uuid.uuid4()))
        return Run.from_proto(self._call("Cancel", request).run)

    def history(
        self,
        company_id: str,
        *,
        statuses: Sequence[str] = (),
        role_id: str = "",
        batch_id: str = "",
        needs_review: bool | None = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """Every run of a company matching the filters, newest first, page after page."""
        request = history_request(
            company_id, statuses, page_size, role_id=role_id, batch_id=batch_id, needs_review=needs_review
        )
        while True:
            page = self._call("History", request)
            for run in page.runs:
                yield Run.from_proto(run)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def usage(self, company_id: str, period: str | None = None) -> Usage:
        """The company's token budget and usage in a month (``YYYY-MM``; this month by default)."""
        return Usage.from_proto(self._call("GetUsage", pb.GetUsageRequest(company_id=company_id, period=period or "")))

    def audit(
        self, *, company_id: str = "", actor: str = "", action: str = "", denied_only: bool = False, page_size: int = 100
    ) -> Iterator[res.AuditEntry]:
        """The audit log, newest first (admins only)."""
        request = pb.ListAuditEntriesRequest(
            company_id=company_id, actor=actor, action=action, denied_only=denied_only, page_size=page_size
        )
        while True:
            page = self._call("ListAuditEntries", request)
            yield from page.entries
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def wait(self, workflow_id: str, timeout: float = 300.0, poll: float = 0.5) -> Run:
        """Polls a run until it ends (``watch`` is the streaming way)."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.status(workflow_id)
            if run.final:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"{workflow_id} still {run.status} after {timeout}s")
            time.sleep(poll)
