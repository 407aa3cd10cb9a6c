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
        # each type with an account of that type (admin is type 2, operator type 0)
        user, password = ("operator", "Operator@123") if user_type == "0" else ("admin", "Admin@123")
        headers = {"X-Auth-User": user, "X-Auth-Key": hashlib.sha256(password.encode()).hexdigest(),
                   "Accept": ACCEPT}
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


# --- user types (issue #14 item 4) -----------------------------------------------------------------

def _key(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


@pytest.mark.parametrize("user, password, own, other", [
    ("admin", "Admin@123", "2", "0"), ("operator", "Operator@123", "0", "2")])
async def test_user_type_must_match_the_account(user: str, password: str, own: str, other: str) -> None:
    async with sim_harness(login=False) as h:
        base = {"X-Auth-User": user, "X-Auth-Key": _key(password), "Accept": ACCEPT}
        ok = await h.client.post("/service/session", headers={**base, "X-Auth-UserType": own})
        assert ok.status_code == 200 and ok.json()["userName"] == user
        # the eSDKs omit the header (vrm-api.md §2.1): accepted for any account
        assert (await h.client.post("/service/session", headers=base)).status_code == 200
        bad = await h.client.post("/service/session", headers={**base, "X-Auth-UserType": other})
        # refused as bad credentials would be: 401, the same code and text, nothing about the type
        wrong_pw = await h.client.post("/service/session", headers={
            **base, "X-Auth-Key": _key("nope"), "X-Auth-UserType": own})
        assert bad.status_code == wrong_pw.status_code == 401
        assert bad.json() == wrong_pw.json() and len(bad.json()["errorCode"]) == 8
        assert "X-Auth-Token" not in bad.headers


async def test_configured_users_and_their_types() -> None:
    from fctui.sim import SimUser
    cfg = SimConfig(sector_of_block=128, user_type=0, users=(SimUser("nova", "N0va#pass", 2),))
    async with sim_harness(cfg, login=False) as h:
        info = (await h.client.get("/sim/info")).json()
        assert info["users"] == [{"name": "admin", "userType": 0}, {"name": "nova", "userType": 2}]
        r = await h.client.post("/service/session", headers={
            "X-Auth-User": "nova", "X-Auth-Key": _key("N0va#pass"), "X-Auth-UserType": "2"})
        assert r.status_code == 200 and r.json()["userId"] != "7"
        r = await h.client.post("/service/session", headers={
            "X-Auth-User": "admin", "X-Auth-Key": KEY, "X-Auth-UserType": "2"})
        assert r.status_code == 401
        r = await h.client.post("/service/session", headers={  # the default operator is not configured here
            "X-Auth-User": "operator", "X-Auth-Key": _key("Operator@123"), "X-Auth-UserType": "0"})
        assert r.status_code == 401
    with pytest.raises(ValueError):
        SimConfig(user_type=1)
    with pytest.raises(ValueError):
        SimConfig(users=(SimUser("a", "x", 0), SimUser("a", "y", 2)))
    # the default account wins over a same-named extra one
    assert SimConfig(user="operator").users == ()


async def test_versions_may_need_a_token() -> None:
    async with sim_harness(SimConfig(sector_of_block=128, versions_need_token=True), login=False) as h:
        r = await h.client.get("/service/versions")
        assert r.status_code == 401 and len(r.json()["errorCode"]) == 8
        await h.login()
        r = await h.get("/service/versions")
        assert r.status_code == 200 and r.json()["versions"]


# --- answer reshaping faults (issue #14 item 6) ----------------------------------------------------

async def test_fault_content_type_and_numbers_as_strings() -> None:
    async with sim_harness() as h:
        await h.client.post("/sim/faults", json={"path": "/hosts$", "contentType": "text/plain",
                                                 "numbersAsStrings": True, "count": 1})
        r = await h.get(f"{h.site}/hosts")
        assert r.status_code == 200 and r.headers["content-type"] == "text/plain"
        body = r.json()
        assert isinstance(body["total"], str) and body["total"] == str(len(body["hosts"]))
        assert all(isinstance(x["cpuQuantity"], str) for x in body["hosts"])
        assert all(isinstance(x["isMaintaining"], bool) for x in body["hosts"])  # booleans stay
        await h.client.post("/sim/faults", json={"path": "/clusters$", "content_type": "", "count": 1})
        r = await h.get(f"{h.site}/clusters")
        assert r.status_code == 200 and "content-type" not in r.headers and r.json()["clusters"]
        r = await h.get(f"{h.site}/clusters")  # count used up: as before
        assert r.headers["content-type"].startswith("application/json")
        # login keeps its token header when reshaped
        await h.client.post("/sim/faults", json={"path": "/service/session$", "method": "POST",
                                                 "contentType": "", "count": 1})
        token = await h.login()
        assert token and (await h.get("/service/sites")).status_code == 200


@pytest.mark.parametrize("shape, expect", [
    ("errorCode", {"errorCode": "10300109", "errorDes": "Injected fault (errorCode 10300109)"}),
    ("error", {"error": {"code": "10300109", "message": "Injected fault (errorCode 10300109)"}}),
    ("empty", None)])
async def test_fault_error_shapes(shape: str, expect: dict | None) -> None:
    async with sim_harness() as h:
        r = await h.client.post("/sim/faults", json={"path": "/vms$", "status": 404, "errorCode": "10300109",
                                                     "errorShape": shape})
        assert r.status_code == 200
        r = await h.get(f"{h.site}/vms")
        assert r.status_code == 404
        if expect is None:
            assert r.content == b"" and "content-type" not in r.headers
        else:
            assert r.json() == expect
        r = await h.client.post("/sim/faults", json={"path": "/x", "status": 404, "errorShape": "nope"})
        assert r.status_code == 400
