"""What the sync and the asyncio client share: building requests from plain arguments, reading
batch items from a CSV, and following a watch stream across reconnects.

Neither client builds a request or interprets a stream message itself; each only sends what these
functions build, through its own stub, and converts answers with :mod:`etter_client.results`. So
the two clients cannot drift apart in what they send or how they read it.
"""

from __future__ import annotations

import csv
import datetime as _dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeAlias, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from etter_client._gen.etter.pipeline.v1 import pipeline_service_pb2 as pb
from etter_client._gen.etter.pipeline.v1 import resources_pb2 as res
from etter_client.errors import EtterError
from etter_client.results import RunState, WatchEvent

def tls(
    ca_file: str | Path | None,
    cert_file: str | Path | None,
    key_file: str | Path | None,
    server_name: str | None,
    credentials: grpc.ChannelCredentials | None,
    secure: bool,
) -> tuple[grpc.ChannelCredentials | None, list[tuple[str, str]]]:
    """The channel credentials and options the clients' TLS arguments ask for: ``None``
    credentials for plaintext; the system's roots, or ``ca_file``'s CA, with ``cert_file`` and
    ``key_file`` shown to a server that requires client certificates, and ``server_name`` checked
    against the server's certificate instead of the target's host."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together: the client certificate and its private key")
    files = ca_file is not None or cert_file is not None
    if credentials is not None and files:
        raise ValueError("pass credentials, or ca_file / cert_file / key_file, not both")
    if credentials is None and files:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=Path(ca_file).read_bytes() if ca_file is not None else None,
            private_key=Path(key_file).read_bytes() if key_file is not None else None,
            certificate_chain=Path(cert_file).read_bytes() if cert_file is not None else None,
        )
    if credentials is None and (secure or server_name is not None):
        credentials = grpc.ssl_channel_credentials()
    options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return credentials, options


#: A document as the clients accept it: a URI (a job description), a ``(type, uri)`` pair, a
#: mapping with ``uri`` and optionally ``type``, or the message itself. Types are
#: ``job_description``, ``process_map`` and ``supporting``.
DocumentLike: TypeAlias = str | tuple[str, str] | Mapping[str, str] | res.Document

#: A run state as the clients accept it in filters: a :class:`RunState` or its name (``"READY"``).
RunStateLike: TypeAlias = RunState | str

_DOCUMENT_TYPES = {
    "job_description": res.DOCUMENT_TYPE_JOB_DESCRIPTION,
    "process_map": res.DOCUMENT_TYPE_PROCESS_MAP,
    "supporting": res.DOCUMENT_TYPE_SUPPORTING,
}

# The type variables of the clients' typed call helpers: a stub method's request and response.
Request = TypeVar("Request")
Response = TypeVar("Response")


class _PageRequest(Protocol):
    page_token: str


class _Page(Protocol):
    @property
    def next_page_token(self) -> str: ...


# A paged RPC's request (HistoryRequest, ListAuditEntriesRequest) and answer.
PageRequest = TypeVar("PageRequest", bound=_PageRequest)
Page = TypeVar("Page", bound=_Page)


def document(doc: object) -> res.Document:
    """A document from a URI (a job description), a ``(type, uri)`` pair or a mapping (see
    :data:`DocumentLike`)."""
    if isinstance(doc, res.Document):
        return doc
    if isinstance(doc, str):
        kind, uri = "job_description", doc
    elif isinstance(doc, Mapping):
        kind, uri = str(doc.get("type", "job_description")), str(doc["uri"])
    elif isinstance(doc, tuple) and len(doc) == 2:
        kind, uri = str(doc[0]), str(doc[1])
    else:
        raise TypeError(f"a document is a URI, a (type, uri) pair or a mapping, not {doc!r}")
    key = kind.lower().removeprefix("document_type_")
    if key not in _DOCUMENT_TYPES:
        raise ValueError(f"unknown document type {kind!r}: one of {sorted(_DOCUMENT_TYPES)}")
    return res.Document(type=_DOCUMENT_TYPES[key], uri=uri)


def _documents(value: object) -> list[res.Document]:
    """A batch item's documents: a list of them, or a single one."""
    if value is None:
        return []
    if isinstance(value, (str, res.Document, Mapping)):
        return [document(value)]
    if isinstance(value, Iterable):
        return [document(d) for d in value]
    raise TypeError(f"a batch item's documents are a list, not {value!r}")


