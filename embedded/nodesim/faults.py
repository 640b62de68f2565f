"""Faults a test puts into the simulated nodes: today, Nodes held NotReady whatever their server says.

Owned by ``nodesim``; ``NodeBooter.faults`` is one ``NodeFaults``, which the booter asks for every server on
every poll (``holds_not_ready``) and tests change from their own thread: ``hold_not_ready(rule)`` makes the
servers the rule matches Nodes that never become Ready (a build whose kubelet cannot start, say), ``clear()``
heals them. A Node held so is registered as one whose server is not ACTIVE (kwok leaves it NotReady), and
Ready again as soon as the rule goes, as a kubelet that starts posting its status again.

From another process (``kaas up`` runs nodesim inside itself), the way in is the cloud: a server whose Nova
metadata carries ``kaas-sim-fault: not-ready`` is held NotReady until the key goes (``metadata_fault``, a
rule every booter has). Only simulated nodes read it; a real kubelet knows nothing of it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ServerFacts:
    """What a rule may look at: the server's name, its metadata (``kaas-version``, ``kaas-pool``, ...) and
    the Kubernetes version of its node config (``v1.37.2``; None when its user-data names none)."""

    name: str
    metadata: Mapping[str, str]
    version: str | None


NotReadyRule = Callable[[ServerFacts], bool]

FAULT_METADATA_KEY = "kaas-sim-fault"
NOT_READY_FAULT = "not-ready"


def metadata_fault(server: ServerFacts) -> bool:
    """The rule of the metadata key above: set and unset through the Nova API by a test in another process."""
    return server.metadata.get(FAULT_METADATA_KEY) == NOT_READY_FAULT


class NodeFaults:
    """The faults in force; safe to change from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._not_ready: list[NotReadyRule] = []
        self._generation = 0
        self._standing: tuple[NotReadyRule, ...] = (metadata_fault,)  # not cleared by clear()

    def hold_not_ready(self, rule: NotReadyRule) -> None:
        """Hold the Node of every server ``rule`` matches NotReady, until ``clear``."""
        with self._lock:
            self._not_ready.append(rule)
            self._generation += 1

    def clear(self) -> None:
        with self._lock:
            self._not_ready.clear()
            self._generation += 1

    @property
    def generation(self) -> int:
        """Changes whenever the faults do (the booter polls at its fastest after a change)."""
        with self._lock:
            return self._generation

    def holds_not_ready(self, server: ServerFacts) -> bool:
        with self._lock:
            rules = [*self._standing, *self._not_ready]
        return any(rule(server) for rule in rules)
