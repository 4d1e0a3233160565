"""Starts a real `leadpipe serve` for the Python tests, and generates the client stubs.

The server binary is LEADPIPE_BIN, or target/debug/leadpipe (build it with
`cargo build --bin leadpipe`). Every test that uses the `server` fixture runs on SQLite, and on
PostgreSQL too when LEADPIPE_TEST_DATABASE_URL is set (each run in a database of its own, as in
the Rust tests).
"""

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
import types
import uuid
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
PG_URL_VAR = "LEADPIPE_TEST_DATABASE_URL"
STARTUP_TIMEOUT_SECONDS = 60


@dataclass
class Server:
    backend: str
    address: str
    database_url: str
    binary: Path
    log: Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def leadpipe_binary() -> Path:
    binary = Path(os.environ.get("LEADPIPE_BIN", REPO / "target" / "debug" / "leadpipe"))
    if not binary.is_file():
        pytest.fail(f"{binary} does not exist: run `cargo build --bin leadpipe` first")
    return binary


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", url, "-qc", sql], check=True, stdout=subprocess.DEVNULL)


def wait_until_serving(address: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                pytest.fail(f"leadpipe exited with {process.returncode}:\n{log.read_text()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"leadpipe did not report SERVING:\n{log.read_text()}")
            time.sleep(0.1)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    """A freshly started `leadpipe serve` on its own empty database."""
    backend = request.param
    work = tmp_path_factory.mktemp(f"leadpipe-{backend}")
    pg_admin_url = os.environ.get(PG_URL_VAR)
    database = None
    if backend == "sqlite":
        database_url = f"sqlite://{work}/leadpipe.db"
    elif not pg_admin_url:
        pytest.skip(f"the PostgreSQL run needs {PG_URL_VAR}")
    else:
        # The leadpipe_test_ prefix lets .ci/run drop databases that a killed run left behind.
        database = f"leadpipe_test_py_{uuid.uuid4().hex}"
        psql(pg_admin_url, f"CREATE DATABASE {database}")
        database_url = f"{pg_admin_url.rsplit('/', 1)[0]}/{database}"

    binary = leadpipe_binary()
    address = f"127.0.0.1:{free_port()}"
    log = work / "leadpipe.log"
    env = dict(
        os.environ,
        LEADPIPE_DATABASE_URL=database_url,
        LEADPIPE_LISTEN=address,
        LEADPIPE_SQLITE_SYNCHRONOUS="normal",
        RUST_LOG="warn",
        NO_COLOR="1",
    )
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [str(binary), "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        wait_until_serving(address, process, log)
        yield Server(backend, address, database_url, binary, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if database is not None:
            psql(pg_admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """Stubs generated from proto/ with grpcio-tools, as any Python client would make them."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("stubs")
    protos = sorted(
        str(path.relative_to(REPO / "proto"))
        for path in (REPO / "proto" / "leadpipe").rglob("*.proto")
    )
    well_known = Path(protoc.__file__).parent / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{REPO / 'proto'}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *protos,
        ]
    )
    assert status == 0, f"protoc failed on {protos}"
    sys.path.insert(0, str(out))
    modules = {}
    for proto in protos:
        name = proto.removesuffix(".proto").replace("/", ".")
        base = name.rsplit(".", 1)[1]
        modules[f"{base}_pb2"] = importlib.import_module(f"{name}_pb2")
        modules[f"{base}_pb2_grpc"] = importlib.import_module(f"{name}_pb2_grpc")
    return types.SimpleNamespace(**modules)
