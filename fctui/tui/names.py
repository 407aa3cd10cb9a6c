"""Names in narrow columns: VM and disk names must stay told apart when they do not fit.

FusionCompute names VM disks ``<vm name>-disk<N>`` (the simulator does the same), and estates name VMs
``<application>-<role>-<NN>``: the distinctive parts are at both ends. Cutting only the end
(``edge-state-unsupported`` for ``…-01`` and ``…-02``) or only the start (``…uleros-01-disk0`` for the
disks of two VMs) makes different things look the same, so a name that does not fit loses its middle.
Widths are in terminal cells (CJK names take two cells per character).
"""

from __future__ import annotations

from rich.cells import cell_len, get_character_cell_size

ELLIPSIS = "…"


def _head(text: str, cells: int) -> str:
    out, used = [], 0
    for ch in text:
        w = get_character_cell_size(ch)
        if used + w > cells:
            break
        out.append(ch)
        used += w
    return "".join(out)


def fit_name(name: str, width: int) -> str:
    """``name`` in at most ``width`` cells: whole when it fits, else its head and its (slightly longer)
    tail around an ellipsis, so both the application prefix and the number/disk suffix survive."""
    if width <= 0:
        return ""
    if cell_len(name) <= width:
        return name
    if width == 1:
        return ELLIPSIS
    room = width - 1
    tail_cells = room - room // 2
    tail = _head(name[::-1], tail_cells)[::-1]
    head = _head(name, room - cell_len(tail))
    return head + ELLIPSIS + tail


def disk_label(disk_name: str, vm_name: str) -> str:
    """A disk listed under its VM's row: ``disk0`` rather than ``<vm name>-disk0`` (the row above names
    the VM); a disk named otherwise (renamed, or copied from another VM) keeps its whole name."""
    prefix = f"{vm_name}-" if vm_name else ""
    if prefix and disk_name.startswith(prefix) and len(disk_name) > len(prefix):
        return disk_name[len(prefix):]
    return disk_name
