"""A client a notebook user enjoys: :class:`PipelineClient`.

It wraps the generated stub with plain Python arguments, typed errors
(:mod:`etter_client.errors`), readable results (:mod:`etter_client.results`, run states as
:class:`RunState`), a ``watch`` iterator that reconnects and resumes without missing or repeating
an event, and ``history`` / ``audit`` iterators over every page::

    from etter_client import PipelineClient

    client = PipelineClient("127.0.0.1:50051", token)
    run = client.push("acme", "Claims Adjuster", ["file:///docs/jd.pdf"], draup_role_id="draup-1")
    for event in client.watch(workflow_id=run.workflow_id):
        print(event)

:class:`etter_client.aio.AsyncPipelineClient` is the same client over asyncio; both build their
requests and results with the same functions (:mod:`etter_client._shared`,
:mod:`etter_client.results`).
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import grpc

from etter_client._gen.etter.pipeline.v1 import resources_pb2 as res
from etter_client._gen.etter.pipeline.v1.pipeline_service_pb2_grpc import PipelineServiceStub
from etter_client._shared import (
    DocumentLike,
    Page,
    PageRequest,
    Request,
    Response,
    RunStateLike,
    WatchCursor,
    audit_request,
    batch_request,
    batch_rows,
    cancel_request,
    compare_request,
    csv_items,
    history_request,
    push_request,
    retry_request,
    run_options,
    status_request,
    tls,
    usage_request,
)
from etter_client.errors import from_rpc_error
from etter_client.results import (
    BatchProgress,
    BatchQuote,
    BatchQuoteItem,
    BatchResult,
    Comparison,
    Quote,
    Run,
    RunState,
    Usage,
    WatchEvent,
    to_dataframe,
)

__all__ = [
    "BatchProgress",
    "BatchQuote",
    "BatchQuoteItem",
    "BatchResult",
    "PipelineClient",
    "Quote",
    "Run",
    "RunState",
    "Usage",
    "WatchEvent",
    "csv_items",
    "to_dataframe",
]


class PipelineClient:
    """A connection to ``etter-server`` acting with one bearer token.

    ``target`` is ``host:port``; ``secure=True`` uses TLS with the system's roots (or pass
    ``credentials``). ``ca_file`` trusts a private CA, ``cert_file`` and ``key_file`` show a
    client certificate to a server that requires one (mutual TLS), ``server_name`` is the name
    the server's certificate must carry when it differs from the target's host; any of them turns
    TLS on. Every call raises an :class:`~etter_client.errors.EtterError` subclass on
    failure, carrying the server's details.
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        secure: bool = False,
        credentials: grpc.ChannelCredentials | None = None,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        server_name: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        tls_credentials, options = tls(ca_file, cert_file, key_file, server_name, credentials, secure)
        if tls_credentials is not None:
            self._channel = grpc.secure_channel(target, tls_credentials, options=options)
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

    def _call(self, method: grpc.UnaryUnaryMultiCallable[Request, Response], request: Request) -> Response:
        """One unary call through a stub method (``self._stub.Push``, …), typed by that method,
        with the token and the deadline; a failure is raised as its typed error."""
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _pages(self, method: grpc.UnaryUnaryMultiCallable[PageRequest, Page], request: PageRequest) -> Iterator[Page]:
        """Every page of a paged call, asking for the next one only when the caller wants it."""
        while True:
            page = self._call(method, request)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    def push(
        self,
        company_id: str,
        role_name: str,
        documents: Sequence[DocumentLike],
        *,
        draup_role_id: str,
        skip_enhancement: bool = False,
        priority: str | None = None,
        force_rerun: bool = False,
        notify_on_complete: bool = False,
        request_id: str | None = None,
        deadline: _dt.datetime | None = None,
    ) -> Run:
        """Queues a role. ``documents``: URIs (job descriptions), ``(type, uri)`` pairs or dicts.
        ``priority`` is ``"low"``, ``"normal"`` or ``"high"``. A ``request_id`` (a fresh one by
        default) makes a retried call return the first answer. ``deadline`` (a timezone-aware
        datetime) is when the run must have ended: a push that cannot end by then is refused
        (:class:`~etter_client.errors.FailedPrecondition`, reason ``DEADLINE_UNREACHABLE``) and a
        run still queued at it is cancelled."""
        options = run_options(skip_enhancement, priority, force_rerun, notify_on_complete, deadline)
        request = push_request(company_id, role_name, documents, draup_role_id, options, request_id)
        answer = self._call(self._stub.Push, request)
        return self.status(answer.workflow_id)

    def quote(
        self,
        company_id: str,
        role_name: str,
        documents: Sequence[DocumentLike],
        *,
        draup_role_id: str,
        skip_enhancement: bool = False,
        priority: str | None = None,
        force_rerun: bool = False,
        notify_on_complete: bool = False,
        deadline: _dt.datetime | None = None,
    ) -> Quote:
        """What :meth:`push` with these arguments would answer, without doing it: whether it
        creates a run (or an existing run answers), the run's id, plan, tokens, cost, queue
        position, wait reason and ETA. Every check of a push runs (limits, budget, validation,
        reading the documents, the deadline) and a refusal is raised as the push's error would
        be; nothing is created or reserved."""
        options = run_options(skip_enhancement, priority, force_rerun, notify_on_complete, deadline)
        request = push_request(company_id, role_name, documents, draup_role_id, options, None, validate_only=True)
        return Quote.from_proto(self._call(self._stub.Push, request))

    def push_batch(
        self,
        company_id: str,
        items: Iterable[Mapping[str, object]] | str | Path,
        *,
        skip_enhancement: bool = False,
        priority: str | None = None,
        request_id: str | None = None,
    ) -> BatchResult:
        """Queues many roles at once: a list of dicts (``role_name``, ``draup_role_id``,
        ``documents``, optional ``client_ref`` and ``options``) or the path of a CSV with those
        columns (see :func:`csv_items`). ``skip_enhancement`` and ``priority`` apply to items
        without options of their own; sending the batch again with the same ``request_id``
        answers the first batch and queues nothing. Invalid items are answered per item, not
        raised."""
        request = batch_request(company_id, batch_rows(items), run_options(skip_enhancement, priority), request_id)
        return BatchResult.from_proto(self._call(self._stub.PushBatch, request))

    def quote_batch(
        self,
        company_id: str,
        items: Iterable[Mapping[str, object]] | str | Path,
        *,
        skip_enhancement: bool = False,
        priority: str | None = None,
    ) -> BatchQuote:
        """What :meth:`push_batch` with these items would answer, without doing it: per item its
        outcome, field violations, plan, tokens and ETA; for the whole, the tokens and cost of
        what it would accept and when its last run would end. A batch :meth:`push_batch` would
        refuse whole is raised the same way; nothing is created or reserved."""
        rows = batch_rows(items)
        request = batch_request(company_id, rows, run_options(skip_enhancement, priority), None, validate_only=True)
        return BatchQuote.from_proto(self._call(self._stub.PushBatch, request))

    def status(self, workflow_id: str | None = None, *, role_id: str | None = None) -> Run:
        """A run by workflow id, or a role's latest run by role id."""
        return Run.from_proto(self._call(self._stub.GetStatus, status_request(workflow_id, role_id)).run)

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
        cursor = WatchCursor(
            workflow_id, batch_id, company_id,
            until_final=until_final, reconnects=reconnects, resume_token=resume_token, after_sequence=after_sequence,
        )
        return self._watch(cursor)

    def _watch(self, cursor: WatchCursor) -> Iterator[WatchEvent]:
        while True:
            try:
                for message in self._stub.WatchStatus(cursor.request(), metadata=self._metadata):
                    yield from cursor.observe(message)
                    if cursor.ended(message):
                        return
                if cursor.ended_with_stream():
                    return
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if not cursor.may_reopen(error):
                    raise error from None
            time.sleep(cursor.reopen_delay())

    def retry(
        self,
        workflow_id: str | None = None,
        *,
        role_id: str | None = None,
        steps: Sequence[str] = (),
        request_id: str | None = None,
        model: str | None = None,
    ) -> Run:
        """Starts a new run of a run that failed, degraded, was cancelled or went stale, reusing
        what it kept; ``steps`` re-runs those steps and everything after them. ``model`` asks
        another model (one the server allows) for the steps it re-runs; with no ``steps``, every
        step that asks a model re-runs, and a READY run may be retried so too."""
        request = retry_request(workflow_id, role_id, steps, request_id, model)
        return Run.from_proto(self._call(self._stub.Retry, request).run)

    def compare(self, base_workflow_id: str, workflow_id: str) -> Comparison:
        """Two runs of one role step by step: what ran, what was reused, inputs, durations,
        tokens, models and how the outputs differ. ``pandas.DataFrame(c.records())`` takes it."""
        return Comparison.from_proto(self._call(self._stub.CompareRuns, compare_request(base_workflow_id, workflow_id)))

    def cancel(self, workflow_id: str, reason: str = "", *, request_id: str | None = None) -> Run:
        """Cancels a queued or running run; finished steps keep their outputs."""
        return Run.from_proto(self._call(self._stub.Cancel, cancel_request(workflow_id, reason, request_id)).run)

    def history(
        self,
        company_id: str,
        *,
        statuses: Iterable[RunStateLike] = (),
        role_id: str = "",
        batch_id: str = "",
        needs_review: bool | None = None,
        page_size: int = 100,
    ) -> Iterator[Run]:
        """Every run of a company matching the filters, newest first, page after page.
        ``statuses`` are :class:`RunState` members or their names (``"READY"``)."""
        request = history_request(
            company_id, statuses, page_size, role_id=role_id, batch_id=batch_id, needs_review=needs_review
        )
        for page in self._pages(self._stub.History, request):
            for run in page.runs:
                yield Run.from_proto(run)

    def usage(self, company_id: str, period: str | None = None) -> Usage:
        """The company's token budget and usage in a month (``YYYY-MM``; this month by default)."""
        return Usage.from_proto(self._call(self._stub.GetUsage, usage_request(company_id, period)))

    def audit(
        self, *, company_id: str = "", actor: str = "", action: str = "", denied_only: bool = False, page_size: int = 100
    ) -> Iterator[res.AuditEntry]:
        """The audit log, newest first, page after page (admins only)."""
        request = audit_request(company_id, actor, action, denied_only, page_size)
        for page in self._pages(self._stub.ListAuditEntries, request):
            yield from page.entries

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
