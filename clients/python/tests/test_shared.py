"""What needs no server: :class:`RunState` against the contract's ``RoleStatus``, the request
builders both clients share (quotes and deadlines included), reading quotes, and the asyncio
client offering every method of the sync one with the same arguments.

Run: .etter/venv/bin/python -m pytest clients/python/tests/test_shared.py
"""

from __future__ import annotations

import datetime as dt
import inspect
from pathlib import Path

import pytest
from google.rpc import error_details_pb2

from etter_client import (
    BatchQuote,
    PipelineClient,
    Quote,
    RunState,
    pipeline_service_pb2 as pb,
    resources_pb2 as res,
    to_dataframe,
)
from etter_client._shared import batch_request, batch_rows, history_request, push_request, run_options
from etter_client.aio import AsyncPipelineClient
from etter_client.results import BatchProgress, WatchEvent


@pytest.mark.parametrize("name", res.RoleStatus.keys())
def test_every_role_status_of_the_contract_is_a_run_state_and_back(name: str) -> None:
    value = res.RoleStatus.Value(name)
    state = RunState.from_proto(value)
    assert state.value == name.removeprefix("ROLE_STATUS_")
    assert state.to_proto() == value
    assert RunState.parse(name) is state


@pytest.mark.parametrize("state", list(RunState))
def test_every_run_state_is_a_role_status_of_the_contract(state: RunState) -> None:
    assert res.RoleStatus.Name(state.to_proto()) == "ROLE_STATUS_" + state.name
    assert RunState.from_proto(state.to_proto()) is state


def test_a_state_the_client_does_not_know_reads_as_unspecified() -> None:
    unknown = max(res.RoleStatus.values()) + 1
    assert RunState.from_proto(res.RoleStatus.ValueType(unknown)) is RunState.UNSPECIFIED


def test_run_states_still_behave_as_the_strings_they_replaced() -> None:
    ended = {"READY", "DEGRADED", "FAILED", "CANCELLED", "STALE", "VALIDATION_ERROR"}
    assert {s for s in RunState if s.final} == ended
    assert RunState.READY == "READY" and RunState.READY in ended and "READY" in {RunState.READY}
    assert str(RunState.VALIDATION_ERROR) == f"{RunState.VALIDATION_ERROR}" == "VALIDATION_ERROR"
    assert f"{RunState.READY:<8}|" == "READY   |" and RunState.PROCESSING.lower() == "processing"
    assert RunState.parse("ready") is RunState.parse(" READY ") is RunState.parse(RunState.READY) is RunState.READY
    with pytest.raises(ValueError, match="unknown run state 'DONE'"):
        RunState.parse("DONE")


def test_results_carry_run_states() -> None:
    message = pb.WatchStatusResponse(
        resume_token="t1",
        heartbeat=pb.Heartbeat(
            batch=res.BatchProgress(
                batch_id="b1",
                done=1,
                total=3,
                counts=[
                    res.StatusCount(status=res.ROLE_STATUS_QUEUED, count=2),
                    res.StatusCount(status=res.ROLE_STATUS_VALIDATION_ERROR, count=1),
                ],
            )
        ),
    )
    (event,) = WatchEvent.from_proto(message)
    assert event.kind == "heartbeat" and event.status is None
    progress = event.batch
    assert isinstance(progress, BatchProgress)
    assert progress.counts == {RunState.QUEUED: 2, RunState.VALIDATION_ERROR: 1}
    assert progress.counts["VALIDATION_ERROR"] == 1, "still readable by name"
    assert str(progress).startswith("1/3 ended (QUEUED 2, VALIDATION_ERROR 1)")


def test_history_filters_by_members_and_by_names_alike() -> None:
    by_name = history_request("acme", ["ready", "ROLE_STATUS_FAILED"], 10, batch_id="b1")
    by_member = history_request("acme", [RunState.READY, RunState.FAILED], 10, batch_id="b1")
    assert by_name == by_member
    assert list(by_name.statuses) == [res.ROLE_STATUS_READY, res.ROLE_STATUS_FAILED]
    assert not by_name.HasField("needs_review")
    assert history_request("acme", (), 10, needs_review=False).HasField("needs_review")
    with pytest.raises(ValueError, match="unknown run state"):
        history_request("acme", ["DONE"], 10)


def test_a_batch_from_a_csv_carries_its_priority_request_id_and_typed_documents(tmp_path: Path) -> None:
    csv = tmp_path / "roles.csv"
    csv.write_text(
        "role_name,draup_role_id,documents,client_ref\n"
        "Analyst,draup-1,file:///jd.txt;process_map=file:///map.pdf,row-1\n"
        "Broken,,,row-2\n"
    )
    request = batch_request("acme", batch_rows(csv), run_options(priority="high"), "batch-1")
    assert request.request_id == "batch-1" and request.default_options.priority == res.PRIORITY_HIGH
    first, broken = request.items
    assert [(d.type, d.uri) for d in first.documents] == [
        (res.DOCUMENT_TYPE_JOB_DESCRIPTION, "file:///jd.txt"),
        (res.DOCUMENT_TYPE_PROCESS_MAP, "file:///map.pdf"),
    ]
    assert (first.client_ref, broken.client_ref, list(broken.documents)) == ("row-1", "row-2", [])
    assert batch_rows(str(csv)) == batch_rows(csv)
    assert batch_request("acme", [], run_options(), None).request_id, "a fresh request id by default"


