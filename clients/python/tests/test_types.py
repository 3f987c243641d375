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
            """
        )
    )
    result = _mypy("--strict", "--config-file", os.devnull, str(user), cwd=tmp_path, env={"MYPYPATH": str(CLIENT_DIR / "src")})
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout
    assert 'user.py:5: error: Argument "draup_role_id" to "push" of "PipelineClient" has incompatible type "int"' in lines, lines
    assert 'user.py:6: error: Incompatible types in assignment (expression has type "str", variable has type "int")' in lines, lines
    assert 'user.py:7: error: Unexpected keyword argument "company" for "PushRequest"' in lines, lines
