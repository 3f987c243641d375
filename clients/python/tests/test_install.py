"""`pip install clients/python` into a fresh venv works and gives a usable generated client.

The package is installed the way a notebook user installs it (dependencies from PyPI, build backend
from PyPI), from a copy of clients/python so the build leaves nothing in the work tree. Everything
is then checked by a script run in that venv in isolated mode (`-I`: no cwd, no PYTHONPATH), so it
can only see the installed distribution.

Run: .etter/venv/bin/python -m pytest clients/python/tests
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[1]

RPCS = ["Push", "PushBatch", "GetStatus", "WatchStatus", "Retry", "Cancel", "History", "ListAuditEntries", "GetUsage"]

# Runs inside the fresh venv; prints one JSON object of observations for the asserts below.
PROBE = textwrap.dedent(
    """
    import json, socket, warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import etter_client
        from etter_client import PipelineServiceStub, pipeline_service_pb2 as pb, resources_pb2 as res

    import grpc
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status  # noqa: F401  (decodes google.rpc.Status from a call)

    out = {
        "version": etter_client.__version__,
        "package_file": etter_client.__file__,
        "import_warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
    }

    # A PushRequest with a Document and RunOptions survives serialisation.
    req = pb.PushRequest(
        company_id="liberty",
        role_name="Claims Adjuster",
        draup_role_id="draup-role-12345",
        documents=[res.Document(type=res.DOCUMENT_TYPE_JOB_DESCRIPTION, uri="s3://docs/jd.pdf")],
        options=res.RunOptions(
            skip_enhancement_workflows=True, force_rerun=True, priority=res.PRIORITY_HIGH
        ),
        request_id="8c1d2a4e-0000-4000-8000-000000000001",
    )
    wire = req.SerializeToString()
    back = pb.PushRequest.FromString(wire)
    out["roundtrip_equal"] = back == req
    out["wire_len"] = len(wire)
    out["doc"] = [back.documents[0].uri, res.DocumentType.Name(back.documents[0].type)]
    out["options"] = [
        back.options.skip_enhancement_workflows,
        back.options.force_rerun,
        res.Priority.Name(back.options.priority),
    ]
    out["message_module"] = type(back).__module__

    # Our messages embed google.rpc types from googleapis-common-protos.
    item = pb.PushBatchItemResult(
        index=3,
        outcome=pb.BATCH_ITEM_OUTCOME_REJECTED,
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field="documents[0].uri", description="empty")
        ],
    )
    item = pb.PushBatchItemResult.FromString(item.SerializeToString())
    out["field_violation"] = item.field_violations[0].field

    # A google.rpc.Status carrying BadRequest, as the server sends in grpc-status-details-bin.
    detail = any_pb2.Any()
    detail.Pack(
        error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="role_name", description="required")
            ]
        )
    )
    status = status_pb2.Status.FromString(
        status_pb2.Status(code=3, message="invalid push", details=[detail]).SerializeToString()
    )
    unpacked = error_details_pb2.BadRequest()
    out["bad_request_unpacked"] = status.details[0].Unpack(unpacked)
    out["bad_request_field"] = unpacked.field_violations[0].field

    # The stub: one callable per RPC, and a real call through the generated serialisers.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = PipelineServiceStub(channel)
    out["stub_methods"] = {
        name: callable(getattr(stub, name, None)) for name in %(rpcs)r
    }
    out["stub_class_methods"] = sorted(
        n for n in %(rpcs)r if hasattr(etter_client.pipeline_service_pb2_grpc.PipelineServiceServicer, n)
    )
    try:
        stub.GetStatus(
            pb.GetStatusRequest(workflow_id="role-onboard-cr-liberty-claims-adjuster-1"),
            timeout=5,
            metadata=[("authorization", "Bearer test")],
        )
        out["call_code"] = "OK"
    except grpc.RpcError as err:
        out["call_code"] = err.code().name
    channel.close()

    print(json.dumps(out))
    """
) % {"rpcs": RPCS}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(cmd)}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("etter-client-install")
    src = tmp / "src"
    shutil.copytree(
        CLIENT_DIR,
        src,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "build", "dist", "*.egg-info", ".venv"),
    )
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    py = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    _run(
        [str(py), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", str(src)],
        timeout=900,
    )
    probe = _run([str(py), "-I", "-c", PROBE], timeout=120, cwd=tmp)
    return env_dir, json.loads(probe.stdout.strip().splitlines()[-1])


def _release_version() -> str:
    """The version kept in the workspace's Cargo.toml (scripts/set-version)."""
    import tomllib

    cargo = Path(__file__).resolve().parents[3] / "Cargo.toml"
    return tomllib.loads(cargo.read_text())["workspace"]["package"]["version"]


def test_installed_from_site_packages(installed: tuple[Path, dict]) -> None:
    env_dir, out = installed
    pkg = Path(out["package_file"]).resolve()
    assert env_dir.resolve() in pkg.parents, pkg
    assert "site-packages" in pkg.parts
    assert out["version"] == _release_version()
    site_pkg = pkg.parent
    assert (site_pkg / "py.typed").is_file()
    gen = site_pkg / "_gen" / "etter" / "pipeline" / "v1"
    for name in ["resources_pb2", "pipeline_service_pb2", "pipeline_service_pb2_grpc"]:
        assert (gen / f"{name}.py").is_file(), name
        assert (gen / f"{name}.pyi").is_file(), name
    # google.rpc is NOT bundled: it comes from googleapis-common-protos.
    assert not (site_pkg / "_gen" / "google").exists()


def test_no_version_warnings_on_import(installed: tuple[Path, dict]) -> None:
    _, out = installed
    assert not [w for w in out["import_warnings"] if "version" in w.lower()], out["import_warnings"]


def test_push_request_roundtrip(installed: tuple[Path, dict]) -> None:
    _, out = installed
    assert out["roundtrip_equal"] is True
    assert out["wire_len"] > 0
    assert out["doc"] == ["s3://docs/jd.pdf", "DOCUMENT_TYPE_JOB_DESCRIPTION"]
    assert out["options"] == [True, True, "PRIORITY_HIGH"]
    assert out["message_module"] == "etter_client._gen.etter.pipeline.v1.pipeline_service_pb2"


def test_google_rpc_error_details(installed: tuple[Path, dict]) -> None:
    _, out = installed
    assert out["field_violation"] == "documents[0].uri"
    assert out["bad_request_unpacked"] is True
    assert out["bad_request_field"] == "role_name"


def test_stub_has_every_rpc_and_calls(installed: tuple[Path, dict]) -> None:
    _, out = installed
    assert out["stub_methods"] == {name: True for name in RPCS}
    assert out["stub_class_methods"] == sorted(RPCS)
    # Nothing listens on the port: the call went out through the generated stub and failed cleanly.
    assert out["call_code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
