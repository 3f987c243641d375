"""`./etter dev`'s second half: pushes the bundled sample roles (examples/roles.csv) through the
running server as one batch, shows their progress in the terminal until every run has ended,
then says where to look next. Uses the Python client (clients/python).

A progress display, not a log: on a terminal the table is redrawn in place; otherwise (a pipe, CI)
one line is printed per run that changes state. Running it again replays the same batch (its
request id is derived from the files), so nothing is pushed twice and the table shows the runs
as they ended.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from pathlib import Path

from etter_client import PipelineClient, errors
from etter_client import resources_pb2 as res
from etter_client.client import csv_items

FINAL = {"READY", "DEGRADED", "FAILED", "CANCELLED", "STALE", "VALIDATION_ERROR"}
BAR = 12


def samples(csv: Path, docs: Path) -> tuple[list[dict], str]:
    """The batch items, their documents copied under the server's file root, and a request id
    that changes only when the sample files do."""
    source = csv.parent / "roles"
    target = docs / "samples"
    target.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(csv.read_bytes())
    for path in sorted(source.iterdir()):
        digest.update(path.name.encode() + path.read_bytes())
        shutil.copyfile(path, target / path.name)
    items = csv_items(csv)
    for item in items:
        item["documents"] = [
            (d[0], f"file://{target / d[1]}") if isinstance(d, tuple) else f"file://{target / d}" for d in item["documents"]
        ]
    return items, f"dev-samples-{digest.hexdigest()[:24]}"


class Display:
    def __init__(self, runs: dict[str, dict], tty: bool) -> None:
        self.runs = runs
        self.tty = tty
        self.drawn = 0
        self.last: dict[str, str] = {}
        self.started = time.monotonic()

    def line(self, run: dict) -> str:
        done, total = run["done"], max(run["total"], 1)
        filled = round(BAR * done / total)
        bar = "█" * filled + "░" * (BAR - filled)
        what = run["step"] if run["status"] == "PROCESSING" and run["step"] else run["status"].lower()
        elapsed = f"{run['elapsed']:.0f}s" if run["elapsed"] else ""
        return f"  {run['name'][:30]:<30} {bar} {done:>2}/{run['total']:<2} {what:<22} {elapsed:>5}"

    def show(self) -> None:
        ended = sum(1 for r in self.runs.values() if r["status"] in FINAL)
        head = f"  {ended}/{len(self.runs)} ended · {time.monotonic() - self.started:.0f} s"
        if self.tty:
            lines = [head] + [self.line(r) for r in self.runs.values()]
            out = ("\x1b[F" * self.drawn) + "".join(f"\x1b[2K{line}\n" for line in lines)
            sys.stdout.write(out)
            sys.stdout.flush()
            self.drawn = len(lines)
            return
        for wid, run in self.runs.items():
            if self.last.get(wid) != run["status"]:
                self.last[wid] = run["status"]
                print(self.line(run), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--company", required=True)
    parser.add_argument("--csv", type=Path, required=True)
    parser.add_argument("--docs", type=Path, required=True)
    args = parser.parse_args()

    items, request_id = samples(args.csv, args.docs)
    with PipelineClient(args.target, args.token) as client:
        try:
            batch = client.push_batch(args.company, items, request_id=request_id)
        except errors.EtterError as error:
            print(f"  the sample batch was refused: {error}", file=sys.stderr)
            return 1
        verb = "pushed" if batch.created else "already pushed (same files), showing"
        print(f"  {verb} {len(items)} sample roles as {batch.batch_id}\n", flush=True)
        runs: dict[str, dict] = {}
        for item in batch.items:
            if item.workflow_id:
                runs[item.workflow_id] = {"name": items[item.index]["role_name"], "status": "QUEUED", "step": "",
                                          "done": 0, "total": 0, "elapsed": 0.0}
        display = Display(runs, sys.stdout.isatty())
        for event in client.watch(batch_id=batch.batch_id, reconnects=60):
            run = event.run
            if run is None or run.workflow_id not in runs:
                continue
            entry = runs[run.workflow_id]
            entry.update(status=run.status, step=run.current_step, total=run.steps_total)
            produced = (res.STEP_STATE_COMPLETED, res.STEP_STATE_REUSED)
            entry["done"] = sum(1 for s in run.proto.progress.steps if s.status in produced)
            if run.create_time:
                end = run.end_time or None
                now = end.timestamp() if end else time.time()
                entry["elapsed"] = max(0.0, now - run.create_time.timestamp())
            display.show()
        display.show()
        final = [client.status(wid) for wid in runs]
    ready = sum(1 for r in final if r.status in ("READY", "DEGRADED"))
    print(f"\n  {ready}/{len(final)} sample roles are READY or DEGRADED.")
    for run in final:
        if run.status not in ("READY", "DEGRADED"):
            print(f"  {run.role_name}: {run.status} {run.error}")
    return 0 if ready == len(final) else 1


if __name__ == "__main__":
    sys.exit(main())
