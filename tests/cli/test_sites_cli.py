"""Acceptance (issue 19): ``fctui check`` and ``fctui status`` across two sites, one of them stopped: each
site is reported under its profile's name, the stopped one as unreachable/unknown, and the exit code is
the documented worst-site rule (README "Several sites", fctui.cli.sites)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fctui.cli import main
from tests.sites import SIM_PASSWORD, two_sites, write_sites_config


def test_one_site_stopped_never_hides_the_other(dirs: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # a's own variable wins over the shared one (wrong here): a password per site
    monkeypatch.setenv("FCTUI_PASSWORD", "not-the-password")
    monkeypatch.setenv("FCTUI_PASSWORD_A", SIM_PASSWORD)
    monkeypatch.setenv("FCTUI_PASSWORD_B", SIM_PASSWORD)
    with two_sites(vms=4) as (a, b):
        write_sites_config(dirs["FCTUI_CONFIG_DIR"], a, b)
        b.stop()

        # check: a's table, b unreachable; exit 3 (the highest of 0 and 3)
        assert main(["check", "--profile", "a,b"]) == 3
        out, err = capsys.readouterr()
        head_a, head_b = (line for line in out.splitlines() if line.startswith("== site"))
        assert head_a == f"== site a ({a.url}): checked" and head_b == f"== site b ({b.url}): unreachable"
        assert "edge-ready-euleros-01" in out and "ready" in out          # a's VMs are all there
        about_b = [line for line in err.splitlines() if line.startswith("fctui check: b: ")]
        assert len(about_b) == 1 and about_b[0].startswith(f"fctui check: b: cannot log in to the VRM at {b.url}")

        assert main(["check", "--all-sites", "--json"]) == 3
        doc = json.loads(capsys.readouterr().out)
        site: dict[str, Any] = {s["site"]: s for s in doc["sites"]}
        assert doc["exit"] == 3 and (site["a"]["exit"], site["b"]["exit"]) == (0, 3)
        assert len(site["a"]["report"]["vms"]) == len([v for v in a.sim.vms.values() if not v.gone])
        assert site["b"]["report"] is None and b.url in site["b"]["error"]

        # status: no policy covers a's VMs (CRITICAL 2), b cannot be read (UNKNOWN 3): CRITICAL wins
        assert main(["status", "--all-sites", "--json"]) == 2
        doc = json.loads(capsys.readouterr().out)
        site = {s["site"]: s for s in doc["sites"]}
        assert (site["a"]["exit"], site["b"]["exit"], doc["exit"]) == (2, 3, 2)
        assert site["a"]["summary"]["not-covered"] == len(site["a"]["vms"]) > 0
        assert site["b"]["summary"] is None and b.url in site["b"]["error"]
        assert doc["summary"]["sites_unknown"] == 1
        # ... and with no VM of a in scope (OK 0), b's UNKNOWN is the answer
        assert main(["status", "--all-sites", "--vms", "re:^no-such-vm$", "--prometheus"]) == 3
        prom = capsys.readouterr().out
        assert 'fctui_status_scrape_ok{site="a"} 1' in prom and 'fctui_status_scrape_ok{site="b"} 0' in prom
