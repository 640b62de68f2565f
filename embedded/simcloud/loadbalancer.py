"""Octavia v2 under ``/load-balancer``: load balancers (with a Neutron VIP port), listeners, pools, members,
health monitors and cascade delete.

Called by ``simcloud.app``. Like Octavia, every change puts the load balancer in PENDING_* until the LB delay
has passed (``SimCloud.lb_delay``); while it is pending, changes to it or its children answer 409
"Load Balancer ... is immutable and cannot be updated."
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.responses import Response

from simcloud.errors import octavia_error
from simcloud.http import Ctx, Router, empty, json_response
from simcloud.state import Record, SimCloud, now_iso, public_view

# URL collection -> (table kind, body key, display name)
COLLECTIONS = {
    "loadbalancers": ("loadbalancers", "loadbalancer", "Load Balancer"),
    "listeners": ("listeners", "listener", "Listener"),
    "pools": ("pools", "pool", "Pool"),
    "healthmonitors": ("healthmonitors", "healthmonitor", "Health Monitor"),
}
NON_FILTERS = {
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "fields",
    "limit",
    "marker",
    "page_reverse",
    "sort",
    "sort_key",
    "sort_dir",
}


def _version_list(ctx: Ctx) -> dict[str, Any]:
    return {
        "versions": [
            {
                "id": f"v2.{minor}",
                "status": "CURRENT" if minor == 27 else "SUPPORTED",
                "updated": "2023-01-01T00:00:00Z",
                "links": [{"href": f"{ctx.base_url}/load-balancer/v2", "rel": "self"}],
            }
            for minor in range(28)
        ]
    }


def versions(ctx: Ctx) -> Response:
    return json_response(_version_list(ctx))


def _stamp(record: Record) -> None:
    record["updated_at"] = now_iso()


def _owned(ctx: Ctx, record: Record) -> bool:
    return ctx.who.is_admin or record["project_id"] == ctx.who.project_id


def _get(ctx: Ctx, kind: str, item_id: str, display: str) -> Record:
    record = ctx.sim.tables[kind].get(item_id)
    if record is None or not _owned(ctx, record) or record["provisioning_status"] == "DELETED":
        raise octavia_error(404, f"{display} {item_id} not found.")
    return record


def _lb_of(ctx: Ctx, record: Record) -> Record:
    return ctx.sim.tables["loadbalancers"][record["_lb_id"]]


def _require_mutable(ctx: Ctx, lb: Record) -> None:
    if lb["provisioning_status"].startswith("PENDING_"):
        raise octavia_error(409, f"Load Balancer {lb['id']} is immutable and cannot be updated.")


def _begin_change(sim: SimCloud, lb: Record, status: str = "PENDING_UPDATE") -> None:
    lb["provisioning_status"] = status
    _stamp(lb)
    lb["_ready_at"] = sim.schedule(sim.lb_delay, "lb", lb["id"])


def _common(ctx: Ctx, spec: dict[str, Any], project_id: str) -> dict[str, Any]:
    stamp = now_iso()
    tags = spec.get("tags") or []
    if not isinstance(tags, list):
        raise octavia_error(400, "Invalid input for field/attribute tags.")
    return {
        "id": str(uuid.uuid4()),
        "name": spec.get("name") or "",
        "description": spec.get("description") or "",
        "provisioning_status": "PENDING_CREATE",
        "operating_status": "OFFLINE",
        "admin_state_up": bool(spec.get("admin_state_up", True)),
        "project_id": project_id,
        "tenant_id": project_id,
        "created_at": stamp,
        "updated_at": stamp,
        "tags": list(tags),
    }


def _spec(ctx: Ctx, key: str) -> dict[str, Any]:
    spec = (ctx.body or {}).get(key)
    if not isinstance(spec, dict):
        raise octavia_error(400, f"Invalid input for field/attribute {key}.")
    return spec


def _uuid_field(spec: dict[str, Any], name: str) -> str:
    value = spec.get(name)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError as exc:
        raise octavia_error(
            400, f"Invalid input for field/attribute {name}. Value: '{value}'. Value should be UUID format"
        ) from exc


# ---------------------------------------------------------------------------------------------- views
def _view(ctx: Ctx, kind: str, record: Record) -> dict[str, Any]:
    view = public_view(record)
    if kind == "loadbalancers":
        children = record["_children"]
        view["listeners"] = [{"id": i} for i in children["listeners"] if i in ctx.sim.tables["listeners"]]
        view["pools"] = [{"id": i} for i in children["pools"] if i in ctx.sim.tables["pools"]]
    return view


def list_resources(ctx: Ctx, collection: str) -> Response:
    kind, body_key, _display = COLLECTIONS[collection]
    records = ctx.sim.candidates(kind, all_tags=_split_all(ctx, "tags"), any_tags=_split_all(ctx, "tags-any"))
    return _list_response(ctx, kind, body_key + "s", records)


def _list_response(ctx: Ctx, kind: str, plural: str, records: list[Record]) -> Response:
    records = [r for r in records if _owned(ctx, r)]
    for key, value in ctx.query:
        if key in NON_FILTERS:
            continue
        if key == "loadbalancer_id" and kind != "loadbalancers":
            records = [r for r in records if r["_lb_id"] == value]
        else:
            records = [r for r in records if key in r and not key.startswith("_") and _text(r[key]) == value]
    not_tags = _split_all(ctx, "not-tags")
    if not_tags:
        records = [r for r in records if not set(not_tags) <= set(r["tags"])]
    records.sort(key=lambda r: (r["created_at"], r["id"]))
    return json_response({plural: [_view(ctx, kind, r) for r in records], f"{plural}_links": []})


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


def _split_all(ctx: Ctx, name: str) -> list[str]:
    """A tag filter given as ``a,b`` or as ``name=a&name=b`` (openstacksdk sends lists the second way)."""
    return [part for value in ctx.args(name) for part in value.split(",") if part]


def get_resource(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind, body_key, display = COLLECTIONS[collection]
    return json_response({body_key: _view(ctx, kind, _get(ctx, kind, item_id, display))})


# ------------------------------------------------------------------------------------------ load balancers
def create_load_balancer(ctx: Ctx) -> Response:
    sim = ctx.sim
    spec = _spec(ctx, "loadbalancer")
    project_id = ctx.who.project_id
    if spec.get("project_id") and ctx.who.is_admin:
        project_id = str(spec["project_id"])
    subnet_id = _uuid_field(spec, "vip_subnet_id") if spec.get("vip_subnet_id") else None
    network_id = spec.get("vip_network_id")
    subnet = sim.tables["subnets"].get(subnet_id or "")
    if subnet_id and (
        subnet is None or (subnet["project_id"] != ctx.who.project_id and not ctx.who.is_admin)
    ):
        raise octavia_error(400, f"Validation failure: Subnet {subnet_id} not found.")
    if subnet is None:
        network = sim.tables["networks"].get(str(network_id or ""))
        if network is None or not network["subnets"]:
            raise octavia_error(
                400,
                "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.",
            )
        subnet = sim.tables["subnets"][network["subnets"][0]]
    record = _common(ctx, spec, project_id)
    fixed = (
        [{"subnet_id": subnet["id"], "ip_address": spec["vip_address"]}]
        if spec.get("vip_address")
        else [{"subnet_id": subnet["id"]}]
    )
    try:
        port = sim.create_port_locked(
            project_id=project_id,
            network_id=subnet["network_id"],
            fixed_ips=fixed,
            name=f"octavia-lb-{record['id']}",
            device_owner="Octavia",
            device_id=f"lb-{record['id']}",
            security_groups=[],
        )
    except LookupError as exc:
        raise octavia_error(
            409, f"IP address {spec.get('vip_address') or ''} could not be allocated: {exc.args[-1]}"
        ) from exc
    record.update(
        {
            "vip_address": port["fixed_ips"][0]["ip_address"],
            "vip_port_id": port["id"],
            "vip_subnet_id": subnet["id"],
            "vip_network_id": subnet["network_id"],
            "vip_qos_policy_id": None,
            "provider": spec.get("provider") or "amphora",
            "flavor_id": spec.get("flavor_id"),
            "availability_zone": spec.get("availability_zone"),
            "additional_vips": [],
            "vip_vnic_type": "normal",
            "vip_sg_ids": None,
            "_children": {"listeners": [], "pools": [], "members": [], "healthmonitors": []},
            "_ready_at": 0.0,
        }
    )
    sim.insert("loadbalancers", record)
    record["_ready_at"] = sim.schedule(sim.lb_delay, "lb", record["id"])
    return json_response({"loadbalancer": _view(ctx, "loadbalancers", record)}, 201)


def delete_load_balancer(ctx: Ctx, item_id: str, cascade: bool = False) -> Response:
    lb = _get(ctx, "loadbalancers", item_id, "Load Balancer")
    _require_mutable(ctx, lb)
    cascade = cascade or (ctx.arg("cascade") or "").lower() in ("true", "1", "yes")
    live_children = any(i in ctx.sim.tables[k] for k in ("listeners", "pools") for i in lb["_children"][k])
    if live_children and not cascade:
        raise octavia_error(
            400, f"Validation failure: Cannot delete Load Balancer {item_id} - it has children"
        )
    for kind in ("listeners", "pools", "members", "healthmonitors"):
        for child in ctx.sim.lb_children(kind, item_id):
            child["provisioning_status"] = "PENDING_DELETE"
    _begin_change(ctx.sim, lb, "PENDING_DELETE")
    return empty(204)


def delete_load_balancer_cascade(ctx: Ctx, item_id: str) -> Response:
    return delete_load_balancer(ctx, item_id, cascade=True)


# ---------------------------------------------------------------------------------------------- children
def _adopt(ctx: Ctx, lb: Record, kind: str, record: Record) -> Record:
    record["_lb_id"] = lb["id"]
    ctx.sim.insert(kind, record)
    lb["_children"][kind].append(record["id"])
    _begin_change(ctx.sim, lb)
    return record


def create_listener(ctx: Ctx) -> Response:
    spec = _spec(ctx, "listener")
    lb = _get(ctx, "loadbalancers", _uuid_field(spec, "loadbalancer_id"), "Load Balancer")
    _require_mutable(ctx, lb)
    protocol = str(spec.get("protocol", "")).upper()
    if protocol not in ("TCP", "HTTP", "HTTPS", "UDP", "SCTP", "TERMINATED_HTTPS", "PROMETHEUS"):
        raise octavia_error(
            400, f"Invalid input for field/attribute protocol. Value: '{spec.get('protocol')}'."
        )
    port = spec.get("protocol_port")
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise octavia_error(400, f"Invalid input for field/attribute protocol_port. Value: '{port}'.")
    for other in ctx.sim.lb_children("listeners", lb["id"]):
        if other["protocol_port"] == port and other["provisioning_status"] != "PENDING_DELETE":
            raise octavia_error(
                409, f"Another Listener on this Load Balancer is already using protocol_port {port}"
            )
    record = _common(ctx, spec, lb["project_id"])
    record.update(
        {
            "protocol": protocol,
            "protocol_port": port,
            "connection_limit": spec.get("connection_limit", -1),
            "default_tls_container_ref": None,
            "sni_container_refs": [],
            "default_pool_id": None,
            "l7policies": [],
            "insert_headers": {},
            "loadbalancers": [{"id": lb["id"]}],
            "timeout_client_data": spec.get("timeout_client_data", 50000),
            "timeout_member_connect": spec.get("timeout_member_connect", 5000),
            "timeout_member_data": spec.get("timeout_member_data", 50000),
            "timeout_tcp_inspect": spec.get("timeout_tcp_inspect", 0),
            "client_ca_tls_container_ref": None,
            "client_authentication": "NONE",
            "client_crl_container_ref": None,
            "allowed_cidrs": spec.get("allowed_cidrs"),
            "tls_ciphers": None,
            "tls_versions": None,
            "alpn_protocols": None,
            "hsts_include_subdomains": False,
            "hsts_max_age": None,
            "hsts_preload": False,
        }
    )
    return json_response({"listener": public_view(_adopt(ctx, lb, "listeners", record))}, 201)


def create_pool(ctx: Ctx) -> Response:
    sim = ctx.sim
    spec = _spec(ctx, "pool")
    listener: Record | None = None
    if spec.get("listener_id"):
        listener = _get(ctx, "listeners", _uuid_field(spec, "listener_id"), "Listener")
        lb = _lb_of(ctx, listener)
        if listener["default_pool_id"]:
            raise octavia_error(409, f"Listener {listener['id']} already has a default pool")
    elif spec.get("loadbalancer_id"):
        lb = _get(ctx, "loadbalancers", _uuid_field(spec, "loadbalancer_id"), "Load Balancer")
    else:
        raise octavia_error(400, "Validation failure: loadbalancer_id or listener_id must be specified.")
    _require_mutable(ctx, lb)
    algorithm = spec.get("lb_algorithm")
    if algorithm not in ("ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP", "SOURCE_IP_PORT"):
        raise octavia_error(400, f"Invalid input for field/attribute lb_algorithm. Value: '{algorithm}'.")
    record = _common(ctx, spec, lb["project_id"])
    record.update(
        {
            "protocol": str(spec.get("protocol", "")).upper(),
            "lb_algorithm": algorithm,
            "session_persistence": spec.get("session_persistence"),
            "loadbalancers": [{"id": lb["id"]}],
            "listeners": [{"id": listener["id"]}] if listener else [],
            "healthmonitor_id": None,
            "members": [],
            "tls_enabled": False,
            "tls_container_ref": None,
            "ca_tls_container_ref": None,
            "crl_container_ref": None,
            "tls_ciphers": None,
            "tls_versions": None,
            "alpn_protocols": None,
        }
    )
    _adopt(ctx, lb, "pools", record)
    if listener is not None:
        listener["default_pool_id"] = record["id"]
    del sim  # the pool is registered through _adopt
    return json_response({"pool": public_view(record)}, 201)


def create_member(ctx: Ctx, pool_id: str) -> Response:
    pool = _get(ctx, "pools", pool_id, "Pool")
    lb = _lb_of(ctx, pool)
    _require_mutable(ctx, lb)
    spec = _spec(ctx, "member")
    address, port = spec.get("address"), spec.get("protocol_port")
    if not address or not isinstance(port, int):
        raise octavia_error(400, "Invalid input for field/attribute member.")
    for member in ctx.sim.lb_children("members", lb["id"]):
        if member["_pool_id"] == pool_id and member["address"] == address and member["protocol_port"] == port:
            raise octavia_error(
                409,
                f"Another member on this pool is already using ip address {address} on protocol_port {port}",
            )
    record = _common(ctx, spec, pool["project_id"])
    record.update(
        {
            "address": address,
            "protocol_port": port,
            "weight": spec.get("weight", 1),
            "backup": False,
            "subnet_id": spec.get("subnet_id"),
            "monitor_address": None,
            "monitor_port": None,
            "vnic_type": "normal",
            "_pool_id": pool_id,
        }
    )
    _adopt(ctx, lb, "members", record)
    pool["members"].append({"id": record["id"]})
    return json_response({"member": public_view(record)}, 201)


def _pool_members(ctx: Ctx, pool_id: str) -> list[Record]:
    pool = _get(ctx, "pools", pool_id, "Pool")
    return [m for m in ctx.sim.lb_children("members", pool["_lb_id"]) if m["_pool_id"] == pool_id]


def list_members(ctx: Ctx, pool_id: str) -> Response:
    return _list_response(ctx, "members", "members", _pool_members(ctx, pool_id))


def _member(ctx: Ctx, pool_id: str, member_id: str) -> Record:
    for member in _pool_members(ctx, pool_id):
        if member["id"] == member_id:
            return member
    raise octavia_error(404, f"Member {member_id} not found.")


def get_member(ctx: Ctx, pool_id: str, member_id: str) -> Response:
    return json_response({"member": public_view(_member(ctx, pool_id, member_id))})


def delete_member(ctx: Ctx, pool_id: str, member_id: str) -> Response:
    member = _member(ctx, pool_id, member_id)
    lb = _lb_of(ctx, member)
    _require_mutable(ctx, lb)
    member["provisioning_status"] = "PENDING_DELETE"
    _begin_change(ctx.sim, lb)
    return empty(204)


def create_health_monitor(ctx: Ctx) -> Response:
    spec = _spec(ctx, "healthmonitor")
    pool = _get(ctx, "pools", _uuid_field(spec, "pool_id"), "Pool")
    lb = _lb_of(ctx, pool)
    _require_mutable(ctx, lb)
    if pool["healthmonitor_id"]:
        raise octavia_error(409, f"This Health Monitor already exists on pool {pool['id']}")
    for field_name in ("type", "delay", "timeout", "max_retries"):
        if spec.get(field_name) is None:
            raise octavia_error(
                400,
                f"Invalid input for field/attribute {field_name}. Value: 'None'. Mandatory field missing.",
            )
    record = _common(ctx, spec, pool["project_id"])
    record.update(
        {
            "type": spec["type"],
            "delay": spec["delay"],
            "timeout": spec["timeout"],
            "max_retries": spec["max_retries"],
            "max_retries_down": spec.get("max_retries_down", 3),
            "http_method": spec.get("http_method"),
            "url_path": spec.get("url_path"),
            "expected_codes": spec.get("expected_codes"),
            "pools": [{"id": pool["id"]}],
            "domain_name": None,
            "http_version": None,
        }
    )
    _adopt(ctx, lb, "healthmonitors", record)
    pool["healthmonitor_id"] = record["id"]
    return json_response({"healthmonitor": public_view(record)}, 201)


def delete_child(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind, _body, display = COLLECTIONS[collection]
    record = _get(ctx, kind, item_id, display)
    lb = _lb_of(ctx, record)
    _require_mutable(ctx, lb)
    record["provisioning_status"] = "PENDING_DELETE"
    sim = ctx.sim
    if kind == "listeners" and record["default_pool_id"] in sim.tables["pools"]:
        sim.tables["pools"][record["default_pool_id"]]["listeners"] = []
    if kind == "pools":
        for listener in sim.lb_children("listeners", lb["id"]):
            if listener["default_pool_id"] == item_id:
                listener["default_pool_id"] = None
        for member in sim.lb_children("members", lb["id"]):
            if member["_pool_id"] == item_id:
                member["provisioning_status"] = "PENDING_DELETE"
        if record["healthmonitor_id"] in sim.tables["healthmonitors"]:
            sim.tables["healthmonitors"][record["healthmonitor_id"]]["provisioning_status"] = "PENDING_DELETE"
    if kind == "healthmonitors":
        for pool_ref in record["pools"]:
            pool = sim.tables["pools"].get(pool_ref["id"])
            if pool is not None:
                pool["healthmonitor_id"] = None
    _begin_change(sim, lb)
    return empty(204)


def _bind(handler: Any, collection: str) -> Any:
    def bound(ctx: Ctx, **params: str) -> Response:
        return handler(ctx, collection, **params)  # type: ignore[no-any-return]

    return bound


def register(router: Router) -> None:
    router.add("GET", "/load-balancer", versions, service="load-balancer", public=True)
    # openstacksdk asks for /v2.0/lbaas when discovery hands it /v2; Octavia serves both.
    for prefix in ("/load-balancer/v2", "/load-balancer/v2.0"):
        router.add("GET", prefix, versions, service="load-balancer", public=True)
        _register_under(router, prefix + "/lbaas")


def _register_under(router: Router, p: str) -> None:
    s = "load-balancer"
    for collection in COLLECTIONS:
        router.add("GET", f"{p}/{collection}", _bind(list_resources, collection), service=s)
        router.add("GET", f"{p}/{collection}/{{item_id}}", _bind(get_resource, collection), service=s)
        if collection != "loadbalancers":
            router.add("DELETE", f"{p}/{collection}/{{item_id}}", _bind(delete_child, collection), service=s)
    router.add("POST", f"{p}/loadbalancers", create_load_balancer, service=s)
    router.add("DELETE", f"{p}/loadbalancers/{{item_id}}", delete_load_balancer, service=s)
    router.add("DELETE", f"{p}/loadbalancers/{{item_id}}/cascade", delete_load_balancer_cascade, service=s)
    router.add("POST", f"{p}/listeners", create_listener, service=s)
    router.add("POST", f"{p}/pools", create_pool, service=s)
    router.add("POST", f"{p}/healthmonitors", create_health_monitor, service=s)
    router.add("GET", f"{p}/pools/{{pool_id}}/members", list_members, service=s)
    router.add("POST", f"{p}/pools/{{pool_id}}/members", create_member, service=s)
    router.add("GET", f"{p}/pools/{{pool_id}}/members/{{member_id}}", get_member, service=s)
    router.add("DELETE", f"{p}/pools/{{pool_id}}/members/{{member_id}}", delete_member, service=s)
