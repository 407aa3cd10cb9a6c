"""vrm-api.md §15 items 1-9: transport, login, tokens, versions (raw HTTP against the simulator)."""

from __future__ import annotations

import hashlib

import pytest

from fctui.sim import SimConfig
from fctui.sim.testing import ACCEPT, sim_harness

KEY = hashlib.sha256(b"Admin@123").hexdigest()


async def test_15_01_oms_portal_mirror() -> None:
    async with sim_harness() as h:
        direct = await h.get("/service/sites")
        mirrored = await h.get("/OmsPortal/service/sites")
        assert direct.status_code == mirrored.status_code == 200
        assert direct.json() == mirrored.json()
        vms = await h.get(f"/OmsPortal{h.site}/vms?detail=2&limit=5")
        assert vms.status_code == 200 and len(vms.json()["vms"]) == 5


async def test_15_02_login_key_modes_and_header_case() -> None:
    async with sim_harness(login=False) as h:
        c = h.client
        ok = await c.post("/service/session", headers={"X-Auth-User": "admin", "X-Auth-Key": KEY})
        assert ok.status_code == 200 and ok.headers["X-Auth-Token"]
        # plaintext only when the (misspelled or correct) algorithm header says 1
        plain = await c.post("/service/session", headers={"X-Auth-User": "admin",
                                                          "X-Auth-Key": "Admin@123"})
        assert plain.status_code == 401
        for hdr in ("X-ENCRIPT-ALGORITHM", "x-encrypt-algorithm", "x-EnCrIpT-aLgOrItHm"):
            r = await c.post("/service/session", headers={"x-auth-user": "admin",
                                                          "X-AUTH-KEY": "Admin@123", hdr: "1"})
            assert r.status_code == 200, hdr
        # SHA-256 with algorithm 0 (FCC style)
        r = await c.post("/service/session", headers={"X-Auth-User": "admin", "X-Auth-Key": KEY,
                                                      "X-ENCRYPT-ALGORITHM": "0"})
        assert r.status_code == 200
        # upper-case hex is not what VRM expects
        r = await c.post("/service/session", headers={"X-Auth-User": "admin",
                                                      "X-Auth-Key": KEY.upper()})
        assert r.status_code == 401


async def test_15_02_bad_credentials_are_401_with_code() -> None:
    async with sim_harness(login=False) as h:
        for user, key in (("admin", "nope"), ("root", KEY), (None, None)):
            headers = {k: v for k, v in (("X-Auth-User", user), ("X-Auth-Key", key)) if v}
            r = await h.client.post("/service/session", headers=headers)
            assert r.status_code == 401
            body = r.json()
            assert len(body["errorCode"]) == 8 and body["errorCode"] in body["errorDes"]
            assert "Admin@123" not in r.text and KEY not in r.text


@pytest.mark.parametrize("user_type", [None, "0", "2"])
@pytest.mark.parametrize("auth_type", [None, "0"])
@pytest.mark.parametrize("body", [None, b"", b"{}"])
async def test_15_03_user_type_auth_type_and_body(user_type: str | None, auth_type: str | None,
                                                  body: bytes | None) -> None:
    async with sim_harness(login=False) as h:
        headers = {"X-Auth-User": "admin", "X-Auth-Key": KEY, "Accept": ACCEPT}
        if user_type is not None:
            headers["X-Auth-UserType"] = user_type
        if auth_type is not None:
            headers["X-Auth-AuthType"] = auth_type
        r = await h.client.post("/service/session", headers=headers, content=body)
        assert r.status_code == 200


async def test_15_03_rejects_unknown_user_type() -> None:
    async with sim_harness(login=False) as h:
        r = await h.client.post("/service/session", headers={
            "X-Auth-User": "admin", "X-Auth-Key": KEY, "X-Auth-UserType": "9"})
        assert r.status_code == 400 and len(r.json()["errorCode"]) == 8


async def test_15_04_token_header_and_login_resp() -> None:
    async with sim_harness(login=False) as h:
        r = await h.client.post("/service/session", headers={"X-Auth-User": "admin",
                                                             "X-Auth-Key": KEY})
        body = r.json()
        assert r.headers["x-auth-token"]
        assert body["validity"] == 600000
        assert body["userName"] == "admin" and isinstance(body["userId"], str)
        assert isinstance(body["roleList"], list) and isinstance(body["privilegeIds"], list)
        assert body["rightType"] == 1  # an int, as the Go SDKs decode it (vrm-api.md §16)


