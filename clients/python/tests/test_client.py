"""`PipelineClient` against a live `etter-server` and `etter-worker` (the built binaries in
target/debug, the embedded SQLite store and graph, the shared Temporal dev server on a task queue
of this module's own). What a notebook user does: push, batch with invalid items, watch to READY
with a resume in the middle, cancel, retry, page through history, read usage, and get typed
errors with the server's details.

Run: ./etter test (or, with the services up and the workspace built:
`. .etter/services.env && .etter/venv/bin/python -m pytest clients/python/tests`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "clients" / "python" / "src"))

from etter_client import PipelineClient, errors  # noqa: E402

# The binaries `cargo build` made (./etter test builds them before the Python phase).
BIN = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "debug"
FIXTURES = REPO / "pipeline" / "tests" / "fixtures" / "documents"


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"{name} is not set: run `scripts/services up` and source .etter/services.env")
    return value


class Deployment:
    """One server (and, once started, one worker) on a private data dir and task queue."""

    def __init__(self, root: Path) -> None:
        for binary in ("etter-server", "etter-worker"):
            if not (BIN / binary).exists():
                pytest.fail(f"{BIN / binary} is not built: cargo build --workspace --all-targets --all-features")
        self.root = root
        self.docs = root / "docs"
        self.docs.mkdir(parents=True)
        shutil.copy(FIXTURES / "software_engineer_jd.txt", self.docs / "jd.txt")
        self.company = "py" + uuid.uuid4().hex[:12]
        self.slow = self.company + "slow"
        companies = root / "companies.toml"
        companies.write_text(f"[companies.{self.slow}]\ncalls_per_minute = 60\nburst = 2\n")
        self.env = {
            **os.environ,
            "ETTER_DATA_DIR": str(root / "data"),
            "ETTER_STORE__URL": "",
            "ETTER_GRAPH__URI": "",
            "ETTER_REDIS__URL": "",
            "ETTER_TEMPORAL__ADDRESS": _env("ETTER_TEMPORAL__ADDRESS"),
            "ETTER_TEMPORAL__NAMESPACE": _env("ETTER_TEMPORAL__NAMESPACE"),
            "ETTER_TEMPORAL__TASK_QUEUE": f"etter-python-{self.company}",
            "ETTER_DOCUMENTS__FILE_ROOT": str(self.docs),
            "ETTER_SERVER__LISTEN": "127.0.0.1:0",
            "ETTER_SERVER__METRICS_LISTEN": "127.0.0.1:0",
            "ETTER_SERVER__COMPANIES_FILE": str(companies),
            "ETTER_SERVER__WATCH_POLL_INTERVAL": "100ms",
            "ETTER_SERVER__WATCH_HEARTBEAT_INTERVAL": "1s",
            "ETTER_DISPATCH__POLL_INTERVAL": "200ms",
            "ETTER_WORKER__METRICS_LISTEN": "127.0.0.1:0",
            "ETTER_WORKER__STALENESS_SCAN_INTERVAL": "0s",
            "ETTER_LOG__FILTER": "warn",
        }
        self.processes: list[subprocess.Popen[str]] = []
        self.addr = self._start("etter-server", "serve")["grpc_addr"]

    def _start(self, binary: str, command: str) -> dict:
        log = (self.root / f"{binary}.log").open("w")
        proc = subprocess.Popen(
            [str(BIN / binary), command], env=self.env, stdout=subprocess.PIPE, stderr=log, text=True
        )
        self.processes.append(proc)
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"{binary} exited before it was ready; see {self.root / (binary + '.log')}")
            try:
                ready = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "ready" in ready:
                return ready
        pytest.fail(f"{binary} printed no readiness line within 60 s")

    def start_worker(self) -> None:
        self._start("etter-worker", "run")

    def token(self, *args: str) -> str:
        out = subprocess.run(
            [str(BIN / "etter-server"), "token", *args], env=self.env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def client(self, *args: str) -> PipelineClient:
        return PipelineClient(self.addr, self.token(*args))

    def uri(self) -> str:
        return f"file://{self.docs / 'jd.txt'}"

    def stop(self) -> None:
        for proc in self.processes:
            proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("etter-client-live"))
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def client(deployment: Deployment) -> Iterator[PipelineClient]:
    with deployment.client("--company", deployment.company, "--company", deployment.slow, "--role", "operator") as c:
        yield c


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


def test_the_async_client_pushes_and_reads(deployment: Deployment) -> None:
    import asyncio

    from etter_client.aio import AsyncPipelineClient

    async def scenario() -> str:
        token = deployment.token("--company", deployment.company, "--role", "operator")
        async with AsyncPipelineClient(deployment.addr, token) as client:
            run = await client.push(deployment.company, "Async Engineer", [deployment.uri()], draup_role_id="draup-a")
            final = await client.wait(run.workflow_id, timeout=120)
            with pytest.raises(errors.NotFound):
                await client.status("role-onboard-cr-nobody-nothing-1")
            return final.status

    assert asyncio.run(scenario()) in {"READY", "DEGRADED"}
