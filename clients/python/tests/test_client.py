"""`PipelineClient` and `AsyncPipelineClient` against a live `etter-server` and `etter-worker`
(the built binaries in target/debug, the embedded SQLite store and graph, the shared Temporal dev
server on a task queue of this module's own). What a notebook user does: push, batch with invalid
items, quote a push or a batch before sending it (and nothing is created), watch to READY with a
resume in the middle, cancel, retry, page through history and the audit log, read usage, and get
typed errors with the server's details — with either client.

Run: ./etter test (or, with the services up and the workspace built:
`. .etter/services.env && .etter/venv/bin/python -m pytest clients/python/tests`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterable

import pytest
from google.protobuf.message import Message

from conftest import Deployment
from etter_client import PipelineClient, RunState, errors, resources_pb2 as res, to_dataframe
from etter_client.aio import AsyncPipelineClient

# The server writes its audit log behind the calls it records, so a call's entry may show a moment
# after the call was answered: the audit tests read until what they expect is there.
AUDIT_LAG = 10.0


def _audit_until(read: Callable[[], Iterable[res.AuditEntry]], shows: Callable[[list[res.AuditEntry]], bool]) -> list[res.AuditEntry]:
    deadline = time.monotonic() + AUDIT_LAG
    while True:
        entries = list(read())
        if shows(entries) or time.monotonic() > deadline:
            return entries
        time.sleep(0.3)


def test_bad_tokens_and_invalid_pushes_are_typed_errors_with_details(deployment: Deployment, client: PipelineClient) -> None:
    with PipelineClient(deployment.addr, "not-a-token") as stranger, pytest.raises(errors.Unauthenticated) as refused:
        stranger.status("role-onboard-cr-x-y-1")
    assert refused.value.reason == "UNAUTHENTICATED" and "malformed" in refused.value.message
    assert len(refused.value.trace_id) == 32

    with pytest.raises(errors.InvalidArgument) as invalid:
        client.push(deployment.company, "", [], draup_role_id="")
    fields = {v.field for v in invalid.value.field_violations}
    assert {"role_name", "documents", "draup_role_id"} <= fields, invalid.value

    with pytest.raises(errors.PermissionDenied):
        client.push("someone-else", "Analyst", [deployment.uri()], draup_role_id="draup-1")


def test_a_company_over_its_rate_gets_resource_exhausted_with_retry_after(
    deployment: Deployment, client: PipelineClient
) -> None:
    with pytest.raises(errors.ResourceExhausted) as limited:
        for _ in range(5):
            list(client.history(deployment.slow))
    error = limited.value
    assert error.reason == "RATE_LIMITED"
    assert error.retry_after is not None and 0 < error.retry_after.total_seconds() <= 1
    assert error.quota_violations[0].subject == f"company:{deployment.slow}"


def test_cancel_then_retry_while_nothing_runs(deployment: Deployment, client: PipelineClient) -> None:
    # No worker yet: the run stays queued (or dispatched) until cancelled.
    run = client.push(deployment.company, "Cancelled Engineer", [deployment.uri()], draup_role_id="draup-7")
    assert run.status in {"QUEUED", "PROCESSING"} and run.tokens_estimated > 0
    cancelled = client.cancel(run.workflow_id, "wrong document")
    assert cancelled.status == "CANCELLED" and "wrong document" in cancelled.error
    with pytest.raises(errors.FailedPrecondition) as ended:
        client.cancel(run.workflow_id)
    assert ended.value.preconditions[0].field == "RUN_NOT_ACTIVE"
    retried = client.retry(run.workflow_id)
    assert retried.workflow_id.endswith("-2") and retried.status in {"QUEUED", "PROCESSING"}


def test_a_batch_answers_per_item_and_history_pages_through_it(deployment: Deployment, client: PipelineClient) -> None:
    csv = deployment.root / "roles.csv"
    rows = ["role_name,draup_role_id,documents,client_ref"]
    rows += [f"Batch Engineer {n},draup-{n},{deployment.uri()},row-{n}" for n in range(5)]
    rows += ["Broken Engineer,,,row-bad"]
    csv.write_text("\n".join(rows) + "\n")
    batch = client.push_batch(deployment.company, csv, skip_enhancement=True)
    assert (batch.accepted, batch.rejected) == (5, 1), batch
    (index, problems), = batch.rejections().items()
    assert index == 5 and any(p.startswith("documents") for p in problems) and any("draup_role_id" in p for p in problems)
    seen = [run.workflow_id for run in client.history(deployment.company, batch_id=batch.batch_id, page_size=2)]
    assert len(seen) == len(set(seen)) == 6, seen

    # No worker runs yet: a batch watch opens on a snapshot carrying the batch's progress.
    stream = client.watch(batch_id=batch.batch_id)
    opening = next(stream)
    stream.close()
    progress = opening.batch
    assert opening.kind == "snapshot" and progress is not None, opening
    assert (progress.total, progress.done, progress.counts["VALIDATION_ERROR"]) == (6, 1, 1), progress
    assert not progress.finished and str(progress).startswith("1/6 ended ("), str(progress)


def test_a_batch_sent_again_with_its_request_id_creates_nothing(deployment: Deployment, client: PipelineClient) -> None:
    items = [
        {"role_name": f"Replayed Engineer {n}", "draup_role_id": f"draup-r{n}", "documents": [deployment.uri()]}
        for n in range(3)
    ]
    first = client.push_batch(deployment.company, items, request_id="py-replay-1")
    again = client.push_batch(deployment.company, items, request_id="py-replay-1")
    assert first.created and not again.created, (first, again)
    assert again.batch_id == first.batch_id and again.workflow_ids == first.workflow_ids
    runs = [run.workflow_id for run in client.history(deployment.company, batch_id=first.batch_id)]
    assert sorted(runs) == sorted(first.workflow_ids), "the replay queued no new run"


def test_admins_read_the_audit_log_and_operators_are_refused(deployment: Deployment, client: PipelineClient) -> None:
    run = client.push(deployment.company, "Audited Engineer", [deployment.uri()], draup_role_id="draup-au")
    with pytest.raises(errors.PermissionDenied):
        next(client.audit(company_id=deployment.company))
    with deployment.client("--role", "admin", "--user", "py-admin") as admin:
        pushes = _audit_until(
            lambda: admin.audit(company_id=deployment.company, action="Push", page_size=2),
            lambda entries: any(e.target == run.workflow_id for e in entries),
        )
        denied = _audit_until(
            lambda: admin.audit(actor="dev", denied_only=True),
            lambda entries: any(e.action == "ListAuditEntries" for e in entries),
        )
    assert run.status in {"QUEUED", "PROCESSING"}
    assert any(e.target == run.workflow_id and e.outcome == "OK" for e in pushes), [e.target for e in pushes]
    assert all(e.company_id == deployment.company and e.action == "Push" for e in pushes)
    assert len({e.sequence for e in pushes}) == len(pushes) > 1, "paged without repeats"
    assert any(e.action == "ListAuditEntries" and e.outcome == "PERMISSION_DENIED" for e in denied), denied[:3]


def test_the_async_client_batches_a_csv_with_priority_and_request_id_and_reads_the_audit_log(
    deployment: Deployment,
) -> None:
    csv = deployment.root / "async-roles.csv"
    rows = ["role_name,draup_role_id,documents,client_ref"]
    rows += [f"Async Batch Engineer {n},draup-ab{n},job_description={deployment.uri()},row-{n}" for n in range(3)]
    rows += ["Async Broken Engineer,,,row-bad"]
    csv.write_text("\n".join(rows) + "\n")
    request_id = "py-async-batch-1"

    async def scenario() -> None:
        operator = deployment.token("--company", deployment.company, "--role", "operator", "--user", "py-async-operator")
        async with AsyncPipelineClient(deployment.addr, operator) as client:
            first = await client.push_batch(deployment.company, csv, priority="high", request_id=request_id)
            again = await client.push_batch(deployment.company, str(csv), priority="high", request_id=request_id)
            assert (first.accepted, first.rejected) == (3, 1), first
            assert first.created and not again.created, (first, again)
            assert again.batch_id == first.batch_id and again.workflow_ids == first.workflow_ids
            assert list(first.rejections()) == [3]

            runs = [run async for run in client.history(deployment.company, batch_id=first.batch_id, page_size=2)]
            assert len(runs) == len({r.workflow_id for r in runs}) == 4, runs
            assert all(r.proto.options.priority == res.PRIORITY_HIGH for r in runs), [r.proto.options for r in runs]
            # Without a worker a run stays queued, or dispatched (PROCESSING) at most.
            active = {RunState.QUEUED, RunState.PROCESSING}
            assert sorted(r.status in active for r in runs) == [False, True, True, True], runs
            rejected = [
                run async for run in client.history(
                    deployment.company, batch_id=first.batch_id, statuses=[RunState.VALIDATION_ERROR]
                )
            ]
            by_name = [
                run async for run in client.history(deployment.company, batch_id=first.batch_id, statuses=["queued", "PROCESSING"])
            ]
            assert [r.role_name for r in rejected] == ["Async Broken Engineer"], rejected
            assert sorted(r.workflow_id for r in by_name) == sorted(first.workflow_ids)

            # No worker runs yet: the batch watch opens on a snapshot with the batch's progress.
            stream = client.watch(batch_id=first.batch_id)
            opening = await stream.__anext__()
            await stream.aclose()
            assert opening.kind == "snapshot" and opening.batch is not None, opening
            progress = opening.batch
            assert (progress.total, progress.done, progress.counts[RunState.VALIDATION_ERROR]) == (4, 1, 1), progress
            assert set(progress.counts) <= active | {RunState.VALIDATION_ERROR}, progress

            with pytest.raises(errors.PermissionDenied):
                await client.audit(company_id=deployment.company).__anext__()

        admin = deployment.token("--role", "admin", "--user", "py-async-admin")
        async with AsyncPipelineClient(deployment.addr, admin) as client:
            deadline = time.monotonic() + AUDIT_LAG
            while True:  # the log is written behind the calls (see AUDIT_LAG)
                batches = [e async for e in client.audit(company_id=deployment.company, action="PushBatch", page_size=1)]
                denied = [e async for e in client.audit(actor="py-async-operator", denied_only=True)]
                written = sum(e.request_id == request_id for e in batches) == 2
                if (written and any(e.action == "ListAuditEntries" for e in denied)) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.3)
        assert len({e.sequence for e in batches}) == len(batches) > 1, "paged without repeats"
        ours = [e for e in batches if e.request_id == request_id]
        assert len(ours) == 2 and all(e.target == first.batch_id and e.outcome == "OK" for e in ours), ours
        assert any(e.action == "ListAuditEntries" and e.outcome == "PERMISSION_DENIED" for e in denied), denied[:3]

    asyncio.run(scenario())


def test_the_async_client_cancels_retries_by_role_and_raises_typed_errors_with_details(deployment: Deployment) -> None:
    async def scenario() -> None:
        async with AsyncPipelineClient(deployment.addr, "not-a-token") as stranger:
            with pytest.raises(errors.Unauthenticated) as refused:
                await stranger.status("role-onboard-cr-x-y-1")
        assert refused.value.reason == "UNAUTHENTICATED" and len(refused.value.trace_id) == 32

        operator = deployment.token("--company", deployment.company, "--role", "operator")
        async with AsyncPipelineClient(deployment.addr, operator) as client:
            with pytest.raises(errors.InvalidArgument) as invalid:
                await client.push(deployment.company, "", [], draup_role_id="")
            assert invalid.value.reason and len(invalid.value.trace_id) == 32, invalid.value
            fields = {v.field for v in invalid.value.field_violations}
            assert {"role_name", "documents", "draup_role_id"} <= fields, invalid.value

            run = await client.push(
                deployment.company, "Async Cancelled Engineer", [deployment.uri()], draup_role_id="draup-ac",
                priority="low", request_id="py-async-push-1",
            )
            assert run.status in {RunState.QUEUED, RunState.PROCESSING} and run.proto.options.priority == res.PRIORITY_LOW
            cancelled = await client.cancel(run.workflow_id, "wrong document", request_id="py-async-cancel-1")
            assert cancelled.status is RunState.CANCELLED and "wrong document" in cancelled.error
            with pytest.raises(errors.FailedPrecondition) as ended:
                await client.cancel(run.workflow_id)
            assert ended.value.preconditions[0].field == "RUN_NOT_ACTIVE"
            retried = await client.retry(role_id=run.role_id, request_id="py-async-retry-1")
            assert retried.workflow_id == run.workflow_id.removesuffix("-1") + "-2", retried
            assert (await client.status(role_id=run.role_id)).workflow_id == retried.workflow_id

    asyncio.run(scenario())


def _refusal(error: errors.EtterError) -> tuple[type, str, list[str]]:
    """What a caller acts on in a refusal: its type, reason and the fields it names."""
    return type(error), error.reason, [v.field for v in error.field_violations]


def test_a_quote_answers_what_a_push_would_and_creates_nothing(deployment: Deployment) -> None:
    company = deployment.company + "quote"
    missing = f"file://{deployment.docs / 'not_there.txt'}"
    with deployment.client("--company", company, "--role", "operator") as client:
        reserved = client.usage(company).reserved_tokens

        # A new role: the answer a push would give. No worker runs yet, so the run would wait for one.
        quote = client.quote(company, "Quoted Engineer", [deployment.uri()], draup_role_id="draup-q")
        assert quote.creates and quote.state is RunState.QUEUED and quote.position == 1, quote
        assert quote.workflow_id.endswith(".quoted-engineer-1") and quote.wait_reason == "NO_WORKER", quote
        assert quote.tokens > 0 and quote.eta_seconds > 0, quote
        assert list(quote.plan)[:3] == ["role_setup", "document_linking", "ai_assessment"], quote.plan
        assert set(quote.plan.values()) == {"run"} and "finalize" in quote.plan, quote.plan
        assert str(quote).startswith(f"new run {quote.workflow_id} [QUEUED]"), str(quote)

        # ... and nothing was created or reserved.
        with pytest.raises(errors.NotFound):
            client.status(quote.workflow_id)
        with pytest.raises(errors.NotFound):
            client.status(role_id=quote.role_id)
        assert list(client.history(company)) == []
        assert client.usage(company).reserved_tokens == reserved

        # A quote is refused exactly as the push would be.
        with pytest.raises(errors.InvalidArgument) as quoted:
            client.quote(company, "Quoted Engineer", [missing], draup_role_id="draup-q")
        with pytest.raises(errors.InvalidArgument) as pushed:
            client.push(company, "Quoted Engineer", [missing], draup_role_id="draup-q")
        assert _refusal(quoted.value) == _refusal(pushed.value) == (errors.InvalidArgument, "INVALID_DOCUMENT", ["documents[0].uri"])
        assert "not_there.txt" in quoted.value.message, quoted.value

        # The push then gets what the quote said; a quote of the same inputs is answered by that
        # run, which every step of the role comes from (nothing new runs, nothing more reserved).
        run = client.push(company, "Quoted Engineer", [deployment.uri()], draup_role_id="draup-q")
        assert (run.workflow_id, run.tokens_estimated) == (quote.workflow_id, quote.tokens), (run, quote)
        assert run.wait_reason == "NO_WORKER" and run.current_step == "", run
        again = client.quote(company, "Quoted Engineer", [deployment.uri()], draup_role_id="draup-q")
        # (Its workflow may have started meanwhile: no worker takes it, so it never gets further.)
        assert not again.creates and again.workflow_id == run.workflow_id, again
        assert again.state in (RunState.QUEUED, RunState.PROCESSING), again
        assert list(again.plan) == list(quote.plan) and set(again.plan.values()) == {"reuse"}, again.plan
        assert str(again).startswith(f"existing run {run.workflow_id}"), str(again)
        assert [r.workflow_id for r in client.history(company)] == [run.workflow_id]
        assert client.usage(company).reserved_tokens == reserved + run.tokens_estimated

        # A deadline the run cannot meet refuses the quote as it refuses the push.
        soon = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=30)
        with pytest.raises(errors.FailedPrecondition) as late_quote:
            client.quote(company, "Hurried Engineer", [deployment.uri()], draup_role_id="draup-h", deadline=soon)
        with pytest.raises(errors.FailedPrecondition) as late_push:
            client.push(company, "Hurried Engineer", [deployment.uri()], draup_role_id="draup-h", deadline=soon)
        assert _refusal(late_quote.value) == _refusal(late_push.value), (late_quote.value, late_push.value)
        assert late_quote.value.reason == "DEADLINE_UNREACHABLE", late_quote.value
        assert [r.workflow_id for r in client.history(company)] == [run.workflow_id]

    # Quotes are audited as quotes, apart from the pushes.
    with deployment.client("--role", "admin", "--user", "py-quote-admin") as admin:
        quotes = _audit_until(
            lambda: admin.audit(company_id=company, action="Push:validate_only"),
            lambda entries: len(entries) >= 4,
        )
        pushes = _audit_until(lambda: admin.audit(company_id=company, action="Push"), lambda entries: len(entries) >= 3)
    assert sorted(e.outcome for e in quotes) == ["FAILED_PRECONDITION", "INVALID_ARGUMENT", "OK", "OK"], quotes
    assert {e.target for e in quotes if e.outcome == "OK"} == {run.workflow_id}, quotes
    assert sorted(e.outcome for e in pushes) == ["FAILED_PRECONDITION", "INVALID_ARGUMENT", "OK"], pushes


def test_a_batch_quote_answers_per_item_and_creates_nothing(deployment: Deployment) -> None:
    company = deployment.company + "qbatch"
    with deployment.client("--company", company, "--role", "operator") as client:
        existing = client.push(company, "Pushed Engineer", [deployment.uri()], draup_role_id="draup-p")
        # Started (no worker takes it, but its workflow starts): nothing of the company is queued.
        deadline = time.monotonic() + 30
        while client.status(existing.workflow_id).status is not RunState.PROCESSING:
            assert time.monotonic() < deadline, client.status(existing.workflow_id)
            time.sleep(0.1)
        reserved = client.usage(company).reserved_tokens
        single = client.quote(company, "Planned Engineer", [deployment.uri()], draup_role_id="draup-n")
        items = [
            {"role_name": "Planned Engineer", "draup_role_id": "draup-n", "documents": [deployment.uri()], "client_ref": "row-1"},
            {"role_name": "Broken Engineer", "draup_role_id": "", "documents": [], "client_ref": "row-2"},
            {"role_name": "Planned Engineer", "draup_role_id": "draup-n", "documents": [deployment.uri()], "client_ref": "row-3"},
            {"role_name": "Pushed Engineer", "draup_role_id": "draup-p", "documents": [deployment.uri()], "client_ref": "row-4"},
        ]
        quote = client.quote_batch(company, items)

        assert [(i.index, i.client_ref, i.outcome) for i in quote.items] == [
            (0, "row-1", "ACCEPTED"), (1, "row-2", "REJECTED"), (2, "row-3", "DUPLICATE"), (3, "row-4", "EXISTING"),
        ], quote.items
        new, broken, duplicate, known = quote.items
        assert (quote.accepted, quote.rejected, quote.duplicates, quote.existing) == (1, 1, 1, 1), quote
        # The accepted item is planned and estimated as a quote of it alone is.
        assert (new.workflow_id, new.plan, new.tokens) == (single.workflow_id, single.plan, single.tokens), (new, single)
        # First in the queue (the pushed run has started), waiting for a worker (none runs yet).
        assert new.position == single.position == 1 and new.wait_reason == "NO_WORKER" and new.eta_seconds > 0, new
        assert any(v.startswith("documents") for v in broken.violations), broken
        assert any(v.startswith("draup_role_id") for v in broken.violations), broken
        assert quote.rejections() == {1: broken.violations}
        assert duplicate.violations and not duplicate.plan and duplicate.tokens == 0, duplicate
        assert known.workflow_id == existing.workflow_id and set(known.plan.values()) == {"reuse"}, known
        assert known.tokens == 0, "the existing run costs nothing more"
        # The totals: what the accepted item costs, and when the last new run would end.
        assert (quote.tokens, quote.eta_seconds) == (new.tokens, new.eta_seconds), quote
        assert str(quote).startswith("1 accepted, 1 rejected, 1 existing, 1 duplicate"), str(quote)
        assert str(broken).startswith("#1 row-2 REJECTED: "), str(broken)

        # Nothing was created or reserved, not even the rejected item's VALIDATION_ERROR run.
        assert [r.workflow_id for r in client.history(company)] == [existing.workflow_id]
        with pytest.raises(errors.NotFound):
            client.status(new.workflow_id)
        assert client.usage(company).reserved_tokens == reserved

        table = to_dataframe(quote.items)
        assert list(table["outcome"]) == ["ACCEPTED", "REJECTED", "DUPLICATE", "EXISTING"]
        assert list(table["tokens"]) == [new.tokens, 0, 0, 0]


def test_a_deadline_in_the_past_or_without_a_timezone_is_refused(deployment: Deployment, client: PipelineClient) -> None:
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    with pytest.raises(errors.InvalidArgument) as invalid:
        client.push(deployment.company, "Late Engineer", [deployment.uri()], draup_role_id="draup-l", deadline=past)
    assert [v.field for v in invalid.value.field_violations] == ["options.deadline"], invalid.value
    assert "must be in the future" in invalid.value.field_violations[0].description
    with pytest.raises(ValueError, match="timezone-aware"):
        client.push(deployment.company, "Late Engineer", [deployment.uri()], draup_role_id="draup-l", deadline=dt.datetime(2030, 1, 1))
    assert not [r for r in client.history(deployment.company) if r.role_name == "Late Engineer"]


def test_the_async_client_quotes_like_the_sync_one(deployment: Deployment) -> None:
    company = deployment.company + "qasync"

    async def scenario() -> None:
        token = deployment.token("--company", company, "--role", "operator")
        async with AsyncPipelineClient(deployment.addr, token) as client:
            quote = await client.quote(
                company, "Async Quoted Engineer", [deployment.uri()], draup_role_id="draup-aq", skip_enhancement=True
            )
            assert quote.creates and quote.state is RunState.QUEUED and quote.tokens > 0, quote
            runs = {step for step, what in quote.plan.items() if what == "run"}
            assert runs == {"role_setup", "document_linking", "ai_assessment", "finalize"}, quote.plan
            assert "skill" in " ".join(s for s, what in quote.plan.items() if what == "skip"), quote.plan
            with pytest.raises(errors.NotFound):
                await client.status(quote.workflow_id)

            batch = await client.quote_batch(
                company,
                [
                    {"role_name": "Async Quoted Engineer", "draup_role_id": "draup-aq", "documents": [deployment.uri()]},
                    {"role_name": "Async Broken Engineer", "draup_role_id": "draup-ab", "documents": []},
                ],
                skip_enhancement=True,
            )
            assert [i.outcome for i in batch.items] == ["ACCEPTED", "REJECTED"], batch.items
            assert batch.items[0].plan == quote.plan and batch.tokens == quote.tokens, batch
            assert list(batch.rejections()) == [1]

            past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
            with pytest.raises(errors.InvalidArgument) as invalid:
                await client.quote(company, "Async Late Engineer", [deployment.uri()], draup_role_id="draup-al", deadline=past)
            assert [v.field for v in invalid.value.field_violations] == ["options.deadline"], invalid.value
            assert [run async for run in client.history(company)] == []

    asyncio.run(scenario())


def test_watch_to_ready_resuming_in_the_middle_then_usage(deployment: Deployment, client: PipelineClient) -> None:
    deployment.start_worker()
    run = client.push(deployment.company, "Watched Engineer", [deployment.uri()], draup_role_id="draup-9", skip_enhancement=True)
    # From the first event after the push (no snapshot): every event to READY.
    continuous = [e for e in client.watch(workflow_id=run.workflow_id, after_sequence=1) if e.kind == "event"]
    assert continuous[-1].status == "READY", continuous[-1]
    sequences = [e.sequence for e in continuous]
    assert sequences == sorted(set(sequences)), "in order, none repeated"

    # A watcher that stops after three events and resumes after the last one it saw sees exactly
    # the same events.
    first = []
    for event in client.watch(workflow_id=run.workflow_id, after_sequence=1):
        first.append(event)
        if len(first) == 3:
            break
    resumed = client.watch(workflow_id=run.workflow_id, after_sequence=first[-1].sequence)
    rest = [e for e in resumed if e.kind == "event"]
    assert [e.sequence for e in first + rest] == sequences

    done = client.status(run.workflow_id)
    assert done.final and done.status == "READY" and done.steps_done == done.steps_total
    usage = client.usage(deployment.company)
    assert usage.used_tokens > 0 and usage.by_step and usage.period == time.strftime("%Y-%m", time.gmtime())
    assert usage.budget_tokens == 0 and usage.remaining_tokens is None, "no budget: nothing is said to remain"


def test_the_async_client_pushes_watches_to_the_end_and_reads(deployment: Deployment) -> None:
    async def scenario() -> None:
        token = deployment.token("--company", deployment.company, "--role", "operator")
        async with AsyncPipelineClient(deployment.addr, token) as client:
            run = await client.push(
                deployment.company, "Async Engineer", [deployment.uri()], draup_role_id="draup-a", skip_enhancement=True
            )
            events = [e async for e in client.watch(workflow_id=run.workflow_id)]
            changes = [e.status for e in events if e.kind == "event" and e.status is not None]
            assert changes and changes[-1] in {RunState.READY, RunState.DEGRADED}, events
            sequences = [e.sequence for e in events if e.kind == "event"]
            assert sequences == sorted(set(sequences)), "in order, none repeated"
            final = await client.wait(run.workflow_id, timeout=120)
            assert final.final and final.status is changes[-1]
            usage = await client.usage(deployment.company)
            assert usage.used_tokens > 0 and usage.by_step
            with pytest.raises(errors.NotFound):
                await client.status("role-onboard-cr-nobody-nothing-1")

    asyncio.run(scenario())


def test_a_retry_with_another_model_compares_as_dataframe_ready_records(
    deployment: Deployment, client: PipelineClient
) -> None:
    deployment.start_worker()
    first = client.push(
        deployment.company, "Compared Engineer", [deployment.uri()], draup_role_id="draup-c", skip_enhancement=True
    )
    first = client.wait(first.workflow_id, timeout=120)
    assert first.status == "READY", first

    with pytest.raises(errors.InvalidArgument) as refused:
        client.retry(first.workflow_id, model="no-such-model")
    assert "offline, offline-cautious" in str(refused.value)

    second = client.wait(client.retry(first.workflow_id, model="offline-cautious").workflow_id, timeout=120)
    assert second.status == "READY", second
    comparison = client.compare(first.workflow_id, second.workflow_id)
    assert comparison.base.workflow_id == first.workflow_id and comparison.run.workflow_id == second.workflow_id

    records = comparison.records()
    by_step = {r["step"]: r for r in records}
    # One plain row per step: no message, nothing nested but the lists of names.
    assert set(records[0]) >= {"step", "ran", "input_changed", "base_model", "run_model", "run_tokens", "added"}
    assert all(not isinstance(v, Message) for r in records for v in r.values())
    assessment = by_step["ai_assessment"]
    assert assessment["ran"] and assessment["model_changed"], assessment
    assert (assessment["base_model"], assessment["run_model"]) == ("offline", "offline-cautious")
    assert not by_step["role_setup"]["ran"] and by_step["role_setup"]["run_status"] == "REUSED"
    # Enhancements were off for both runs: those steps were skipped in each.
    assert by_step["reskilling"]["base_status"] == by_step["reskilling"]["run_status"] == "SKIPPED"

    changes = comparison.output_changes()
    rescored = [c for c in changes if c["step"] == "ai_assessment" and c["score"] == "confidence"]
    assert rescored, changes
    assert all(c["change"] == "changed" and c["run"] < c["base"] for c in rescored), rescored

    # pandas is in the test environment (scripts/lib/python-requirements.txt).
    import pandas

    frame = pandas.DataFrame(records)
    assert len(frame) == len(records) and frame.set_index("step").loc["ai_assessment", "model_changed"]
    assert len(pandas.DataFrame(changes)) == len(changes)

    # Usage is there per day too, and the days add up to the month.
    usage = client.usage(deployment.company)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert usage.by_day.get(today, 0) > 0 and sum(usage.by_day.values()) == usage.used_tokens, usage
