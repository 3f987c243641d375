"""The clients over TLS: an etter-server that requires client certificates from the project CA
(``scripts/services up`` makes it under ``.etter/tls``), reached with a CA and a client
certificate, and refused without them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from etter_client import PipelineClient
from etter_client.aio import AsyncPipelineClient
from etter_client.errors import EtterError

from conftest import Deployment


def _tls_file(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run `scripts/services up postgres` and `source .etter/services.env`")
    return Path(value)


@pytest.fixture(scope="module")
def tls_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    overrides = {
        "ETTER_SERVER__TLS__CERT_FILE": str(_tls_file("ETTER_TEST__TLS_SERVER_CERT")),
        "ETTER_SERVER__TLS__KEY_FILE": str(_tls_file("ETTER_TEST__TLS_SERVER_KEY")),
        "ETTER_SERVER__TLS__CLIENT_CA_FILE": str(_tls_file("ETTER_TEST__TLS_CA")),
    }
    deployment = Deployment(tmp_path_factory.mktemp("etter-client-tls"), overrides)
    yield deployment
    deployment.stop()


def _localhost(deployment: Deployment) -> str:
    # The server's certificate carries localhost and 127.0.0.1.
    return "localhost:" + deployment.addr.rsplit(":", 1)[1]


def test_a_client_with_the_ca_and_a_client_certificate_is_served(tls_deployment: Deployment) -> None:
    token = tls_deployment.token("--company", tls_deployment.company, "--role", "operator")
    with PipelineClient(
        _localhost(tls_deployment),
        token,
        ca_file=_tls_file("ETTER_TEST__TLS_CA"),
        cert_file=_tls_file("ETTER_TEST__TLS_CLIENT_CERT"),
        key_file=_tls_file("ETTER_TEST__TLS_CLIENT_KEY"),
    ) as client:
        quote = client.quote(
            tls_deployment.company, "Secure Analyst", [tls_deployment.uri()], draup_role_id="draup-role-tls"
        )
        assert quote.creates and quote.tokens > 0


def test_the_asyncio_client_too(tls_deployment: Deployment) -> None:
    import asyncio

    token = tls_deployment.token("--company", tls_deployment.company, "--role", "viewer")

    async def usage() -> str:
        async with AsyncPipelineClient(
            tls_deployment.addr,
            token,
            ca_file=_tls_file("ETTER_TEST__TLS_CA"),
            cert_file=_tls_file("ETTER_TEST__TLS_CLIENT_CERT"),
            key_file=_tls_file("ETTER_TEST__TLS_CLIENT_KEY"),
            server_name="localhost",
        ) as client:
            return (await client.usage(tls_deployment.company)).company_id

    assert asyncio.run(usage()) == tls_deployment.company


def test_without_a_client_certificate_or_the_ca_the_call_is_refused(tls_deployment: Deployment) -> None:
    token = tls_deployment.token("--company", tls_deployment.company, "--role", "viewer")
    for kwargs in ({"ca_file": _tls_file("ETTER_TEST__TLS_CA")}, {"secure": True}):
        with PipelineClient(_localhost(tls_deployment), token, timeout=5.0, **kwargs) as client:  # type: ignore[arg-type]
            with pytest.raises(EtterError) as refused:
                client.usage(tls_deployment.company)
            assert refused.value.code == grpc.StatusCode.UNAVAILABLE, refused.value


def test_tls_arguments_that_cannot_work_are_refused() -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        PipelineClient("localhost:1", "token", cert_file="client.pem")
