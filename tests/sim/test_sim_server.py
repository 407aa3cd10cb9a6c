"""The simulator over real sockets (EmbeddedSimulator: HTTP and HTTPS), the CLI entry points, and
the hidden pause model."""

from __future__ import annotations

import hashlib
import ssl
import statistics
import time

import httpx
import pytest

from fctui.sim import EmbeddedSimulator, SimConfig, Simulator
from fctui.sim.ops import make_ready_snapshot, prepare_resource
from fctui.cli import build_parser
from fctui.cli.sim import config_from_args
from fctui.sim.server import SimServerError

KEY = hashlib.sha256(b"Admin@123").hexdigest()


def login(c: httpx.Client) -> dict[str, str]:
    r = c.post("/service/session", headers={"X-Auth-User": "admin", "X-Auth-Key": KEY})
    r.raise_for_status()
    return {"X-Auth-Token": r.headers["X-Auth-Token"]}


def test_loopback_http_inventory_drop_and_data_stream() -> None:
    cfg = SimConfig(vms=40, sector_of_block=128, time_scale=50.0, edge_fill=0.05)
    with EmbeddedSimulator(cfg) as es:
        assert es.url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=es.url, timeout=10) as c:
            h = login(c)
            site = c.get("/service/sites", headers=h).json()["sites"][0]["uri"]
            vms = c.get(f"{site}/vms?detail=2&limit=100", headers=h).json()
            assert vms["total"] > 30
            # a dropped connection closes the socket mid-response
            c.post("/sim/faults", json={"path": "/clusters$", "drop": True, "count": 1})
            with pytest.raises(httpx.TransportError):
                c.get(f"{site}/clusters", headers=h)
            assert c.get(f"{site}/clusters", headers=h).status_code == 200
            # full GET of a resource streams the whole point-in-time image
            sim = es.sim
            vm = next(v for v in sim.vms.values() if v.name == "edge-ready-euleros-01")
            snap = make_ready_snapshot(sim, vm, "s", "CBTbackup")
            vol = vm.disks[0].volume
            ref = prepare_resource(sim, vol, {"ip": "10.0.0.5", "taskType": "BackupVol", "snapUrn2": sim.snap_urn(snap)})
            res_uri = f"{site}/volumes/{vol.id}/backupresources/{ref['taskUri'].rsplit('/', 1)[1]}"
            res = ready_resource(c, res_uri, h)
            assert res["resourceUrl"].startswith(es.url)
            digest = hashlib.sha256()
            n = 0
            with c.stream("GET", res["resourceUrl"], headers={"X-Resource-Token": res["token"]}) as r:
                assert r.status_code == 200 and int(r.headers["content-length"]) == 1024 ** 3
                for chunk in r.iter_raw(1 << 20):
                    digest.update(chunk)
                    n += len(chunk)
            assert n == 1024 ** 3
            want = c.get(f"/sim/volumes/{vol.id}/digest?snapUrn={sim.snap_urn(snap)}").json()
            assert digest.hexdigest() == want["sha256"]
    with pytest.raises(httpx.TransportError):
        httpx.get(es.url + "/service/versions", timeout=2)  # stopped


def ready_resource(c: httpx.Client, uri: str, h: dict[str, str], within: float = 20.0) -> dict:
    """The backup resource at ``uri`` once its preparation succeeded (polled; the simulator's task clock
    is the real one, slower under load)."""
    deadline = time.monotonic() + within
    while True:
        res = c.get(uri, headers=h).json()
        if res["status"] == "success":
            return res
        assert time.monotonic() < deadline, f"resource not ready within {within:g} s: {res}"
        time.sleep(0.02)


def test_https_with_trustme_ca() -> None:
    with EmbeddedSimulator(SimConfig(vms=10), tls=True) as es:
        assert es.url.startswith("https://") and es.ca_file
        with httpx.Client(base_url=es.url, verify=ssl.create_default_context(cafile=es.ca_file), timeout=10) as c:
            assert c.get("/service/versions").status_code == 200
            h = login(c)
            assert c.get("/service/sites", headers=h).status_code == 200
            sim = es.sim
            vm = next(v for v in sim.vms.values() if v.name == "edge-ready-euleros-01")
            snap = make_ready_snapshot(sim, vm, "s", "CBTbackup")
            vol = vm.disks[0].volume
            ref = prepare_resource(sim, vol, {"ip": "10.0.0.5", "taskType": "CBTBackup",
                                              "snapUrn2": sim.snap_urn(snap), "transMode": "lanssl"})
            site = f"/service/sites/{sim.site.id}"
            res = ready_resource(c, f"{site}/volumes/{vol.id}/backupresources/{ref['taskUri'].rsplit('/', 1)[1]}", h)
            assert "BEGIN CERTIFICATE" in res["caCert"]
        with pytest.raises(httpx.ConnectError):  # default trust store does not know the CA
            httpx.get(es.url + "/service/versions", timeout=5)


def test_port_in_use_is_a_clear_error() -> None:
    with EmbeddedSimulator(SimConfig(vms=5)) as es:
        with pytest.raises(SimServerError):
            EmbeddedSimulator(SimConfig(vms=5), port=es.port).start()


def test_cli_arguments() -> None:
    p = build_parser()
    ns = p.parse_args(["sim", "--vms", "12", "--seed", "5", "--latency-ms", "20", "--time-scale", "4",
                       "--user", "u", "--password", "p", "--port", "0", "--tls"])
    cfg = config_from_args(ns)
    assert (cfg.vms, cfg.seed, cfg.latency_ms, cfg.time_scale, cfg.user, cfg.password) == \
        (12, 5, 20.0, 4.0, "u", "p")
    assert ns.tls and ns.port == 0 and ns.host == "127.0.0.1"
    with pytest.raises(ValueError):
        config_from_args(p.parse_args(["sim", "--time-scale", "0"]))


def test_pause_model_ground_truth() -> None:
    sim = Simulator(SimConfig(vms=60, seed=2))
    by_class = {h.perf_class: h for h in sim.hosts.values() if h.arch == "x86_64"}
    assert set(by_class) == {"fast", "ordinary", "slow"}
    ordinary = [h for h in sim.hosts.values() if h.perf_class == "ordinary"]
    for h in ordinary:
        assert 1.0 <= sim.expected_pause(h, 10, 2000) <= 3.0
    assert sim.expected_pause(by_class["slow"], 10, 2000) > 3.0
    assert sim.expected_pause(by_class["fast"], 10, 2000) < sim.expected_pause(ordinary[0], 10, 2000)
    vm = next(v for v in sim.vms.values() if v.host in ordinary and not v.is_template)
    draws = [sim.draw_pause(vm, 10, 2000) for _ in range(200)]
    assert sum(1.0 <= d <= 3.0 for d in draws) >= 190
    expected = sim.expected_pause(vm.host, 10, 2000)
    assert abs(statistics.median(draws) / expected - 1) < 0.05
