"""What the nodes' boots said on their consoles: the first node whose boot failed, with its step and why.

Called by ``provider.reconciler.reconcile`` while a cluster is not running yet (its agent not connected, or
not every node Ready): for each ACTIVE server that is not a Ready node, the last lines of its console
(``CloudDriver.server_console``, Nova's ``os-getConsoleOutput``) are read for the boot report line
(``agents.tunnel.boot_report``). A node whose ``kubeadm init`` or ``kubeadm join`` failed never comes back by
itself (cloud-init runs once), so the pass fails the operation with that node, step and reason. Best
effort: a console that cannot be read says nothing; a cloud whose consoles carry no report (the fake virt
driver prints fixed lines) never fails a cluster here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from agents.tunnel.boot_report import last_outcome
from provider.cloud.driver import CloudDriver, ServerInfo
from provider.cloud.errors import CloudError
from provider.reconciler.naming import place_of

logger = logging.getLogger(__name__)

CONSOLE_LINES = 40
# consoles read in one pass at most: a large cluster that is not ready yet costs a bounded number of calls
MAX_CONSOLES_PER_PASS = 20
NODE_BOOTSTRAP_FAILED = "NodeBootstrapFailed"


@dataclass(frozen=True)
class NodeBootFailure:
    server: str
    role: str
    step: str
    reason: str

    @property
    def message(self) -> str:
        return f"node {self.server}: {self.step} failed: {self.reason}"


def first_boot_failure(
    driver: CloudDriver, servers: Iterable[ServerInfo], *, ready: set[str]
) -> NodeBootFailure | None:
    """The first (by name) ACTIVE server not in ``ready`` whose console reports a failed boot."""
    candidates = sorted(
        (s for s in servers if s.status == "ACTIVE" and s.name not in ready), key=lambda s: s.name
    )
    for server in candidates[:MAX_CONSOLES_PER_PASS]:
        try:
            console = driver.server_console(server.id, lines=CONSOLE_LINES)
        except CloudError as exc:
            logger.info("cannot read the console of server %s: %s", server.name, exc)
            continue
        outcome = last_outcome(console)
        if outcome is not None and outcome.failed:
            return NodeBootFailure(
                server=server.name, role=place_of(server).role, step=outcome.step, reason=outcome.reason
            )
    return None
