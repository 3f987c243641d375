"""The asyncio twin of :class:`etter_client.PipelineClient`, over ``grpc.aio``::

    async with AsyncPipelineClient("127.0.0.1:50051", token) as client:
        run = await client.push("acme", "Claims Adjuster", ["file:///docs/jd.pdf"], draup_role_id="draup-1")
        async for event in client.watch(workflow_id=run.workflow_id):
            print(event)
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_status import rpc_status

from etter_client._gen.etter.pipeline.v1 import pipeline_service_pb2 as pb
from etter_client._gen.etter.pipeline.v1.pipeline_service_pb2_grpc import PipelineServiceStub
from etter_client.client import (
    _FINAL,
    BatchResult,
    Run,
    Usage,
    WatchEvent,
    _options,
    batch_request,
    history_request,
    push_request,
    status_request,
    watch_request,
)
from etter_client.errors import EtterError, from_status, metadata_value

__all__ = ["AsyncPipelineClient"]


async def _typed(err: aio.AioRpcError) -> EtterError:
    status = None
    try:
        status = await rpc_status.aio.from_call(err)  # type: ignore[attr-defined]  # present at run time, not in the stubs
    except (AttributeError, ValueError, TypeError):
        status = None
    trace_id = metadata_value(err.initial_metadata(), "etter-trace-id") or metadata_value(
        err.trailing_metadata(), "etter-trace-id"
    )
    return from_status(err.code(), err.details() or "", status, trace_id)


class AsyncPipelineClient:
    """A ``grpc.aio`` connection to ``etter-server`` acting with one bearer token."""

    def __init__(self, target: str, token: str, *, credentials: grpc.ChannelCredentials | None = None, timeout: float = 30.0) -> None:
        self._channel = aio.secure_channel(target, credentials) if credentials else aio.insecure_channel(target)
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

    async def _call(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self._stub, method)(request, metadata=self._metadata, timeout=self.timeout)
        except aio.AioRpcError as err:
            raise await _typed(err) from None

    async def push(
        self,
        company_id: str,
        role_name: str,
        documents: Sequence[Any],
        *,
        draup_role_id: str,
        skip_enhancement: bool = False,
        priority: str | None = None,
        request_id: str | None = None,
    ) -> Run:
        """See :meth:`etter_client.PipelineClient.push`."""
        options = _options(skip_enhancement, priority)
        answer = await self._call("Push", push_request(company_id, role_name, documents, draup_role_id, options, request_id))
        return await self.status(answer.workflow_id)

    async def push_batch(self, company_id: str, items: Sequence[Mapping[str, Any]], *, skip_enhancement: bool = False) -> BatchResult:
        """See :meth:`etter_client.PipelineClient.push_batch` (dicts only)."""
        request = batch_request(company_id, items, _options(skip_enhancement), None)
        return BatchResult.from_proto(await self._call("PushBatch", request))

    async def status(self, workflow_id: str | None = None, *, role_id: str | None = None) -> Run:
        """A run by workflow id, or a role's latest run."""
        return Run.from_proto((await self._call("GetStatus", status_request(workflow_id, role_id))).run)

    async def wait(self, workflow_id: str, timeout: float = 300.0, poll: float = 0.5) -> Run:
        """Polls a run until it ends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            run = await self.status(workflow_id)
            if run.final:
                return run
            if loop.time() > deadline:
                raise TimeoutError(f"{workflow_id} still {run.status} after {timeout}s")
            await asyncio.sleep(poll)

    async def cancel(self, workflow_id: str, reason: str = "") -> Run:
        """Cancels a queued or running run."""
        request = pb.CancelRequest(workflow_id=workflow_id, reason=reason, request_id=str(uuid.uuid4()))
        return Run.from_proto((await self._call("Cancel", request)).run)

    async def retry(self, workflow_id: str, *, steps: Sequence[str] = ()) -> Run:
        """A new run of a run that failed, degraded, was cancelled or went stale."""
        request = pb.RetryRequest(workflow_id=workflow_id, steps=list(steps), request_id=str(uuid.uuid4()))
        return Run.from_proto((await self._call("Retry", request)).run)

    async def history(self, company_id: str, *, statuses: Sequence[str] = (), page_size: int = 100) -> AsyncIterator[Run]:
        """Every run of a company, newest first, page after page."""
        request = history_request(company_id, statuses, page_size)
        while True:
            page = await self._call("History", request)
            for run in page.runs:
                yield Run.from_proto(run)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def usage(self, company_id: str, period: str | None = None) -> Usage:
        """The company's token budget and usage in a month."""
        return Usage.from_proto(await self._call("GetUsage", pb.GetUsageRequest(company_id=company_id, period=period or "")))

    async def watch(
        self, *, workflow_id: str | None = None, batch_id: str | None = None, company_id: str | None = None
    ) -> AsyncIterator[WatchEvent]:
        """Events of one run, a batch or a company's active runs; reconnects and resumes like
        :meth:`etter_client.PipelineClient.watch`; a run or batch watch ends when all ended."""
        token, after, failures = "", 0, 0
        statuses: dict[str, str] = {}
        while True:
            request = watch_request(workflow_id, batch_id, company_id, token, after)
            try:
                async for message in self._stub.WatchStatus(request, metadata=self._metadata):
                    failures = 0
                    token = message.resume_token or token
                    for event in WatchEvent.from_proto(message):
                        if event.workflow_id and event.status:
                            statuses[event.workflow_id] = event.status
                        if workflow_id and event.kind in ("event", "snapshot"):
                            after = max(after, event.sequence)
                        yield event
                if not company_id and statuses and all(s in _FINAL for s in statuses.values()):
                    return
            except aio.AioRpcError as err:
                if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) or failures >= 20:
                    raise await _typed(err) from None
            failures += 1
            await asyncio.sleep(min(0.2 * failures, 2.0))
