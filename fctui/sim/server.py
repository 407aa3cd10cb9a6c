"""Serving the simulator: ``EmbeddedSimulator`` (uvicorn in a background thread, for tests, the
demo and benchmarks) and ``serve`` (the foreground server of ``fctui sim``, fctui/cli/sim.py)."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import threading
import time
from types import TracebackType
from typing import Any, Callable

import uvicorn

from fctui.sim.app import create_app, prewarm
from fctui.sim.generator import Simulator
from fctui.sim.state import Clock, SimConfig


PREWARM_VMS = 2000  # serialise big inventories up front so the first listing is fast


class SimServerError(RuntimeError):
    """The embedded simulator could not start."""


def _bind(host: str, port: int) -> socket.socket:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP; without it Nagle + delayed ACK add ~40 ms to every keep-alive response
    sock = socket.socket(fam, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SimServerError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _TlsFiles:
    """A throw-away CA and server certificate (trustme) in a temporary directory."""

    def __init__(self, host: str) -> None:
        import trustme

        self.dir = tempfile.TemporaryDirectory(prefix="fctui-sim-tls-")
        ca = trustme.CA()
        names = ["localhost", "127.0.0.1", "::1"]
        if host not in names and host not in ("0.0.0.0", "::"):
            names.append(host)
        cert = ca.issue_cert(*names)
        self.ca_file = os.path.join(self.dir.name, "ca.pem")
        self.cert_file = os.path.join(self.dir.name, "server.pem")
        self.key_file = os.path.join(self.dir.name, "server.key")
        ca.cert_pem.write_to_path(self.ca_file)
        cert.cert_chain_pems[0].write_to_path(self.cert_file)
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(self.cert_file, append=True)
        cert.private_key_pem.write_to_path(self.key_file)
        self.ca_pem = ca.cert_pem.bytes().decode()

    def cleanup(self) -> None:
        self.dir.cleanup()


def _uvicorn_config(app: Any, tls: _TlsFiles | None, log_level: str) -> uvicorn.Config:
    kw: dict[str, Any] = {}
    if tls is not None:
        kw = {"ssl_certfile": tls.cert_file, "ssl_keyfile": tls.key_file}
    return uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off",
                          timeout_keep_alive=30, **kw)


class EmbeddedSimulator:
    """Run the simulator on a loopback socket in a background thread.

    >>> with EmbeddedSimulator(SimConfig(vms=60)) as es:
    ...     es.url, es.sim
    """

    def __init__(self, config: SimConfig | None = None, *, host: str = "127.0.0.1",
                 port: int = 0, tls: bool = False, clock: Clock | None = None,
                 sim: Simulator | None = None, log_level: str = "critical") -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self._tls_files: _TlsFiles | None = None
        self.ca_file: str | None = None
        self.ca_pem: str | None = None
        if tls:
            self._tls_files = _TlsFiles(host)
            self.ca_file = self._tls_files.ca_file
            self.ca_pem = self._tls_files.ca_pem
            if config is None and sim is None:
                config = SimConfig()
        if sim is None:
            sim = Simulator(config or SimConfig(), clock=clock)
        if self.ca_pem:
            sim.config.tls_ca_pem = self.ca_pem
        self.sim = sim
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.url = ""

    def start(self) -> "EmbeddedSimulator":
        if self._thread is not None:
            return self
        if len(self.sim.vms) >= PREWARM_VMS:
            prewarm(self.sim)
        self._sock = _bind(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        scheme = "https" if self.tls else "http"
        shown = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"{scheme}://{shown}:{self.port}"
        server = uvicorn.Server(_uvicorn_config(create_app(self.sim), self._tls_files,
                                                self._log_level))
        self._server = server
        sock = self._sock
        self._thread = threading.Thread(target=lambda: server.run(sockets=[sock]),
                                        name="fctui-sim", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise SimServerError("the simulator did not start")
            time.sleep(0.01)
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None
        self._server = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._tls_files is not None:
            self._tls_files.cleanup()
            self._tls_files = None

    def __enter__(self) -> "EmbeddedSimulator":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def serve(cfg: SimConfig, *, host: str, port: int, tls: bool,
          announce: Callable[[str, Simulator, float, str | None], None], clock: Clock | None = None) -> None:
    """Serve the simulator on ``host:port`` until Ctrl-C (``fctui sim``). Once it listens,
    ``announce(url, simulator, seconds_to_generate, ca_file_or_None)``. Raises SimServerError when the
    address cannot be bound. ``clock``: the simulator's clock (default: the real one)."""
    sock = _bind(host, port)
    tls_files = _TlsFiles(host) if tls else None
    try:
        t0 = time.perf_counter()
        sim = Simulator(cfg, clock=clock)
        gen_s = time.perf_counter() - t0
        if tls_files is not None:
            sim.config.tls_ca_pem = tls_files.ca_pem
        if len(sim.vms) >= PREWARM_VMS:
            prewarm(sim)
        shown = f"[{host}]" if ":" in host else host
        url = f"{'https' if tls_files else 'http'}://{shown}:{sock.getsockname()[1]}"
        announce(url, sim, gen_s, tls_files.ca_file if tls_files else None)
        server = uvicorn.Server(_uvicorn_config(create_app(sim), tls_files, "warning"))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:
            pass
    finally:
        sock.close()
        if tls_files is not None:
            tls_files.cleanup()


def serve_sites(cfgs: list[SimConfig], *, host: str, port: int, tls: bool,
                announce: Callable[[str, Simulator, float, str | None], None], clock: Clock | None = None) -> None:
    """Serve one simulator per config (``fctui sim --sites N``) on ``port``, ``port+1``, … (``port`` 0: any
    free ports), each announced once it listens, until Ctrl-C. The sites share ``clock`` (one jump of an
    OffsetClock moves every site). Raises SimServerError when an address cannot be bound."""
    servers: list[EmbeddedSimulator] = []

    def terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM stops the sites as Ctrl-C does (uvicorn's own serve does too)

    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        for i, cfg in enumerate(cfgs):
            t0 = time.perf_counter()
            sim = Simulator(cfg, clock=clock)
            gen_s = time.perf_counter() - t0
            es = EmbeddedSimulator(sim=sim, host=host, port=port + i if port else 0, tls=tls, log_level="warning")
            servers.append(es)
            es.start()
            announce(es.url, sim, gen_s, es.ca_file)
        # the servers run in threads (no signal handlers of their own): Ctrl-C lands here
        while all(es.alive for es in servers):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        for es in servers:
            es.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
