"""A reader that goes away (`fctui ... | head -1`) ends the command quietly: no traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_a_closed_pipe_is_not_a_traceback(tmp_path) -> None:
    env = dict(os.environ, FCTUI_DATA_DIR=str(tmp_path / "data"), FCTUI_CONFIG_DIR=str(tmp_path / "cfg"))
    from fctui.jobs.policy import policy_from_mapping
    from fctui.jobs.policystore import PolicyStore
    # more than a pipe buffer (64 KiB) of export, so the writer meets the closed pipe
    PolicyStore(tmp_path / "data" / "policies.json").import_policies(
        [policy_from_mapping({"name": f"p{i:03d}", "vms": "re:^" + "x" * 300, "schedule": "daily 01:00", "rpo": "1d"})
         for i in range(400)])
    code = ("import subprocess, sys\n"
            "p = subprocess.Popen([sys.executable, '-m', 'fctui.cli', 'policy', 'list'], stdout=subprocess.PIPE,"
            " stderr=subprocess.PIPE)\n"
            "p.stdout.read(10); p.stdout.close()\n"
            "err = p.stderr.read().decode(); rc = p.wait()\n"
            "print(rc); print(err)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60).stdout
    rc, _, err = out.partition("\n")
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert rc.strip() in ("0", "141"), out