def test_a_batch_item_may_set_its_own_options() -> None:
    rows = [
        {"role_name": "A", "draup_role_id": "d-1", "documents": "file:///a.txt", "options": {"priority": "low"}},
        {"role_name": "B", "draup_role_id": "d-2", "documents": [("supporting", "file:///b.txt")]},
    ]
    request = batch_request("acme", rows, run_options(priority="normal", skip_enhancement=True), None)
    own, default = request.items
    assert own.HasField("options") and own.options.priority == res.PRIORITY_LOW
    assert not default.HasField("options")
    assert [d.type for d in [*own.documents, *default.documents]] == [res.DOCUMENT_TYPE_JOB_DESCRIPTION, res.DOCUMENT_TYPE_SUPPORTING]
    with pytest.raises(ValueError, match="unknown priority 'urgent'"):
        run_options(priority="urgent")


def test_a_quote_is_the_push_or_the_batch_it_quotes_marked_validate_only() -> None:
    options = run_options(priority="high", skip_enhancement=True)
    push = push_request("acme", "Analyst", ["file:///jd.txt"], "d-1", options, "r-1")
    quote = push_request("acme", "Analyst", ["file:///jd.txt"], "d-1", options, "r-1", validate_only=True)
    assert quote.validate_only and not push.validate_only
    quote.validate_only = False
    assert quote == push, "nothing but validate_only differs"

    rows = [{"role_name": "A", "draup_role_id": "d-1", "documents": "file:///a.txt", "client_ref": "row-1"}]
    batch = batch_request("acme", rows, options, "b-1")
    batch_quote = batch_request("acme", rows, options, "b-1", validate_only=True)
    assert batch_quote.validate_only and not batch.validate_only
    batch_quote.validate_only = False
    assert batch_quote == batch


def test_a_deadline_is_a_timezone_aware_datetime() -> None:
    paris = dt.timezone(dt.timedelta(hours=1))
    at = dt.datetime(2030, 1, 2, 9, 30, 15, 250000, tzinfo=paris)
    options = run_options(deadline=at)
    assert options.HasField("deadline")
    assert options.deadline.ToDatetime(tzinfo=dt.timezone.utc) == at
    assert options.deadline.ToJsonString() == "2030-01-02T08:30:15.250Z"
    assert not run_options().HasField("deadline")
    # A batch item's own options may carry one too.
    item = {"role_name": "A", "draup_role_id": "d-1", "documents": "file:///a.txt", "options": {"deadline": at}}
    assert batch_request("acme", [item], run_options(), None).items[0].options.deadline == options.deadline

    with pytest.raises(ValueError, match="a deadline must be a timezone-aware datetime, not the naive 2030-01-02T09:30:00"):
        run_options(deadline=dt.datetime(2030, 1, 2, 9, 30))
    # The clients refuse it before sending anything (nothing listens on this port).
    with PipelineClient("127.0.0.1:9", "token", timeout=1) as client, pytest.raises(ValueError, match="timezone-aware"):
        client.quote("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", deadline=dt.datetime(2030, 1, 2))


def _plan(*steps: tuple[str, res.StepState.ValueType]) -> list[res.PlannedStep]:
    return [res.PlannedStep(name=name, state=state) for name, state in steps]


def test_a_quote_reads_as_what_the_push_would_do() -> None:
    answer = pb.PushResponse(
        workflow_id="role-onboard-cr-acme.analyst-1",
        role_id="cr-acme.analyst",
        status=res.ROLE_STATUS_QUEUED,
        estimated_duration_seconds=95,
        position_in_queue=3,
        token_estimate=res.TokenEstimate(total_tokens=12000, cost_micros=84000, currency="USD"),
        created=True,
        wait_reason=res.WAIT_REASON_COMPANY_CAP,
        plan=_plan(
            ("role_setup", res.STEP_STATE_PENDING),
            ("ai_assessment", res.STEP_STATE_PENDING),
            ("skills_miner", res.STEP_STATE_SKIPPED),
            ("finalize", res.STEP_STATE_PENDING),
        ),
    )
    quote = Quote.from_proto(answer)
    assert (quote.workflow_id, quote.role_id, quote.creates, quote.state) == (
        "role-onboard-cr-acme.analyst-1", "cr-acme.analyst", True, RunState.QUEUED,
    )
    assert (quote.position, quote.wait_reason, quote.eta_seconds) == (3, "COMPANY_CAP", 95)
    assert (quote.tokens, quote.cost_micros, quote.currency, quote.cost) == (12000, 84000, "USD", 0.084)
    assert list(quote.plan.items()) == [
        ("role_setup", "run"), ("ai_assessment", "run"), ("skills_miner", "skip"), ("finalize", "run"),
    ], "in plan order"
    assert str(quote) == (
        "new run role-onboard-cr-acme.analyst-1 [QUEUED] · steps 3 run, 1 skip · 12000 tokens (0.0840 USD)"
        " · about 95 s · #3 in queue · waits COMPANY_CAP"
    )

    existing = Quote.from_proto(
        pb.PushResponse(
            workflow_id="role-onboard-cr-acme.analyst-1",
            status=res.ROLE_STATUS_READY,
            plan=_plan(("role_setup", res.STEP_STATE_REUSED), ("finalize", res.STEP_STATE_REUSED)),
        )
    )
    assert not existing.creates and existing.wait_reason == "" and existing.plan == {"role_setup": "reuse", "finalize": "reuse"}
    assert str(existing) == "existing run role-onboard-cr-acme.analyst-1 [READY] · steps 2 reuse · 0 tokens · about 0 s"

    # A wait reason a newer server added reads as none rather than failing.
    newer = pb.PushResponse(wait_reason=res.WaitReason.ValueType(max(res.WaitReason.values()) + 1))
    assert Quote.from_proto(newer).wait_reason == ""
    table = to_dataframe([quote, existing])
    assert list(table["creates"]) == [True, False] and "proto" not in table.columns


