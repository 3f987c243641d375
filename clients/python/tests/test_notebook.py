"""clients/python/examples/onboarding.ipynb executed top to bottom, the way an analyst runs it,
against a live server and worker: it pushes a batch with one bad row, watches it to the end and
shows the outcomes and token use. The assertions read the notebook's own outputs.

Run: ./etter test (or, with the services up and the workspace built:
`. .etter/services.env && .etter/venv/bin/python -m pytest clients/python/tests/test_notebook.py`).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO, Deployment

NOTEBOOK = REPO / "clients" / "python" / "examples" / "onboarding.ipynb"
ROLES = [
    "Claims Adjuster",
    "Underwriter",
    "Actuarial Analyst",
    "Customer Service Representative",
    "Fraud Investigator",
    "Policy Administrator",
]


def _text(cell: nbformat.NotebookNode) -> str:
    """Everything a cell showed: printed text and the plain-text form of displayed values."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result"):
            parts.append(output.data.get("text/plain", ""))
        elif output.output_type == "error":
            parts.append("\n".join(output.traceback))
    return "".join(parts)


def test_the_onboarding_notebook_runs_top_to_bottom_and_shows_the_batch_finishing(
    deployment: Deployment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment.start_worker()
    # The kernel is a child process: it inherits these.
    monkeypatch.setenv("ETTER_TARGET", deployment.addr)
    monkeypatch.setenv("ETTER_TOKEN", deployment.token("--company", deployment.company, "--role", "operator"))
    monkeypatch.setenv("ETTER_COMPANY", deployment.company)
    monkeypatch.setenv("ETTER_DOCUMENTS", deployment.uri())
    monkeypatch.setenv("PYTHONPATH", str(REPO / "clients" / "python" / "src"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter"))

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), "checked in without outputs"
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(notebook, tmp_path / "onboarding.executed.ipynb")  # kept for a look when this fails

    shown = [_text(c) for c in notebook.cells if c.cell_type == "code"]
    pushed = next(s for s in shown if s.startswith("batch "))
    assert "6 queued, 1 rejected" in pushed, pushed
    assert "row 7 ('Claims Supervisor') was not queued" in pushed and "draup_role_id" in pushed, pushed

    watched = next(s for s in shown if "has ended" in s)
    assert "7/7 ended (READY 6, VALIDATION_ERROR 1)" in watched, watched

    table = next(s for s in shown if "role_name" in s and "tokens_used" in s)
    for role in ROLES:
        assert any(role in row and "READY" in row for row in table.splitlines()), (role, table)
    assert "Claims Supervisor" in table and "VALIDATION_ERROR" in table, table

    # The company's usage is this batch's alone (a company of this test's own): they must agree.
    batch_tokens = next(s for s in shown if "tokens used by this batch" in s)
    usage = next(s for s in shown if " tokens used, " in s)
    used = int(re.search(r"([\d,]+) tokens used by this batch", batch_tokens)[1].replace(",", ""))
    assert used > 0 and f": {used:,} tokens used, 0 reserved" in usage, (batch_tokens, usage)
    steps = dict(re.findall(r"^(\w+)\s+(\d+)$", usage, re.M))  # the per-step table under the line
    assert {"ai_assessment", "skills_miner", "reskilling"} <= steps.keys(), usage
    assert sum(int(n) for n in steps.values()) == used, usage
    assert shown[-2].strip().endswith("0 run(s) retried"), shown[-2]
