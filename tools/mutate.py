"""Run mutmut over what is left: `make mutate` calls this (niced, beside one shared S3 store).

With patterns (`make mutate MUTANTS='fctui.rules.*'`) mutmut runs every mutant they match again, decided
or not. Without, this names the named core's mutants that have no result yet, so an interrupted run goes on
where it stopped and the rest of client.py is left out (a first run, before mutmut has made any
mutants, runs everything `[tool.mutmut]` names).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from mutation_score import in_named_core, results  # noqa: E402


def undecided(root: Path = Path("mutants")) -> list[str]:
    return [key for module, key, code in results(root) if code is None and in_named_core(module, key)]


def main(argv: list[str]) -> int:
    mutmut = str(Path(sys.executable).parent / "mutmut")
    names = argv or undecided()
    if not argv and not names and any(Path("mutants").glob("fctui/**/*.py.meta")):
        print("mutate: every mutant of the named core has a result (tools/mutation_score.py shows them)")
        return 0
    # one argument per name: a shell line of thousands of names would pass the kernel's limit per argument
    # MUTATE_CHILDREN: the repo/ mutants spend much of their tests waiting (store round trips, lease
    # deadlines), so more children than cores keeps both busy
    children = os.environ.get("MUTATE_CHILDREN", "2")
    os.execv(mutmut, [mutmut, "run", "--max-children", children, *names])
    return 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