def test_a_batch_quote_reads_per_item_with_totals_and_rejections() -> None:
    violation = error_details_pb2.BadRequest.FieldViolation
    answer = pb.PushBatchResponse(
        items=[
            pb.PushBatchItemResult(
                index=0, client_ref="row-1", outcome=pb.BATCH_ITEM_OUTCOME_ACCEPTED, workflow_id="wf-a-1",
                status=res.ROLE_STATUS_QUEUED, position_in_queue=1, wait_reason=res.WAIT_REASON_NO_WORKER,
                plan=_plan(("role_setup", res.STEP_STATE_PENDING)),
                token_estimate=res.TokenEstimate(total_tokens=500, cost_micros=1000, currency="EUR"),
                estimated_duration_seconds=60,
            ),
            pb.PushBatchItemResult(
                index=1, client_ref="row-2", outcome=pb.BATCH_ITEM_OUTCOME_REJECTED,
                field_violations=[violation(field="documents", description="at least one document is required")],
            ),
            pb.PushBatchItemResult(index=2, client_ref="row-3", outcome=pb.BATCH_ITEM_OUTCOME_DUPLICATE),
            pb.PushBatchItemResult(
                index=3, outcome=pb.BATCH_ITEM_OUTCOME_EXISTING, workflow_id="wf-b-4",
                plan=_plan(("role_setup", res.STEP_STATE_REUSED)), estimated_duration_seconds=30,
            ),
        ],
        progress=res.BatchProgress(estimated_duration_seconds=60),
        token_estimate=res.TokenEstimate(total_tokens=500, cost_micros=1000, currency="EUR"),
    )
    quote = BatchQuote.from_proto(answer)
    assert [i.outcome for i in quote.items] == ["ACCEPTED", "REJECTED", "DUPLICATE", "EXISTING"]
    assert (quote.accepted, quote.rejected, quote.duplicates, quote.existing) == (1, 1, 1, 1)
    assert (quote.tokens, quote.cost_micros, quote.currency, quote.eta_seconds) == (500, 1000, "EUR", 60)
    assert quote.rejections() == {1: ["documents: at least one document is required"]}
    accepted, rejected, _, existing = quote.items
    assert (accepted.plan, accepted.tokens, accepted.wait_reason, accepted.state) == (
        {"role_setup": "run"}, 500, "NO_WORKER", RunState.QUEUED,
    )
    assert existing.plan == {"role_setup": "reuse"} and existing.tokens == 0
    assert str(quote) == "1 accepted, 1 rejected, 1 existing, 1 duplicate · 500 tokens (0.0010 EUR) · the last run ends in about 60 s"
    assert str(accepted) == "#0 row-1 ACCEPTED wf-a-1 · steps 1 run · 500 tokens · about 60 s"
    assert str(rejected) == "#1 row-2 REJECTED: documents: at least one document is required"
    table = to_dataframe(quote.items)
    assert list(table["outcome"]) == ["ACCEPTED", "REJECTED", "DUPLICATE", "EXISTING"]
    assert list(table["violations"])[1] == ["documents: at least one document is required"]


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_the_async_client_has_every_method_of_the_sync_one_with_the_same_arguments() -> None:
    sync, asynchronous = _public_methods(PipelineClient), _public_methods(AsyncPipelineClient)
    assert sorted(sync) == sorted(asynchronous)
    assert {
        "audit", "cancel", "history", "push", "push_batch", "quote", "quote_batch", "retry", "status", "usage", "wait", "watch",
    } <= set(sync)
    for name, signature in sync.items():
        assert list(signature.parameters.values()) == list(asynchronous[name].parameters.values()), name
    assert inspect.signature(PipelineClient.__init__) == inspect.signature(AsyncPipelineClient.__init__)
