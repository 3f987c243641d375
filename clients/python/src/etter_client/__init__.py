"""Python client of the Etter pipeline's control plane, ``etter.pipeline.v1.PipelineService``.

Most users want :class:`PipelineClient` (``etter_client.client``), or its asyncio twin
``etter_client.aio.AsyncPipelineClient``: plain arguments, typed errors (``etter_client.errors``),
run states as the :class:`RunState` enum, a resuming ``watch`` and paging ``history`` and
``audit``. The generated stub below is there for everything else.

The modules here are generated from ``proto/`` by ``scripts/codegen`` (grpcio-tools and
mypy-protobuf) into ``etter_client._gen``; do not edit them by hand. The ``google.rpc`` error
details the server attaches to errors come from ``googleapis-common-protos``
(``google.rpc.error_details_pb2``) and are decoded with ``grpcio-status``
(``grpc_status.rpc_status.from_call``)::

    import grpc
    from etter_client import PipelineServiceStub, pipeline_service_pb2 as pb, resources_pb2 as res

    channel = grpc.secure_channel("etter.example.com:443", grpc.ssl_channel_credentials())
    stub = PipelineServiceStub(channel)
    reply = stub.Push(
        pb.PushRequest(
            company_id="liberty",
            role_name="Claims Adjuster",
            draup_role_id="draup-role-12345",
            documents=[res.Document(type=res.DOCUMENT_TYPE_JOB_DESCRIPTION, uri="s3://bucket/jd.pdf")],
        ),
        metadata=[("authorization", f"Bearer {token}")],
    )
"""

from etter_client import errors
from etter_client._gen.etter.pipeline.v1 import (
    pipeline_service_pb2,
    pipeline_service_pb2_grpc,
    resources_pb2,
)
from etter_client._gen.etter.pipeline.v1.pipeline_service_pb2_grpc import (
    PipelineServiceServicer,
    PipelineServiceStub,
)

from etter_client.client import PipelineClient
from etter_client.errors import EtterError
from etter_client.results import (
    BatchProgress,
    BatchQuote,
    BatchQuoteItem,
    BatchResult,
    Comparison,
    Quote,
    Run,
    RunState,
    StepComparison,
    Usage,
    WatchEvent,
    to_dataframe,
)

__version__ = "0.1.0"

__all__ = [
    "BatchProgress",
    "BatchQuote",
    "BatchQuoteItem",
    "BatchResult",
    "Comparison",
    "EtterError",
    "PipelineClient",
    "PipelineServiceServicer",
    "PipelineServiceStub",
    "Quote",
    "Run",
    "RunState",
    "StepComparison",
    "Usage",
    "WatchEvent",
    "__version__",
    "errors",
    "pipeline_service_pb2",
    "pipeline_service_pb2_grpc",
    "resources_pb2",
    "to_dataframe",
]
