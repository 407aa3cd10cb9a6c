"""Mutation score per module from mutmut's results in mutants/ (`make mutate` prints it after the run).

killed: a selected test failed (or the mutant timed out: it hangs where the original returns).
score = killed / (mutants tested + mutants no test reaches); mutants not yet run are listed apart.
"""
from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

# The VRM client's session and paging code: the part of fctui/vrm/client.py the issue names.
CLIENT_SESSION = {"open_session", "login", "_login_trying", "_login", "logout", "close", "aclose", "__aenter__",
                  "__aexit__", "_call", "_relogin", "request", "_discover_versions"}
CLIENT_PAGING = {"_total", "_page", "iter_pages", "_concurrent_pages", "_all", "_whole", "_list_field",
                 "gather_limited", "_vm_pages", "iter_vm_pages"}

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 36: "timeout",
          -24: "timeout", 24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}


def function_of(key: str) -> str:
    """`fctui.vrm.client.xǁVrmClientǁlogin__mutmut_3` -> `login`; `...x_gather_limited__mutmut_1` -> `gather_limited`."""
    name = key.rsplit(".", 1)[1].rsplit("__mutmut_", 1)[0]
    return name.split("ǁ")[-1] if "ǁ" in name else name.removeprefix("x_")


def in_named_core(module: str, key: str) -> bool:
    """Whether a mutant belongs to the core issue #20 names: all of it but client.py, of which only the
    session and paging functions."""
    return module != "fctui/vrm/client.py" or function_of(key) in CLIENT_SESSION | CLIENT_PAGING


def results(root: Path = Path("mutants")) -> Iterator[tuple[str, str, int | None]]:
    """(module, mutant, exit code or None when not run) from mutmut's ``.meta`` files."""
    for meta in sorted(root.glob("fctui/**/*.py.meta")):
        for _ in range(20):  # mutmut rewrites the file after every mutant: read it again when caught mid-write
            try:
                data = json.loads(meta.read_text())
                break
            except json.JSONDecodeError:
                continue
        else:
            raise SystemExit(f"{meta}: not JSON")
        module = str(meta.relative_to(root))[: -len(".meta")]
        for key, code in data["exit_code_by_key"].items():
            yield module, key, code


def main(root: Path = Path("mutants")) -> int:
    rows: dict[str, Counter] = {}
    survivors: list[str] = []
    for module, key, code in results(root):
        status = STATUS.get(code, "suspicious")
        status = "killed" if status == "timeout" else status
        groups = [module]
        if module == "fctui/vrm/client.py":
            fn = function_of(key)
            groups += ["  client session"] if fn in CLIENT_SESSION else []
            groups += ["  client paging"] if fn in CLIENT_PAGING else []
        for g in groups:
            rows.setdefault(g, Counter())[status] += 1
        if status in ("survived", "no tests", "suspicious"):
            survivors.append(f"{key}: {status}")
    total, core = Counter(), Counter()
    print(f"{'module':34} {'killed':>7} {'of':>6} {'score':>7} {'survived':>9} {'no tests':>9} {'not run':>8}")
    for g, c in rows.items():
        if not g.startswith(" "):
            total.update(c)
        # the named core (issue #20): every module but client.py, of which only session and paging
        if g != "fctui/vrm/client.py":
            core.update(c)
    for g, c in list(rows.items()) + [("all", total), ("named core", core)]:
        judged = c["killed"] + c["survived"] + c["no tests"] + c["suspicious"]
        score = f"{100 * c['killed'] / judged:6.1f}%" if judged else "     -"
        print(f"{g:34} {c['killed']:7} {judged:6} {score:>7} {c['survived']:9} {c['no tests']:9} {c['not checked']:8}")
    if "-v" in sys.argv:
        print("\n".join(survivors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