def timestamp(at: _dt.datetime) -> Timestamp:
    """The Timestamp of a timezone-aware datetime; ``ValueError`` for a naive one, whose instant
    is ambiguous (the server would read it as UTC, the caller may have meant local time)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(
            f"a deadline must be a timezone-aware datetime, not the naive {at.isoformat()}: "
            "for example datetime.now(timezone.utc) + timedelta(hours=2)"
        )
    stamp = Timestamp()
    stamp.FromDatetime(at.astimezone(_dt.timezone.utc))
    return stamp


def run_options(
    skip_enhancement: bool = False,
    priority: str | None = None,
    force_rerun: bool = False,
    notify_on_complete: bool = False,
    deadline: _dt.datetime | None = None,
) -> res.RunOptions:
    """The RunOptions of a push or a batch; ``priority`` is ``"low"``, ``"normal"`` or ``"high"``;
    ``deadline`` is a timezone-aware datetime (see :func:`timestamp`)."""
    options = res.RunOptions(
        skip_enhancement_workflows=skip_enhancement, force_rerun=force_rerun, notify_on_complete=notify_on_complete
    )
    if priority:
        try:
            options.priority = res.Priority.Value("PRIORITY_" + priority.strip().upper().removeprefix("PRIORITY_"))
        except ValueError:
            raise ValueError(f"unknown priority {priority!r}: one of low, normal, high") from None
    if deadline is not None:
        options.deadline.CopyFrom(timestamp(deadline))
    return options


def _item_options(options: object) -> res.RunOptions | None:
    """An item's own options in a batch: a RunOptions, or a mapping of :func:`run_options`'s
    keyword arguments."""
    if options is None or isinstance(options, res.RunOptions):
        return options
    if isinstance(options, Mapping):
        return run_options(**options)
    raise TypeError(f"a batch item's options must be a RunOptions or a mapping, not {type(options).__name__}")


def csv_items(path: Path) -> list[dict[str, Any]]:
    """Batch items from a CSV with columns role_name, draup_role_id, documents (URIs separated by
    ``;``, each optionally ``type=uri``) and optionally client_ref."""
    items = []
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            documents: list[DocumentLike] = []
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


def batch_rows(items: Iterable[Mapping[str, object]] | str | Path) -> list[Mapping[str, object]]:
    """A batch's items from item mappings or from the path of a CSV (see :func:`csv_items`)."""
    if isinstance(items, (str, Path)):
        return list(csv_items(Path(items)))
    return list(items)


def push_request(
    company_id: str,
    role_name: str,
    documents: Sequence[DocumentLike],
    draup_role_id: str,
    options: res.RunOptions,
    request_id: str | None,
    validate_only: bool = False,
) -> pb.PushRequest:
    """The PushRequest of a push; a fresh request id unless one is given. ``validate_only`` makes
    it a quote: checked and answered like the push, and nothing done."""
    return pb.PushRequest(
        company_id=company_id,
        role_name=role_name,
        draup_role_id=draup_role_id,
        documents=[document(d) for d in documents],
        options=options,
        request_id=request_id or str(uuid.uuid4()),
        validate_only=validate_only,
    )


def batch_request(
    company_id: str,
    rows: Iterable[Mapping[str, object]],
    options: res.RunOptions,
    request_id: str | None,
    validate_only: bool = False,
) -> pb.PushBatchRequest:
    """The PushBatchRequest of a batch from item mappings (``role_name``, ``draup_role_id``,
    ``documents``, optional ``client_ref`` and ``options``); ``options`` are the batch's defaults.
    ``validate_only`` makes it a quote: checked and answered per item, and nothing stored."""
    return pb.PushBatchRequest(
        company_id=company_id,
        items=[
            pb.PushBatchItem(
                role_name=str(row.get("role_name", "")),
                draup_role_id=str(row.get("draup_role_id", "")),
                documents=_documents(row.get("documents")),
                client_ref=str(row.get("client_ref", "")),
                options=_item_options(row.get("options")),
            )
            for row in rows
        ],
        default_options=options,
        request_id=request_id or str(uuid.uuid4()),
        validate_only=validate_only,
    )


def status_request(workflow_id: str | None, role_id: str | None) -> pb.GetStatusRequest:
    """The GetStatusRequest of a run or of a role's latest run."""
    if (workflow_id is None) == (role_id is None):
        raise ValueError("give workflow_id or role_id")
    return pb.GetStatusRequest(workflow_id=workflow_id) if workflow_id else pb.GetStatusRequest(role_id=role_id or "")


def retry_request(
    workflow_id: str | None,
    role_id: str | None,
    steps: Sequence[str],
    request_id: str | None,
    model: str | None = None,
) -> pb.RetryRequest:
    """The RetryRequest of a run, or of a role's latest run."""
    if (workflow_id is None) == (role_id is None):
        raise ValueError("give workflow_id or role_id")
    request = pb.RetryRequest(steps=list(steps), request_id=request_id or str(uuid.uuid4()), model=model or "")
    if workflow_id:
        request.workflow_id = workflow_id
    else:
        request.role_id = role_id or ""
    return request


def cancel_request(workflow_id: str, reason: str, request_id: str | None) -> pb.CancelRequest:
    """The CancelRequest of a run."""
    return pb.CancelRequest(workflow_id=workflow_id, reason=reason, request_id=request_id or str(uuid.uuid4()))


