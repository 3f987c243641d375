"""What needs no server: :class:`RunState` against the contract's ``RoleStatus``, the request
builders both clients share, and the asyncio client offering every method of the sync one with
the same arguments.

Run: .etter/venv/bin/python -m pytest clients/python/tests/test_shared.py
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from etter_client import PipelineClient, RunState, pipeline_service_pb2 as pb, resources_pb2 as res
from etter_client._shared import batch_request, batch_rows, history_request, run_options
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


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_the_async_client_has_every_method_of_the_sync_one_with_the_same_arguments() -> None:
    sync, asynchronous = _public_methods(PipelineClient), _public_methods(AsyncPipelineClient)
    assert sorted(sync) == sorted(asynchronous)
    assert {"audit", "cancel", "history", "push", "push_batch", "retry", "status", "usage", "wait", "watch"} <= set(sync)
    for name, signature in sync.items():
        assert list(signature.parameters.values()) == list(asynchronous[name].parameters.values()), name
    assert inspect.signature(PipelineClient.__init__) == inspect.signature(AsyncPipelineClient.__init__)