async def test_15_05_token_required_everywhere_else() -> None:
    async with sim_harness() as h:
        c = h.client
        paths = ["/service/sites", f"{h.site}/vms", f"{h.site}/clusters", f"{h.site}/tasks",
                 f"{h.site}/no/such/path"]
        for p in paths:
            for token in (None, "not-a-token"):
                headers = {"X-Auth-Token": token} if token else {}
                r = await c.get(p, headers=headers)
                assert r.status_code == 401, p
                assert set(r.json()) == {"errorCode", "errorDes"}
        assert (await c.get("/service/versions")).status_code == 200
        # the real token works, and an unknown path with it is a JSON 404
        assert (await h.get("/service/sites")).status_code == 200
        r = await h.get(f"{h.site}/no/such/path")
        assert r.status_code == 404 and len(r.json()["errorCode"]) == 8


async def test_15_06_idle_expiry_and_forced_expiry() -> None:
    async with sim_harness(SimConfig(token_idle_s=600, sector_of_block=128)) as h:
        h.advance(590)
        assert (await h.get("/service/sites")).status_code == 200  # refreshes the idle timer
        h.advance(590)
        assert (await h.get("/service/sites")).status_code == 200
        h.advance(601)
        r = await h.get("/service/sites")
        assert r.status_code == 401 and r.json()["errorCode"]
        await h.login()
        assert (await h.get("/service/sites")).status_code == 200
        r = await h.client.post("/sim/tokens/expire", json={})
        assert r.json()["expired"] >= 1
        assert (await h.get("/service/sites")).status_code == 401
        await h.login()  # re-login works after a forced expiry
        assert (await h.get("/service/sites")).status_code == 200


async def test_15_07_logout_invalidates_token() -> None:
    async with sim_harness() as h:
        r = await h.delete("/service/session")
        assert r.status_code == 200
        assert (await h.get("/service/sites")).status_code == 401


@pytest.mark.parametrize("accept", [
    "application/json;version=6.0;charset=UTF-8", "application/json;version=6.3;charset=UTF-8",
    "application/json;version=6.5;charset=UTF-8", "application/json;version=8.0;charset=UTF-8",
    "application/json;version=8.1;charset=UTF-8", "application/json;version=v8.0;charset=UTF-8",
    "application/json;version=8.0.1;charset=UTF-8", "application/json;charset=UTF-8",
    "application/json;version=v8.0;charset=UTF-8;", None])
async def test_15_08_accept_header_versions(accept: str | None) -> None:
    async with sim_harness() as h:
        headers = {"X-Auth-Token": h.token}
        if accept is not None:
            headers["Accept"] = accept
        r = await h.client.get("/service/sites", headers=headers)
        assert r.status_code == 200, accept


async def test_15_08_unsupported_version_10000022() -> None:
    cfg = SimConfig(unsupported_versions=("6.0", "v8.0.1"), sector_of_block=128)
    async with sim_harness(cfg) as h:
        for v in ("6.0", "v6.0", "8.0.1"):
            r = await h.get("/service/sites", headers={
                "Accept": f"application/json;version={v};charset=UTF-8"})
            assert r.status_code == 400 and r.json()["errorCode"] == "10000022", v
        r = await h.get("/service/sites", headers={"Accept": "application/json;version=abc"})
        assert r.json()["errorCode"] == "10000022"
        r = await h.get("/service/sites", headers={"Accept": "application/json;version=8.1"})
        assert r.status_code == 200


async def test_15_09_versions_without_token_oldest_first() -> None:
    async with sim_harness(login=False) as h:
        r = await h.client.get("/service/versions")
        assert r.status_code == 200
        vs = r.json()["versions"]
        assert [v["version"] for v in vs] == list(h.sim.config.versions)
        assert vs[-1]["version"] == h.sim.config.api_version
        keyed = [tuple(int(x) for x in v["version"].split(".")) for v in vs]
        assert keyed == sorted(keyed)
        assert all(v["loginUri"] == "/service/session" for v in vs)
