"""The package is typed for its users: `mypy --strict` passes over it (generated stubs included,
configured in pyproject.toml), and code that misuses the client is caught by mypy through the
package's `py.typed` and `.pyi` stubs.

Run: .etter/venv/bin/python -m pytest clients/python/tests/test_types.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[1]


def _mypy(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *args],
        cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=600,
    )


def test_the_package_passes_mypy_strict() -> None:
    result = _mypy(cwd=CLIENT_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_a_users_mistakes_are_caught_by_the_packages_types(tmp_path: Path) -> None:
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            from etter_client import PipelineClient, pipeline_service_pb2 as pb

            client = PipelineClient("127.0.0.1:50051", "token")
            run = client.push("acme", "Analyst", ["file:///jd.txt"], draup_role_id=7)
            steps: int = run.status
            request = pb.PushRequest(company="acme")
            quote = client.quote("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", deadline="2030-01-01T00:00Z")
            """
        )
    )
    result = _mypy("--strict", "--config-file", os.devnull, str(user), cwd=tmp_path, env={"MYPYPATH": str(CLIENT_DIR / "src")})
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout
    assert 'user.py:5: error: Argument "draup_role_id" to "push" of "PipelineClient" has incompatible type "int"' in lines, lines
    assert 'user.py:6: error: Incompatible types in assignment (expression has type "RunState", variable has type "int")' in lines, lines
    assert 'user.py:7: error: Unexpected keyword argument "company" for "PushRequest"' in lines, lines
    assert 'user.py:8: error: Argument "deadline" to "quote" of "PipelineClient" has incompatible type "str"' in lines, lines


def test_every_call_of_both_clients_gives_a_precise_type_never_any(tmp_path: Path) -> None:
    """A user's code calling every method of the sync and the asyncio client, checked with
    `--disallow-any-expr`: a single expression typed `Any` (a result, an event, a page entry, a
    field of them) would be an error. The package's own modules are checked silently."""
    user = tmp_path / "user.py"
    user.write_text(
        textwrap.dedent(
            """
            import asyncio
            from datetime import datetime, timedelta, timezone
            from pathlib import Path

            from etter_client import BatchQuote, BatchQuoteItem, BatchResult, PipelineClient, Quote, Run, RunState, Usage, WatchEvent
            from etter_client.aio import AsyncPipelineClient

            SOON = datetime.now(timezone.utc) + timedelta(hours=2)


            def sync(client: PipelineClient) -> list[str]:
                run: Run = client.push("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", priority="high")
                state: RunState = run.status
                batch: BatchResult = client.push_batch("acme", Path("roles.csv"), priority="low", request_id="r-1")
                listed = client.push_batch("acme", [{"role_name": "A", "documents": ["file:///a.txt"]}])
                seen = [str(e.status) for e in client.watch(batch_id=batch.batch_id)]
                ready = [r.workflow_id for r in client.history("acme", statuses=[RunState.READY, "FAILED"])]
                usage: Usage = client.usage("acme")
                entries = [e.outcome for e in client.audit(company_id="acme", denied_only=True)]
                again = client.retry(role_id=run.role_id, steps=["ai_assessment"], request_id="r-2")
                gone = client.cancel(again.workflow_id, "wrong document", request_id="r-3")
                done = client.wait(run.workflow_id).final and client.status(role_id=run.role_id).final
                quote: Quote = client.quote("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", deadline=SOON)
                plan: dict[str, str] = quote.plan
                late = client.push("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", deadline=SOON)
                batch_quote: BatchQuote = client.quote_batch("acme", Path("roles.csv"), priority="low")
                first: BatchQuoteItem = batch_quote.items[0]
                rejected = [f"{i}: {v}" for i, vs in batch_quote.rejections().items() for v in vs]
                costs = [quote.cost, batch_quote.cost, float(first.tokens + batch_quote.eta_seconds)]
                return [
                    state, listed.batch_id, *seen, *ready, usage.period, *entries, gone.status, str(done),
                    quote.wait_reason, quote.state, *plan, late.workflow_id, first.outcome, *first.violations,
                    *rejected, *map(str, costs),
                ]


            async def asynchronous(client: AsyncPipelineClient) -> list[str]:
                run: Run = await client.push("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", priority="high")
                state: RunState = run.status
                batch: BatchResult = await client.push_batch("acme", "roles.csv", priority="low", request_id="r-1")
                events: list[WatchEvent] = [e async for e in client.watch(batch_id=batch.batch_id)]
                ready = [r.workflow_id async for r in client.history("acme", statuses=["ready", RunState.DEGRADED])]
                usage: Usage = await client.usage("acme")
                entries = [e.outcome async for e in client.audit(company_id="acme", denied_only=True)]
                again = await client.retry(role_id=run.role_id, steps=["ai_assessment"], request_id="r-2")
                gone = await client.cancel(again.workflow_id, "wrong document", request_id="r-3")
                done = (await client.wait(run.workflow_id)).final and (await client.status(role_id=run.role_id)).final
                quote: Quote = await client.quote("acme", "Analyst", ["file:///jd.txt"], draup_role_id="d-1", deadline=SOON)
                batch_quote: BatchQuote = await client.quote_batch("acme", "roles.csv", skip_enhancement=True)
                steps = [f"{step}={what}" for item in batch_quote.items for step, what in item.plan.items()]
                return [
                    state, *[str(e) for e in events], *ready, usage.period, *entries, gone.status, str(done),
                    str(quote.creates), quote.workflow_id, *steps, str(batch_quote.tokens),
                ]


            async def main() -> None:
                async with AsyncPipelineClient("127.0.0.1:50051", "token") as client:
                    print(await asynchronous(client))
                with PipelineClient("127.0.0.1:50051", "token") as sync_client:
                    print(sync(sync_client))


            asyncio.run(main())
            """
        )
    )
    result = _mypy(
        "--strict", "--disallow-any-expr", "--follow-imports=silent", "--config-file", os.devnull, str(user),
        cwd=tmp_path, env={"MYPYPATH": str(CLIENT_DIR / "src")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
