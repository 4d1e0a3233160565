"""Starts a real `leadpipe serve` for the Python tests.

The server binary is LEADPIPE_BIN, or target/debug/leadpipe (build it with
`cargo build --bin leadpipe`). Every test that uses the `server` fixture runs on SQLite, and on
PostgreSQL too when LEADPIPE_TEST_DATABASE_URL is set (each run in a database of its own, as in
the Rust tests).
"""

import os
import signal
import socket
import subprocess
import time
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
    process: "subprocess.Popen | None" = None

    def start(self) -> None:
        env = dict(
            os.environ,
            LEADPIPE_DATABASE_URL=self.database_url,
            LEADPIPE_LISTEN=self.address,
            LEADPIPE_SQLITE_SYNCHRONOUS="normal",
            RUST_LOG="warn",
            NO_COLOR="1",
        )
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(
                [str(self.binary), "serve"], env=env, stdout=log_file, stderr=subprocess.STDOUT
            )
        wait_until_serving(self.address, self.process, self.log)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stops the server and starts it again on the same address and database."""
        self.stop()
        self.start()


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

    server = Server(backend, f"127.0.0.1:{free_port()}", database_url, leadpipe_binary(),
                    work / "leadpipe.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        if database is not None:
            psql(pg_admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
