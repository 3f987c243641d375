"""A local S3-compatible server (PyPI moto[server]) for tests and benchmarks.

    python moto_s3.py BUCKET [OBJECTS [PORT]]

Starts moto's S3 on loopback (on PORT, or a free port when it is 0 or not given), creates BUCKET and, when OBJECTS > 0, uploads that many
small text objects `roles/{i}.txt` (a job description each). Prints `READY host:port` once they
are there, and serves until its standard input closes. Credentials: etter / etter-secret.

With MOTO_TLS_CERT and MOTO_TLS_KEY (PEM files) set, it serves HTTPS with that certificate."""

import concurrent.futures
import logging
import os
import sys
import threading

import boto3
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server

logging.getLogger("werkzeug").setLevel(logging.ERROR)

BODY = b"Senior Software Engineer. Designs, builds and reviews backend services; mentors engineers.\n" * 8

bucket = sys.argv[1]
objects = int(sys.argv[2]) if len(sys.argv) > 2 else 0
port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
# The objects are uploaded through a server of its own first, and the store then served on the
# asked port: moto's servers in one process share their buckets, so nothing on that port answers
# before every object is there (a client that retries sees the store come back whole).
loader = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
loader.start()
host, loader_port = loader.get_host_and_port()
s3 = boto3.client(
    "s3",
    endpoint_url=f"http://{host}:{loader_port}",
    region_name="us-east-1",
    aws_access_key_id="etter",
    aws_secret_access_key="etter-secret",
)
s3.create_bucket(Bucket=bucket)
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"roles/{i}.txt", Body=BODY), range(objects)))
tls = (os.environ["MOTO_TLS_CERT"], os.environ["MOTO_TLS_KEY"]) if os.environ.get("MOTO_TLS_CERT") else None
if tls:
    # ThreadedMotoServer has no TLS option; the same application, served with a certificate.
    app = DomainDispatcherApplication(create_backend_app)
    https = make_server("127.0.0.1", port, app, True, request_handler=MotoRequestHandler, ssl_context=tls)
    threading.Thread(target=https.serve_forever, daemon=True).start()
    loader.stop()
    host, port = https.server_address[:2]
    print(f"READY {host}:{port}", flush=True)
    sys.stdin.read()
    https.shutdown()
else:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    loader.stop()
    host, port = server.get_host_and_port()
    print(f"READY {host}:{port}", flush=True)
    sys.stdin.read()
    server.stop()
