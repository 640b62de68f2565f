"""The node boot report: the line a kaas node's boot writes to its console, which kaas reads back through
Nova's ``os-getConsoleOutput``.

Before a node has joined (and, on the first control plane, before the agent has connected) there is no
tunnel to say anything through; the serial console is the one channel every cloud gives a server that has
booted, and Nova serves it to kaas. Owned by the tunnel package (pure), since both ends read it, as the
status report: the node's boot writes it (``nodesim.booter`` plays the boot; a VM's boot would write the
same line), and the reconciler reads it (``provider.reconciler.boot_report``).

One line per outcome, the last one counts::

    [kaas-node-boot] failed step=kubeadm join discovery: <reason, one line>
    [kaas-node-boot] joined
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER = "[kaas-node-boot]"
MAX_REASON_CHARS = 1000
_STEP = re.compile(r"^[A-Za-z0-9 ._/-]{1,80}$")
_FAILED = re.compile(r"^failed step=(?P<step>[A-Za-z0-9 ._/-]{1,80}): (?P<reason>.*)$")


@dataclass(frozen=True)
class BootOutcome:
    """What the node's boot said last: ``failed`` with the step and why, or joined."""

    failed: bool
    step: str = ""
    reason: str = ""


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_REASON_CHARS else flat[: MAX_REASON_CHARS - 1] + "…"


def failure_line(step: str, reason: str) -> str:
    """The console line of a failed boot ``step`` (its name as kubeadm says it) and its ``reason``."""
    if not _STEP.match(step):
        raise ValueError(f"not a boot step name: {step!r}")
    return f"{MARKER} failed step={step}: {_one_line(reason)}"


def success_line() -> str:
    return f"{MARKER} joined"


def last_outcome(console: str) -> BootOutcome | None:
    """The last boot report in a console log; None when the boot has reported nothing (yet)."""
    for line in reversed(console.splitlines()):
        start = line.find(MARKER)
        if start < 0:
            continue
        said = line[start + len(MARKER):].strip()
        if said == "joined":
            return BootOutcome(failed=False)
        match = _FAILED.match(said)
        if match is not None:
            return BootOutcome(failed=True, step=match["step"], reason=match["reason"])
    return None
