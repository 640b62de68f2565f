"""Builds the one Starlette app that serves every simulated service on one port, devstack style.

Called by ``simcloud.testing.run_simcloud`` and ``python -m simcloud``. Path prefixes: ``/identity``
(Keystone v3), ``/compute`` (Nova v2.1), ``/network`` (Neutron v2.0), ``/image`` (Glance v2),
``/load-balancer`` (Octavia v2) and ``/_sim`` (the simulator's own admin API).
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import Route

from simcloud import admin, compute, identity, image, loadbalancer, network
from simcloud.http import Router, make_dispatcher
from simcloud.state import SimCloud

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


def build_router() -> Router:
    router = Router()
    for service in (identity, compute, network, image, loadbalancer, admin):
        service.register(router)
    return router


def create_app(sim: SimCloud) -> Starlette:
    dispatch = make_dispatcher(sim, build_router())
    return Starlette(
        routes=[
            Route("/", dispatch, methods=METHODS),
            Route("/{path:path}", dispatch, methods=METHODS),
        ]
    )
