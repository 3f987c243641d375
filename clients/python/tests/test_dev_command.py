"""The README's first command, `./etter dev`, run the way a newcomer runs it: in a temporary
directory of its own (data, documents, logs), on ports of its own, against the shared Temporal
dev server. It must push the bundled sample roles, show their progress until every one is READY,
print where to look next, stop every process it started on SIGINT, and reuse its data when run
again. Statuses are checked through the public API, not the command's output alone.

The workspace build the command starts is a no-op here: `./etter test` built it just before.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import time
import uuid
from pathlib import Path

from conftest import BIN, REPO
from etter_client import PipelineClient

SAMPLES = [row["role_name"] for row in csv.DictReader((REPO / "examples" / "roles.csv").open())]


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Dev:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.company = "dev" + uuid.uuid4().hex[:10]
        self.env = {
            **os.environ,
            "ETTER_DATA_DIR": str(root / "data"),
            "ETTER_DOCUMENTS__FILE_ROOT": str(root / "documents"),
            "ETTER_SERVER__LISTEN": "127.0.0.1:50611",
            "ETTER_SERVER__METRICS_LISTEN": "127.0.0.1:0",
            "ETTER_WORKER__METRICS_LISTEN": "127.0.0.1:0",
            "ETTER_TEMPORAL__TASK_QUEUE": f"etter-dev-test-{self.company}",
            "ETTER_DEV_COMPANY": self.company,
        }

    def run_until_ready(self, log: Path) -> tuple[subprocess.Popen[bytes], str]:
        out = log.open("wb")
        proc = subprocess.Popen([str(REPO / "etter"), "dev"], cwd=self.root, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            text = log.read_text(errors="replace")
            if "Where to look next" in text and "stop             Ctrl-C" in text:
                return proc, text
            assert proc.poll() is None, f"./etter dev exited ({proc.returncode}):\n{text}"
            time.sleep(1)
        proc.kill()
        raise AssertionError(f"./etter dev did not finish the samples in 10 minutes:\n{log.read_text()}")

    def interrupt(self, proc: subprocess.Popen[bytes]) -> None:
        started = _descendants(proc.pid)
        names = {Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace") for p in started if _alive(p)}
        assert any(n.endswith("etter-server") for n in names) and any(n.endswith("etter-worker") for n in names), names
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in started if _alive(p)]
        assert not left, f"still running after SIGINT: {left}"

    def client(self) -> PipelineClient:
        token = subprocess.run(
            [str(BIN / "etter-server"), "token", "--company", self.company, "--role", "viewer"],
            env=self.env, capture_output=True, text=True, check=True,
        ).stdout.strip()
        return PipelineClient(self.env["ETTER_SERVER__LISTEN"], token)


def test_etter_dev_runs_the_samples_to_ready_stops_on_sigint_and_reuses_its_data(tmp_path: Path) -> None:
    dev = Dev(tmp_path)
    proc, text = dev.run_until_ready(tmp_path / "first.log")
    try:
        assert re.search(rf"pushed {len(SAMPLES)} sample roles as batch-", text), text
        assert f"{len(SAMPLES)}/{len(SAMPLES)} sample roles are READY" in text, text
        assert "http://127.0.0.1:50611/console/" in text and "Temporal Web UI  http://" in text, text
        assert re.search(r"grpcurl .* -plaintext -H \"authorization: Bearer ey", text), text
        # A progress display: one line per run and state (not a per-event log).
        lines = [line for line in text.splitlines() if re.match(r"\s+\S.*[█░]{12}", line)]
        assert len(lines) <= len(SAMPLES) * 4, "\n".join(lines)
        with dev.client() as client:
            runs = list(client.history(dev.company))
        assert sorted(r.role_name for r in runs) == sorted(SAMPLES), runs
        assert all(r.status == "READY" and r.tokens_used > 0 and r.steps_done == r.steps_total for r in runs), runs
        batch = {r.proto.batch_id for r in runs}
        assert len(batch) == 1, batch
    finally:
        dev.interrupt(proc)
    assert "stopped." in (tmp_path / "first.log").read_text()

    # Again, in the same directory: the same batch, nothing pushed twice.
    proc, text = dev.run_until_ready(tmp_path / "second.log")
    try:
        assert "already pushed (same files)" in text and batch.pop() in text, text
        assert f"{len(SAMPLES)}/{len(SAMPLES)} sample roles are READY" in text, text
        with dev.client() as client:
            assert len(list(client.history(dev.company))) == len(SAMPLES)
    finally:
        dev.interrupt(proc)
