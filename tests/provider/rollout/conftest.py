"""The rollout tests use the reconciler's fixtures: simcloud on a free port and a context on it."""

from tests.provider.reconciler.conftest import ctx, simcloud

__all__ = ["ctx", "simcloud"]
