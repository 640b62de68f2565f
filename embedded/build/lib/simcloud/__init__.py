"""A simulated OpenStack (Keystone v3, Nova, Neutron, Glance, Octavia) speaking the real REST APIs over HTTP.

It backs kaas's embedded mode (``kaas up``), the fast tests and the scale benchmarks; openstacksdk and kaas's
cloud driver talk to it unchanged. ``SimCloud`` is the in-memory state with the injection API;
``simcloud.testing.run_simcloud`` serves it on a loopback port.
"""

from simcloud.state import Quota, ServerRecord, SimCloud

__all__ = ["Quota", "ServerRecord", "SimCloud"]
