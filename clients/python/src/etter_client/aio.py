"""The asyncio twin of :class:`etter_client.PipelineClient`, over ``grpc.aio``::

    async with AsyncPipelineClient("127.0.0.1:50051", token) as client:
        run = await client.push("acme", "Claims Adjuster", ["file:///docs/jd.pdf"], draup_role_id="draup-1")
        async for event in client.watch(workflow_id=run.workflow_id):
            print(event)

Every method of the sync client is here with the same arguments and results: a call is awaited,
and ``watch``, ``history`` and ``audit`` are async iterators. Both clients build their requests,
follow watch streams and convert answers with the same functions (:mod:`etter_client._shared`,
:mod:`etter_client.results`) and raise the same typed errors (:mod:`etter_client.errors`).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path

import grpc
from grpc import aio

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
    history_request,
    push_request,
    retry_request,
    run_options,
    status_request,
    tls,
    usage_request,
)
from etter_client.errors import from_rpc_error
from etter_client.results import BatchQuote, BatchResult, Comparison, Quote, Run, Usage, WatchEvent

__all__ = ["AsyncPipelineClient"]


class AsyncPipelineClient:
    """A ``grpc.aio`` connection to ``etter-server`` acting with one bearer token.

    ``target`` is ``host:port``; ``secure=True`` uses TLS with the system's roots (or pass
    ``credentials``); ``ca_file``, ``cert_file``, ``key_file`` and ``server_name`` as for
    :class:`~etter_client.PipelineClient`. Every call raises an :class:`~etter_client.errors.EtterError` subclass on
    failure, carrying the server's details. Create it inside the event loop that uses it.
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
            self._channel = aio.secure_channel(target, tls_credentials, options=options)
        else:
            self._channel = aio.insecure_channel(target)
        self._stub = PipelineServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self.timeout = timeout
        self.target = target

    def __repr__(self) -> str:
        return f"AsyncPipelineClient({self.target!r})"

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> AsyncPipelineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: aio.UnaryUnaryMultiCallable[Request, Response], request: Request) -> Response:
        """One unary call through a stub method (``self._stub.Push``, …), typed by that method,
        with the token and the deadline; a failure is raised as its typed error."""
        try:
            return await method(request, metadata=self._metadata, timeout=self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def _pages(
        self, method: aio.UnaryUnaryMultiCallable[PageRequest, Page], request: PageRequest
    ) -> AsyncIterator[Page]:
        """Every page of a paged call, asking for the next one only when the caller wants it."""
        while True:
            page = await self._call(method, request)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def push(
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
        """Queues a role; see :meth:`etter_client.PipelineClient.push`."""
        options = run_options(skip_enhancement, priority, force_rerun, notify_on_complete, deadline)
        request = push_request(company_id, role_name, documents, draup_role_id, options, request_id)
        answer = await self._call(self._stub.Push, request)
        return await self.status(answer.workflow_id)

    async def quote(
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
        """What :meth:`push` would answer, without doing it; see
        :meth:`etter_client.PipelineClient.quote`."""
        options = run_options(skip_enhancement, priority, force_rerun, notify_on_complete, deadline)
        request = push_request(company_id, role_name, documents, draup_role_id, options, None, validate_only=True)
        return Quote.from_proto(await self._call(self._stub.Push, request))

    async def push_batch(
        self,
        company_id: str,
        items: Iterable[Mapping[str, object]] | str | Path,
        *,
        skip_enhancement: bool = False,
        priority: str | None = None,
        request_id: str | None = None,
    ) -> BatchResult:
        """Queues many roles at once, from dicts or the path of a CSV; see
        :meth:`etter_client.PipelineClient.push_batch`. The CSV is read before anything is sent."""
        request = batch_request(company_id, batch_rows(items), run_options(skip_enhancement, priority), request_id)
        return BatchResult.from_proto(await self._call(self._stub.PushBatch, request))

    async def quote_batch(
        self,
        company_id: str,
        items: Iterable[Mapping[str, object]] | str | Path,
        *,
        skip_enhancement: bool = False,
        priority: str | None = None,
    ) -> BatchQuote:
        """What :meth:`push_batch` would answer, without doing it; see
        :meth:`etter_client.PipelineClient.quote_batch`. The CSV is read before anything is sent."""
        rows = batch_rows(items)
        request = batch_request(company_id, rows, run_options(skip_enhancement, priority), None, validate_only=True)
        return BatchQuote.from_proto(await self._call(self._stub.PushBatch, request))

    async def status(self, workflow_id: str | None = None, *, role_id: str | None = None) -> Run:
        """A run by workflow id, or a role's latest run by role id."""
        return Run.from_proto((await self._call(self._stub.GetStatus, status_request(workflow_id, role_id))).run)

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
    ) -> AsyncIterator[WatchEvent]:
        """Yields a snapshot, then every event, of one run, a batch or a company's active runs,
        reconnecting and resuming like :meth:`etter_client.PipelineClient.watch` (``async for``)."""
        cursor = WatchCursor(
            workflow_id, batch_id, company_id,
            until_final=until_final, reconnects=reconnects, resume_token=resume_token, after_sequence=after_sequence,
        )
        return self._watch(cursor)

    async def _watch(self, cursor: WatchCursor) -> AsyncIterator[WatchEvent]:
        while True:
            try:
                async for message in self._stub.WatchStatus(cursor.request(), metadata=self._metadata):
                    for event in cursor.observe(message):
                        yield event
                    if cursor.ended(message):
                        return
                if cursor.ended_with_stream():
                    return
            except grpc.RpcError as err:
                error = from_rpc_error(err)
                if not cursor.may_reopen(error):
                    raise error from None
            await asyncio.sleep(cursor.reopen_delay())

    async def retry(
        self,
        workflow_id: str | None = None,
        *,
        role_id: str | None = None,
        steps: Sequence[str] = (),
        request_id: str | None = None,
        model: str | None = None,
    ) -> Run:
        """A new run of a run that failed, degraded, was cancelled or went stale; see
        :meth:`etter_client.PipelineClient.retry`."""
        request = retry_request(workflow_id, role_id, steps, request_id, model)
        return Run.from_proto((await self._call(self._stub.Retry, request)).run)

    async def compare(self, base_workflow_id: str, workflow_id: str) -> Comparison:
        """Two runs of one role step by step; see :meth:`etter_client.PipelineClient.compare`."""
        answer = await self._call(self._stub.CompareRuns, compare_request(base_workflow_id, workflow_id))
        return Comparison.from_proto(answer)

    async def cancel(self, workflow_id: str, reason: str = "", *, request_id: str | None = None) -> Run:
        """Cancels a queued or running run; finished steps keep their outputs."""
        request = cancel_request(workflow_id, reason, request_id)
        return Run.from_proto((await self._call(self._stub.Cancel, request)).run)

    async def history(
        self,
        company_id: str,
        *,
        statuses: Iterable[RunStateLike] = (),
        role_id: str = "",
        batch_id: str = "",
        needs_review: bool | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[Run]:
        """Every run of a company matching the filters, newest first, page after page.
        ``statuses`` are :class:`~etter_client.RunState` members or their names (``"READY"``)."""
        request = history_request(
            company_id, statuses, page_size, role_id=role_id, batch_id=batch_id, needs_review=needs_review
        )
        async for page in self._pages(self._stub.History, request):
            for run in page.runs:
                yield Run.from_proto(run)

    async def usage(self, company_id: str, period: str | None = None) -> Usage:
        """The company's token budget and usage in a month (``YYYY-MM``; this month by default)."""
        return Usage.from_proto(await self._call(self._stub.GetUsage, usage_request(company_id, period)))

    async def audit(
        self, *, company_id: str = "", actor: str = "", action: str = "", denied_only: bool = False, page_size: int = 100
    ) -> AsyncIterator[res.AuditEntry]:
        """The audit log, newest first, page after page (admins only)."""
        request = audit_request(company_id, actor, action, denied_only, page_size)
        async for page in self._pages(self._stub.ListAuditEntries, request):
            for entry in page.entries:
                yield entry

    async def wait(self, workflow_id: str, timeout: float = 300.0, poll: float = 0.5) -> Run:
        """Polls a run until it ends (``watch`` is the streaming way)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            run = await self.status(workflow_id)
            if run.final:
                return run
            if loop.time() > deadline:
                raise TimeoutError(f"{workflow_id} still {run.status} after {timeout}s")
            await asyncio.sleep(poll)
