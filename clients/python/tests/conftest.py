"""The live deployment the client tests and the notebook test run against: the built
`etter-server` and `etter-worker` (target/debug), the embedded SQLite store and graph, the shared
Temporal dev server on a task queue of the test module's own."""

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

from etter_client import PipelineClient  # noqa: E402

# The binaries `cargo build` made (./etter test builds them before the Python phase).
BIN = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target") / "debug"
FIXTURES = REPO / "testdata" / "documents"


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        pytest.fail(f"{name} is not set: run `scripts/services up` and source .etter/services.env")
    return value


class Deployment:
    """One server (and, once started, one worker) on a private data dir and task queue."""

    def __init__(self, root: Path, overrides: dict[str, str] | None = None) -> None:
        for binary in ("etter-server", "etter-worker"):
            if not (BIN / binary).exists():
                pytest.fail(f"{BIN / binary} is not built: cargo build --workspace --all-targets")
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
            # The tests provoke refusals on purpose; the refused-call budget is tested in Rust.
            "ETTER_LIMITS__REFUSED_PER_MINUTE": "1000000",
            **(overrides or {}),
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
