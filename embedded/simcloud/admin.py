"""The simulator's own admin API under ``/_sim/`` (admin token required): the HTTP face of the injection and
inspection methods of ``SimCloud``, for tests and tools that run the simulator in another process.

- ``GET /_sim/resources`` every resource of every kind (``?include_seeded=true`` for the seed too)
- ``PUT /_sim/delays`` ``{"boot_delay": s, "lb_delay": s}``
- ``POST /_sim/inject/quota-failures`` ``{"count": n}``: the next n server creates answer Nova's quota 403
- ``POST /_sim/inject/server-errors`` ``{"count": n, "message": "..."}``: the next n servers go to ERROR
- ``PUT /_sim/quotas/{project name}`` ``{"instances": n, "cores": n, "ram": n}``
- ``DELETE /_sim/servers/{id}`` delete a server behind the client's back
- ``GET /_sim/servers/{id}/user-data`` the decoded user-data
- ``POST /_sim/servers/{id}/console`` ``{"lines": ["..."]}``: lines the server's boot writes to its console
  (nodesim plays the boot); Nova's ``os-getConsoleOutput`` serves them
- ``POST /_sim/identity/revoke-tokens``: every issued token is forgotten (an identity restart)
- ``POST /_sim/inject/refused-tokens`` ``{"count": n}``: the next n service requests answer 401, any token
- ``PUT /_sim/users/{name}/password`` ``{"password": "..."}``: a new password; the user's tokens are revoked
- ``POST /_sim/external-networks/{name}/recreate``: the external network again, under a new id
- ``POST /_sim/clusters/{cluster id}/clones`` ``{"cluster_ids": [...]}``: copies of a kaas cluster's
  resources for each id (``SimCloud.clone_cluster``: benchmarks/control_plane.py seeds its fleet so)
"""

from __future__ import annotations

from dataclasses import asdict

from starlette.responses import Response

from simcloud.compute import CONSOLE_LINES_KEPT
from simcloud.errors import ApiError
from simcloud.http import Ctx, Router, empty, json_response


def _admin(ctx: Ctx) -> None:
    if not ctx.who.is_admin:
        raise ApiError(
            403, {"error": {"code": 403, "message": "the simulator's admin API needs an admin token"}}
        )


def _body(ctx: Ctx) -> dict[str, object]:
    return ctx.body if isinstance(ctx.body, dict) else {}


def _int(value: object, default: int = 0) -> int:
    return int(value) if isinstance(value, int | float | str) else default


def resources(ctx: Ctx) -> Response:
    _admin(ctx)
    seeded = (ctx.arg("include_seeded") or "").lower() in ("1", "true", "yes")
    return json_response(ctx.sim.inventory(include_seeded=seeded))


def set_delays(ctx: Ctx) -> Response:
    _admin(ctx)
    body = _body(ctx)
    if "boot_delay" in body:
        ctx.sim.set_boot_delay(float(str(body["boot_delay"])))
    if "lb_delay" in body:
        ctx.sim.set_lb_delay(float(str(body["lb_delay"])))
    return json_response({"boot_delay": ctx.sim.boot_delay, "lb_delay": ctx.sim.lb_delay})


def quota_failures(ctx: Ctx) -> Response:
    _admin(ctx)
    ctx.sim.fail_next_server_creates(_int(_body(ctx).get("count"), 1))
    return empty(204)


def server_errors(ctx: Ctx) -> Response:
    _admin(ctx)
    body = _body(ctx)
    ctx.sim.error_next_servers(_int(body.get("count"), 1), str(body.get("message") or "Simulated failure"))
    return empty(204)


def set_quota(ctx: Ctx, project: str) -> Response:
    _admin(ctx)
    if project not in ctx.sim.projects:
        raise ApiError(404, {"error": {"code": 404, "message": f"no project {project}"}})
    body = _body(ctx)
    values = {
        key: _int(body[key])
        for key in ("instances", "cores", "ram", "server_groups", "server_group_members")
        if key in body
    }
    quota = ctx.sim.set_quota(project, **values)
    return json_response({"quota": asdict(quota)})