def history_request(
    company_id: str,
    statuses: Iterable[RunStateLike],
    page_size: int,
    *,
    role_id: str = "",
    batch_id: str = "",
    needs_review: bool | None = None,
) -> pb.HistoryRequest:
    """The first HistoryRequest of a company's runs; ``statuses`` as members or names."""
    request = pb.HistoryRequest(
        company_id=company_id,
        statuses=[RunState.parse(s).to_proto() for s in statuses],
        role_id=role_id,
        batch_id=batch_id,
        page_size=page_size,
    )
    if needs_review is not None:
        request.needs_review = needs_review
    return request


def compare_request(base_workflow_id: str, workflow_id: str) -> pb.CompareRunsRequest:
    """The CompareRunsRequest of two runs of one role."""
    return pb.CompareRunsRequest(base_workflow_id=base_workflow_id, workflow_id=workflow_id)


def usage_request(company_id: str, period: str | None) -> pb.GetUsageRequest:
    """The GetUsageRequest of a company's month (``YYYY-MM``; this month when not given)."""
    return pb.GetUsageRequest(company_id=company_id, period=period or "")


def audit_request(
    company_id: str, actor: str, action: str, denied_only: bool, page_size: int
) -> pb.ListAuditEntriesRequest:
    """The first ListAuditEntriesRequest of the audit log with these filters."""
    return pb.ListAuditEntriesRequest(
        company_id=company_id, actor=actor, action=action, denied_only=denied_only, page_size=page_size
    )


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


# Stream failures worth reopening the stream for; anything else is raised to the caller.
_TRANSIENT = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


class WatchCursor:
    """Where a watch stands, so a client can reopen a dropped stream and miss or repeat nothing.

    A client opens a stream with :meth:`request`, passes each message to :meth:`observe` (which
    gives the events to yield) and stops when :meth:`ended` says so; when the stream closes or
    fails it asks :meth:`ended_with_stream` and :meth:`may_reopen`, waits :meth:`reopen_delay`
    and opens the next stream with :meth:`request` again. A run resumes after the last sequence
    number seen, a batch or company with the last resume token.
    """

    def __init__(
        self,
        workflow_id: str | None,
        batch_id: str | None,
        company_id: str | None,
        *,
        until_final: bool,
        reconnects: int,
        resume_token: str,
        after_sequence: int,
    ) -> None:
        self.workflow_id, self.batch_id, self.company_id = workflow_id, batch_id, company_id
        # A company watch follows whatever becomes active and never ends by itself.
        self.until_final = until_final and not company_id
        self.reconnects = reconnects
        self.token = resume_token
        self.after = after_sequence
        self.failures = 0
        self.states: dict[str, RunState] = {}
        self.request()  # a wrong scope fails at the call, not at the first message

    def request(self) -> pb.WatchStatusRequest:
        """The request that opens (or reopens) the stream where the watch stands."""
        return watch_request(self.workflow_id, self.batch_id, self.company_id, self.token, self.after)

    def observe(self, message: pb.WatchStatusResponse) -> list[WatchEvent]:
        """The events of a message, remembering its resume point and the runs' states."""
        self.failures = 0
        if message.resume_token:
            self.token = message.resume_token
        events = WatchEvent.from_proto(message)
        for event in events:
            if event.workflow_id and event.status is not None:
                self.states[event.workflow_id] = event.status
            if self.workflow_id and event.kind in ("event", "snapshot"):
                self.after = max(self.after, event.sequence)
        return events

    def ended(self, message: pb.WatchStatusResponse) -> bool:
        """Whether, after this message, everything watched has ended and the watch should stop:
        a batch by its progress, a run by its state."""
        if not self.until_final:
            return False
        kind = message.WhichOneof("kind")
        if kind == "snapshot" and not message.snapshot.last:
            return False
        batch = None
        if kind == "heartbeat" and message.heartbeat.HasField("batch"):
            batch = message.heartbeat.batch
        elif kind == "snapshot" and message.snapshot.HasField("batch"):
            batch = message.snapshot.batch
        if batch is not None:
            return batch.total > 0 and batch.done >= batch.total
        return self._all_final()

    def ended_with_stream(self) -> bool:
        """Whether the watch should stop now that the server closed the stream."""
        return self.until_final and self._all_final()

    def _all_final(self) -> bool:
        return bool(self.states) and all(state.final for state in self.states.values())

    def may_reopen(self, error: EtterError) -> bool:
        """Whether a stream that failed with ``error`` is worth reopening."""
        return error.code in _TRANSIENT and self.failures < self.reconnects

    def reopen_delay(self) -> float:
        """Seconds to wait before reopening a closed or failed stream, longer after each failure
        in a row; raises when the stream kept dropping more than ``reconnects`` times in a row."""
        self.failures += 1
        if self.failures > self.reconnects:
            raise EtterError(code=grpc.StatusCode.UNAVAILABLE, message="the watch stream kept dropping")
        return min(0.2 * self.failures, 2.0)