def delete_server(ctx: Ctx, server_id: str) -> Response:
    _admin(ctx)
    if not ctx.sim.delete_server_locked(server_id):
        raise ApiError(404, {"error": {"code": 404, "message": f"no server {server_id}"}})
    return empty(204)


def user_data(ctx: Ctx, server_id: str) -> Response:
    _admin(ctx)
    server = ctx.sim.tables["servers"].get(server_id)
    if server is None:
        raise ApiError(404, {"error": {"code": 404, "message": f"no server {server_id}"}})
    return json_response({"user_data": server["_user_data_text"]})


MAX_CONSOLE_LINE = 4096


def write_console(ctx: Ctx, server_id: str) -> Response:
    _admin(ctx)
    server = ctx.sim.tables["servers"].get(server_id)
    if server is None:
        raise ApiError(404, {"error": {"code": 404, "message": f"no server {server_id}"}})
    lines = _body(ctx).get("lines")
    if not isinstance(lines, list) or not all(isinstance(line, str) for line in lines):
        raise ApiError(400, {"error": {"code": 400, "message": "lines must be a list of strings"}})
    console = [*(server.get("_console") or []), *(line[:MAX_CONSOLE_LINE] for line in lines)]
    server["_console"] = console[-CONSOLE_LINES_KEPT:]
    return empty(204)


def revoke_tokens(ctx: Ctx) -> Response:
    _admin(ctx)
    return json_response({"revoked": ctx.sim.revoke_tokens()})


def refused_tokens(ctx: Ctx) -> Response:
    _admin(ctx)
    ctx.sim.refuse_next_tokens(_int(_body(ctx).get("count"), 1))
    return empty(204)


def set_password(ctx: Ctx, name: str) -> Response:
    _admin(ctx)
    password = _body(ctx).get("password")
    if not isinstance(password, str) or not password:
        raise ApiError(400, {"error": {"code": 400, "message": "a non-empty password is required"}})
    try:
        ctx.sim.set_password(name, password)
    except KeyError as exc:
        raise ApiError(404, {"error": {"code": 404, "message": f"no user {name}"}}) from exc
    return empty(204)


def clone_cluster(ctx: Ctx, cluster_id: str) -> Response:
    _admin(ctx)
    ids = _body(ctx).get("cluster_ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) and len(i) >= 8 for i in ids):
        raise ApiError(400, {"error": {"code": 400, "message": "cluster_ids must be a list of cluster ids"}})
    return json_response({"records": ctx.sim.clone_cluster(cluster_id, ids)})


def recreate_external_network(ctx: Ctx, name: str) -> Response:
    _admin(ctx)
    try:
        network_id = ctx.sim.recreate_external_network(name)
    except KeyError as exc:
        raise ApiError(404, {"error": {"code": 404, "message": f"no external network {name}"}}) from exc
    return json_response({"id": network_id})


def register(router: Router) -> None:
    s = "sim"
    router.add("GET", "/_sim/resources", resources, service=s)
    router.add("PUT", "/_sim/delays", set_delays, service=s)
    router.add("POST", "/_sim/inject/quota-failures", quota_failures, service=s)
    router.add("POST", "/_sim/inject/server-errors", server_errors, service=s)
    router.add("PUT", "/_sim/quotas/{project}", set_quota, service=s)
    router.add("DELETE", "/_sim/servers/{server_id}", delete_server, service=s)
    router.add("GET", "/_sim/servers/{server_id}/user-data", user_data, service=s)
    router.add("POST", "/_sim/servers/{server_id}/console", write_console, service=s)
    router.add("POST", "/_sim/identity/revoke-tokens", revoke_tokens, service=s)
    router.add("POST", "/_sim/inject/refused-tokens", refused_tokens, service=s)
    router.add("PUT", "/_sim/users/{name}/password", set_password, service=s)
    router.add("POST", "/_sim/external-networks/{name}/recreate", recreate_external_network, service=s)
    router.add("POST", "/_sim/clusters/{cluster_id}/clones", clone_cluster, service=s)
