"""Neutron v2.0 under ``/network``: networks, subnets (with IP allocation), routers (gateway, interfaces),
ports, security groups and rules, and the tag API (``?tags=``, ``PUT .../tags``, ``PUT .../tags/{tag}``).
As in Neutron 29, only ports take ``tags`` in their create request; every other kind is tagged afterwards.

Called by ``simcloud.app``. Conflicts answer like Neutron (a network with ports in use, a router with
interfaces, a security group in use, a duplicate rule: 409 with Neutron's error type and message).
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
from typing import Any

from starlette.responses import Response

from simcloud.errors import neutron_error
from simcloud.http import Ctx, Router, empty, json_response
from simcloud.state import Record, SimCloud, now_iso, public_view

# URL collection -> (table kind, body key, not-found type, not-found message format)
COLLECTIONS: dict[str, tuple[str, str, str, str]] = {
    "networks": ("networks", "network", "NetworkNotFound", "Network {} could not be found."),
    "subnets": ("subnets", "subnet", "SubnetNotFound", "Subnet {} could not be found."),
    "routers": ("routers", "router", "RouterNotFound", "Router {} could not be found"),
    "ports": ("ports", "port", "PortNotFound", "Port {} could not be found."),
    "security-groups": (
        "security_groups",
        "security_group",
        "SecurityGroupNotFound",
        "Security group {} does not exist",
    ),
    "security-group-rules": (
        "security_group_rules",
        "security_group_rule",
        "SecurityGroupRuleNotFound",
        "Security group rule {} does not exist",
    ),
}
NON_FILTERS = {
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "all_tenants",
    "all_projects",
}
EXTENSIONS = (
    "external-net",
    "router",
    "security-group",
    "standard-attr-tag",
    "tag-creation",
    "extraroute",
    "ext-gw-mode",
    "port-security",
    "binding",
    "allowed-address-pairs",
    "standard-attr-description",
    "standard-attr-timestamp",
    "standard-attr-revisions",
    "project-id",
    "quotas",
    "subnet_allocation",
    "net-mtu",
    "availability_zone",
    "network_availability_zone",
    "router_availability_zone",
)


def versions(ctx: Ctx) -> Response:
    return json_response(
        {
            "versions": [
                {
                    "id": "v2.0",
                    "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"{ctx.base_url}/network/v2.0/"}],
                }
            ]
        }
    )


def version(ctx: Ctx) -> Response:
    return json_response(
        {
            "resources": [
                {
                    "name": body,
                    "collection": coll,
                    "links": [{"rel": "self", "href": f"{ctx.base_url}/network/v2.0/{coll}"}],
                }
                for coll, (_kind, body, _t, _m) in COLLECTIONS.items()
            ]
        }
    )


def extensions(ctx: Ctx) -> Response:
    return json_response(
        {
            "extensions": [
                {
                    "alias": alias,
                    "name": alias,
                    "description": alias,
                    "updated": "2013-01-01T00:00:00-00:00",
                    "links": [],
                }
                for alias in EXTENSIONS
            ]
        }
    )


# ---------------------------------------------------------------------------------------------- generic
def _visible(ctx: Ctx, kind: str, record: Record) -> bool:
    if ctx.who.is_admin or record["project_id"] == ctx.who.project_id:
        return True
    if kind == "networks":
        return bool(record["shared"] or record["router:external"])
    if kind == "subnets":
        network = ctx.sim.tables["networks"].get(record["network_id"])
        return network is not None and bool(network["shared"] or network["router:external"])
    return False


def _view(sim: SimCloud, kind: str, record: Record, *, fields: list[str] | None = None) -> Record:
    if fields:
        view = {k: record[k] for k in fields if k in record and not k.startswith("_")}
        if kind == "security_groups" and "security_group_rules" in fields:
            view["security_group_rules"] = sim.security_group_view(record)["security_group_rules"]
        return view
    if kind == "security_groups":
        return sim.security_group_view(record)
    return public_view(record)


def _get(ctx: Ctx, collection: str, item_id: str) -> Record:
    kind, _body, error_type, message = COLLECTIONS[collection]
    record = ctx.sim.tables[kind].get(item_id)
    if record is None or not _visible(ctx, kind, record):
        raise neutron_error(404, error_type, message.format(item_id))
    return record


def _matches(value: Any, wanted: list[str]) -> bool:
    if isinstance(value, bool):
        return str(value).lower() in [w.lower() for w in wanted]
    if isinstance(value, list):
        return any(_matches(item, wanted) for item in value)
    if isinstance(value, dict):
        return False
    return ("" if value is None else str(value)) in wanted


def _fixed_ip_filter(record: Record, wanted: list[str]) -> bool:
    for condition in wanted:
        key, _, value = condition.partition("=")
        if not any(fixed.get(key) == value for fixed in record["fixed_ips"]):
            return False
    return True


def list_resources(ctx: Ctx, collection: str) -> Response:
    """Neutron's listing: filters, tags, then ``marker``/``limit`` pages in id order. A listing without a tag
    filter walks the table's cached id order from the marker and stops at the limit, so each page of a
    30,000-record table costs about its own size; ``fields`` are picked before a view is built."""
    kind, body_key, _t, _m = COLLECTIONS[collection]
    sim = ctx.sim
    all_tags, any_tags = _split_all(ctx, "tags"), _split_all(ctx, "tags-any")
    filters: dict[str, list[str]] = {}
    for key, value in ctx.query:
        if key not in NON_FILTERS:
            filters.setdefault(key, []).append(value)
    not_tags, not_any = set(_split_all(ctx, "not-tags")), set(_split_all(ctx, "not-tags-any"))

    def wanted(record: Record) -> bool:
        if not _visible(ctx, kind, record):
            return False
        for key, values in filters.items():
            if key == "fixed_ips" and kind == "ports":
                if not _fixed_ip_filter(record, values):
                    return False
            elif key in ("project_id", "tenant_id"):
                if record["project_id"] not in values:
                    return False
            elif not (key in record and not key.startswith("_") and _matches(record[key], values)):
                return False
        if not_tags and not_tags <= set(record["tags"]):
            return False
        return not (not_any and not_any & set(record["tags"]))

    if all_tags or any_tags:
        ids = sorted(r["id"] for r in sim.candidates(kind, all_tags=all_tags, any_tags=any_tags))
    else:
        ids = sim.sorted_ids(kind)
    marker = ctx.arg("marker")
    start = bisect.bisect_right(ids, marker) if marker else 0
    limit_arg = ctx.arg("limit")
    limit = int(limit_arg) if limit_arg and limit_arg.isdigit() and int(limit_arg) > 0 else None
    table = sim.tables[kind]
    records: list[Record] = []
    for record_id in itertools.islice(ids, start, None):
        record = table.get(record_id)
        if record is not None and wanted(record):
            records.append(record)
            if limit is not None and len(records) >= limit:
                break
    fields = ctx.args("fields")
    views = [_view(sim, kind, r, fields=fields) for r in records]
    plural = body_key + "s" if not body_key.endswith("s") else body_key
    return json_response({plural: views})


def _split_all(ctx: Ctx, name: str) -> list[str]:
    """A tag filter given as ``a,b`` or as ``name=a&name=b`` (openstacksdk sends lists the second way)."""
    return [part for value in ctx.args(name) for part in value.split(",") if part]


def get_resource(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind, body_key, _t, _m = COLLECTIONS[collection]
    return json_response({body_key: _view(ctx.sim, kind, _get(ctx, collection, item_id))})


def _spec(ctx: Ctx, body_key: str) -> dict[str, Any]:
    spec = (ctx.body or {}).get(body_key)
    if not isinstance(spec, dict):
        raise neutron_error(400, "BadRequest", f"Bad {body_key}s request: Resource body required.")
    return spec


def _owner(ctx: Ctx, spec: dict[str, Any]) -> str:
    requested = spec.get("project_id") or spec.get("tenant_id")
    if requested and requested != ctx.who.project_id and not ctx.who.is_admin:
        raise neutron_error(
            403,
            "HTTPForbidden",
            "Specifying 'project_id' or 'tenant_id' other than the "
            "authenticated project in request requires admin privileges",
        )
    return str(requested or ctx.who.project_id)


def _tags(spec: dict[str, Any]) -> list[str]:
    tags = spec.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise neutron_error(400, "BadRequest", "Invalid input for tags.")
    return tags


def _touch(record: Record) -> None:
    record["updated_at"] = now_iso()
    record["revision_number"] = record.get("revision_number", 0) + 1


def create_resource(ctx: Ctx, collection: str) -> Response:
    kind, body_key, _t, _m = COLLECTIONS[collection]
    spec = _spec(ctx, body_key)
    if "tags" in spec and kind != "ports":
        # Neutron (29, with ``standard-attr-tag`` and ``tag-creation`` listed) allows ``tags`` in POST for
        # ports only: ``tag-creation`` is about POST .../tags, not about creating a resource with tags
        raise neutron_error(400, "HTTPBadRequest", "Attribute 'tags' not allowed in POST")
    creator = {
        "networks": _create_network,
        "subnets": _create_subnet,
        "routers": _create_router,
        "ports": _create_port,
        "security_groups": _create_security_group,
        "security_group_rules": _create_rule,
    }[kind]
    record = creator(ctx, spec)
    return json_response({body_key: _view(ctx.sim, kind, record)}, 201)


def _create_network(ctx: Ctx, spec: dict[str, Any]) -> Record:
    external = bool(spec.get("router:external", False))
    shared = bool(spec.get("shared", False))
    if (external or shared) and not ctx.who.is_admin:
        raise neutron_error(
            403, "PolicyNotAuthorized", "(rule:create_network:shared) is disallowed by policy"
        )
    return ctx.sim.create_network_locked(
        project_id=_owner(ctx, spec),
        name=str(spec.get("name", "")),
        external=external,
        shared=shared,
        tags=_tags(spec),
        description=str(spec.get("description", "")),
        admin_state_up=bool(spec.get("admin_state_up", True)),
        mtu=int(spec.get("mtu", 1450)),
    )


def _create_subnet(ctx: Ctx, spec: dict[str, Any]) -> Record:
    sim = ctx.sim
    network_id = spec.get("network_id")
    if not network_id:
        raise neutron_error(
            400, "BadRequest", "Failed to parse request. Required attribute 'network_id' not specified"
        )
    network = _get(ctx, "networks", str(network_id))
    owner = _owner(ctx, spec)
    if network["project_id"] != owner and not ctx.who.is_admin:
        raise neutron_error(404, "NetworkNotFound", f"Network {network_id} could not be found.")
    cidr = spec.get("cidr")
    try:
        net = ipaddress.ip_network(str(cidr), strict=True)
    except ValueError as exc:
        raise neutron_error(
            400, "BadRequest", f"Invalid input for cidr. Reason: '{cidr}' is not a valid IP subnet."
        ) from exc
    for other_id in network["subnets"]:
        other = sim.tables["subnets"][other_id]
        if ipaddress.ip_network(other["cidr"]).overlaps(net):
            raise neutron_error(
                400,
                "InvalidInput",
                f"Invalid input for operation: Requested subnet with cidr: "
                f"{net} for network: {network_id} overlaps with another subnet.",
            )
    pools = spec.get("allocation_pools") or []
    pool = (pools[0]["start"], pools[0]["end"]) if pools else None
    return sim.create_subnet_locked(
        project_id=owner,
        network_id=network["id"],
        name=str(spec.get("name", "")),
        cidr=str(net),
        pool=pool,
        gateway_ip=spec.get("gateway_ip"),
        no_gateway="gateway_ip" in spec and spec["gateway_ip"] is None,
        enable_dhcp=bool(spec.get("enable_dhcp", True)),
        dns_nameservers=spec.get("dns_nameservers") or [],
        tags=_tags(spec),
        description=str(spec.get("description", "")),
        ip_version=int(spec.get("ip_version", 4)),
    )


def _gateway_info(ctx: Ctx, router: Record, info: dict[str, Any] | None) -> None:
    """Set (or clear, with None/{}) the router's external gateway, with its gateway port."""
    sim = ctx.sim
    if router["_gw_port"]:
        sim.delete_port_locked(router["_gw_port"])
        router["_gw_port"] = None
    router["external_gateway_info"] = None
    if not info or not info.get("network_id"):
        return
    network = _get(ctx, "networks", str(info["network_id"]))
    if not network["router:external"]:
        raise neutron_error(
            400, "BadRequest", f"Bad router request: Network {network['id']} is not an external network."
        )
    try:
        port = sim.create_port_locked(
            project_id="",
            network_id=network["id"],
            device_owner="network:router_gateway",
            device_id=router["id"],
            fixed_ips=info.get("external_fixed_ips") or None,
            security_groups=[],
        )
    except LookupError as exc:
        raise neutron_error(409, str(exc.args[0]), str(exc.args[-1])) from exc
    router["_gw_port"] = port["id"]
    router["external_gateway_info"] = {
        "network_id": network["id"],
        "enable_snat": bool(info.get("enable_snat", True)),
        "external_fixed_ips": [dict(fixed) for fixed in port["fixed_ips"]],
    }


def _create_router(ctx: Ctx, spec: dict[str, Any]) -> Record:
    owner = _owner(ctx, spec)
    stamp = now_iso()
    router = ctx.sim.insert(
        "routers",
        {
            "id": _new_id(),
            "name": str(spec.get("name", "")),
            "tenant_id": owner,
            "project_id": owner,
            "admin_state_up": bool(spec.get("admin_state_up", True)),
            "status": "ACTIVE",
            "external_gateway_info": None,
            "description": str(spec.get("description", "")),
            "availability_zones": ["nova"],
            "availability_zone_hints": [],
            "routes": [],
            "flavor_id": None,
            "distributed": False,
            "ha": False,
            "tags": _tags(spec),
            "created_at": stamp,
            "updated_at": stamp,
            "revision_number": 1,
            "_gw_port": None,
        },
    )
    try:
        _gateway_info(ctx, router, spec.get("external_gateway_info"))
    except Exception:
        ctx.sim.remove("routers", router["id"])
        raise
    return router


def _create_port(ctx: Ctx, spec: dict[str, Any]) -> Record:
    network = _get(ctx, "networks", str(spec.get("network_id", "")))
    owner = _owner(ctx, spec)
    groups = spec.get("security_groups")
    if groups is not None:
        for group_id in groups:
            _get(ctx, "security-groups", group_id)
    try:
        port = ctx.sim.create_port_locked(
            project_id=owner,
            network_id=network["id"],
            fixed_ips=spec.get("fixed_ips"),
            name=str(spec.get("name", "")),
            device_owner=str(spec.get("device_owner", "")),
            device_id=str(spec.get("device_id", "")),
            security_groups=groups,
            tags=_tags(spec),
            description=str(spec.get("description", "")),
            admin_state_up=bool(spec.get("admin_state_up", True)),
        )
    except LookupError as exc:
        status = 400 if exc.args[0] == "InvalidInput" else 409
        raise neutron_error(status, str(exc.args[0]), str(exc.args[-1])) from exc
    if spec.get("allowed_address_pairs"):
        port["allowed_address_pairs"] = list(spec["allowed_address_pairs"])
    return port


def _create_security_group(ctx: Ctx, spec: dict[str, Any]) -> Record:
    name = str(spec.get("name", ""))
    owner = _owner(ctx, spec)
    if name == "default" and ctx.sim.default_security_group(owner) is not None:
        raise neutron_error(
            409, "SecurityGroupDefaultAlreadyExists", "Default security group already exists."
        )
    return ctx.sim.create_security_group_locked(
        project_id=owner,
        name=name,
        description=str(spec.get("description", "")),
        tags=_tags(spec),
        stateful=bool(spec.get("stateful", True)),
    )


RULE_FIELDS = (
    "direction",
    "ethertype",
    "protocol",
    "port_range_min",
    "port_range_max",
    "remote_ip_prefix",
    "remote_group_id",
)


def _create_rule(ctx: Ctx, spec: dict[str, Any]) -> Record:
    group = _get(ctx, "security-groups", str(spec.get("security_group_id", "")))
    direction = spec.get("direction")
    if direction not in ("ingress", "egress"):
        raise neutron_error(
            400,
            "InvalidInput",
            f"Invalid input for direction. Reason: '{direction}' is not in ['ingress', 'egress'].",
        )
    protocol = spec.get("protocol")
    protocol = str(protocol).lower() if protocol not in (None, "") else None
    low, high = spec.get("port_range_min"), spec.get("port_range_max")
    if (low is not None or high is not None) and protocol is None:
        raise neutron_error(
            400,
            "SecurityGroupProtocolRequiredWithPorts",
            "Must also specify protocol if port range is given.",
        )
    if low is not None and high is not None and int(low) > int(high):
        raise neutron_error(
            400,
            "SecurityGroupInvalidPortRange",
            "For TCP/UDP protocols, port_range_min must be <= port_range_max",
        )
    prefix = spec.get("remote_ip_prefix")
    if prefix:
        try:
            prefix = str(ipaddress.ip_network(prefix, strict=False))
        except ValueError as exc:
            raise neutron_error(400, "InvalidInput", f"Invalid input for remote_ip_prefix: {prefix}") from exc
    if spec.get("remote_group_id"):
        _get(ctx, "security-groups", str(spec["remote_group_id"]))
    wanted = {
        "direction": direction,
        "ethertype": spec.get("ethertype", "IPv4"),
        "protocol": protocol,
        "port_range_min": None if low is None else int(low),
        "port_range_max": None if high is None else int(high),
        "remote_ip_prefix": prefix,
        "remote_group_id": spec.get("remote_group_id"),
    }
    rules = ctx.sim.tables["security_group_rules"]
    for rule_id in group["_rules"]:
        rule = rules.get(rule_id)
        if rule is not None and all(rule[k] == wanted[k] for k in RULE_FIELDS):
            raise neutron_error(
                409, "SecurityGroupRuleExists", f"Security group rule already exists. Rule id is {rule_id}."
            )
    rule = ctx.sim.create_rule_locked(
        group=group, project_id=group["project_id"], description=spec.get("description"), **wanted
    )
    group["updated_at"] = now_iso()
    return rule


def update_resource(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind, body_key, _t, _m = COLLECTIONS[collection]
    record = _get(ctx, collection, item_id)
    spec = _spec(ctx, body_key)
    if kind == "routers" and "external_gateway_info" in spec:
        _gateway_info(ctx, record, spec["external_gateway_info"])
    if kind == "ports" and "security_groups" in spec:
        for group_id in spec["security_groups"] or []:
            _get(ctx, "security-groups", group_id)
        record["security_groups"] = list(spec["security_groups"] or [])
    updatable = {
        "name",
        "description",
        "admin_state_up",
        "dns_nameservers",
        "device_id",
        "device_owner",
        "allowed_address_pairs",
        "port_security_enabled",
        "routes",
        "mtu",
    }
    for key, value in spec.items():
        if key in updatable and key in record:
            record[key] = value
    _touch(record)
    return json_response({body_key: _view(ctx.sim, kind, record)})


def delete_resource(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind, _body, _t, _m = COLLECTIONS[collection]
    record = _get(ctx, collection, item_id)
    if not ctx.who.is_admin and record["project_id"] != ctx.who.project_id:
        raise neutron_error(403, "PolicyNotAuthorized", f"(rule:delete_{_body}) is disallowed by policy")
    sim = ctx.sim
    if kind == "networks":
        ports = [
            p
            for p in sim.tables["ports"].values()
            if p["network_id"] == item_id and p["device_owner"] != "network:dhcp"
        ]
        if ports:
            raise neutron_error(
                409,
                "NetworkInUse",
                f"Unable to complete operation on network {item_id}. "
                "There are one or more ports still in use on the network.",
            )
        for subnet_id in list(record["subnets"]):
            sim.remove("subnets", subnet_id)
        sim.remove("networks", item_id)
    elif kind == "subnets":
        if any(
            fixed["subnet_id"] == item_id for p in sim.tables["ports"].values() for fixed in p["fixed_ips"]
        ):
            raise neutron_error(
                409,
                "SubnetInUse",
                f"Unable to complete operation on subnet {item_id}: One or "
                "more ports have an IP allocation from this subnet.",
            )
        network = sim.tables["networks"].get(record["network_id"])
        if network is not None and item_id in network["subnets"]:
            network["subnets"].remove(item_id)
        sim.remove("subnets", item_id)
    elif kind == "routers":
        if _router_interfaces(sim, item_id):
            raise neutron_error(409, "RouterInUse", f"Router {item_id} still has ports")
        if record["_gw_port"]:
            sim.delete_port_locked(record["_gw_port"])
        sim.remove("routers", item_id)
    elif kind == "ports":
        if (
            record["device_owner"] in ("network:router_interface", "network:router_gateway")
            and record["device_id"]
        ):
            raise neutron_error(
                409,
                "PortInUse",
                f"Port {item_id} cannot be deleted directly via the port API: "
                f"has device owner {record['device_owner']}.",
            )
        sim.delete_port_locked(item_id)
    elif kind == "security_groups":
        if any(item_id in p["security_groups"] for p in sim.tables["ports"].values()):
            raise neutron_error(409, "SecurityGroupInUse", f"Security Group {item_id} in use.")
        for rule_id in record["_rules"]:
            sim.remove("security_group_rules", rule_id)
        sim.remove("security_groups", item_id)
    elif kind == "security_group_rules":
        group = sim.tables["security_groups"].get(record["security_group_id"])
        if group is not None and item_id in group["_rules"]:
            group["_rules"].remove(item_id)
        sim.remove("security_group_rules", item_id)
    return empty(204)


def _router_interfaces(sim: SimCloud, router_id: str) -> list[Record]:
    return [
        p
        for p in sim.tables["ports"].values()
        if p["device_id"] == router_id and p["device_owner"] == "network:router_interface"
    ]


def _interface_info(router: Record, port: Record) -> dict[str, Any]:
    subnet_ids = [fixed["subnet_id"] for fixed in port["fixed_ips"]]
    return {
        "id": router["id"],
        "tenant_id": router["project_id"],
        "project_id": router["project_id"],
        "port_id": port["id"],
        "network_id": port["network_id"],
        "subnet_id": subnet_ids[0] if subnet_ids else None,
        "subnet_ids": subnet_ids,
        "tags": [],
    }


def add_router_interface(ctx: Ctx, router_id: str) -> Response:
    sim = ctx.sim
    router = _get(ctx, "routers", router_id)
    spec = ctx.body or {}
    if spec.get("port_id"):
        port = _get(ctx, "ports", str(spec["port_id"]))
        if port["device_id"]:
            raise neutron_error(
                409,
                "PortInUse",
                f"Unable to complete operation on port {port['id']} for "
                f"network {port['network_id']}. Port already has an attached "
                f"device {port['device_id']}.",
            )
        port.update(device_id=router_id, device_owner="network:router_interface", status="ACTIVE")
        _touch(router)
        return json_response(_interface_info(router, port))
    subnet_id = spec.get("subnet_id")
    if not subnet_id:
        raise neutron_error(
            400, "BadRequest", "Bad router request: Either subnet_id or port_id must be specified."
        )
    subnet = _get(ctx, "subnets", str(subnet_id))
    for existing in _router_interfaces(sim, router_id):
        if any(fixed["subnet_id"] == subnet_id for fixed in existing["fixed_ips"]):
            raise neutron_error(
                400, "BadRequest", f"Bad router request: Router already has a port on subnet {subnet_id}."
            )
    if not subnet["gateway_ip"]:
        raise neutron_error(
            400, "BadRequest", "Bad router request: Subnet for router interface must have a gateway IP."
        )
    try:
        port = sim.create_port_locked(
            project_id=router["project_id"],
            network_id=subnet["network_id"],
            fixed_ips=[{"subnet_id": subnet["id"], "ip_address": subnet["gateway_ip"]}],
            device_owner="network:router_interface",
            device_id=router_id,
            security_groups=[],
        )
    except LookupError as exc:
        raise neutron_error(409, str(exc.args[0]), str(exc.args[-1])) from exc
    _touch(router)
    return json_response(_interface_info(router, port))


def remove_router_interface(ctx: Ctx, router_id: str) -> Response:
    sim = ctx.sim
    router = _get(ctx, "routers", router_id)
    spec = ctx.body or {}
    interfaces = _router_interfaces(sim, router_id)
    if spec.get("port_id"):
        found = [p for p in interfaces if p["id"] == spec["port_id"]]
        if not found:
            raise neutron_error(
                404,
                "RouterInterfaceNotFound",
                f"Router {router_id} does not have an interface with id {spec['port_id']}",
            )
    else:
        subnet_id = spec.get("subnet_id")
        found = [p for p in interfaces if any(f["subnet_id"] == subnet_id for f in p["fixed_ips"])]
        if not found:
            raise neutron_error(
                404,
                "RouterInterfaceNotFoundForSubnet",
                f"Router {router_id} has no interface on subnet {subnet_id}",
            )
    port = found[0]
    info = _interface_info(router, port)
    sim.delete_port_locked(port["id"])
    _touch(router)
    return json_response(info)


# ---------------------------------------------------------------------------------------------- tags
def get_tags(ctx: Ctx, collection: str, item_id: str) -> Response:
    return json_response({"tags": list(_get(ctx, collection, item_id)["tags"])})


def replace_tags(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind = COLLECTIONS[collection][0]
    record = _get(ctx, collection, item_id)
    tags = (ctx.body or {}).get("tags")
    if not isinstance(tags, list) or not all(isinstance(t, str) and 0 < len(t) <= 255 for t in tags):
        raise neutron_error(400, "InvalidInput", "Invalid input for operation: Invalid tags body.")
    ctx.sim.set_tags(kind, record, tags)
    _touch(record)
    return json_response({"tags": list(record["tags"])})


def delete_tags(ctx: Ctx, collection: str, item_id: str) -> Response:
    kind = COLLECTIONS[collection][0]
    record = _get(ctx, collection, item_id)
    ctx.sim.set_tags(kind, record, [])
    _touch(record)
    return empty(204)


def check_tag(ctx: Ctx, collection: str, item_id: str, tag: str) -> Response:
    if tag not in _get(ctx, collection, item_id)["tags"]:
        raise neutron_error(404, "TagNotFound", f"Tag {tag} could not be found for {collection} {item_id}.")
    return empty(204)


def add_tag(ctx: Ctx, collection: str, item_id: str, tag: str) -> Response:
    kind = COLLECTIONS[collection][0]
    record = _get(ctx, collection, item_id)
    if tag not in record["tags"]:
        ctx.sim.add_tag(kind, record, tag)
        _touch(record)
    return empty(201)


def delete_tag(ctx: Ctx, collection: str, item_id: str, tag: str) -> Response:
    kind = COLLECTIONS[collection][0]
    record = _get(ctx, collection, item_id)
    if tag not in record["tags"]:
        raise neutron_error(404, "TagNotFound", f"Tag {tag} could not be found for {collection} {item_id}.")
    ctx.sim.remove_tag(kind, record, tag)
    _touch(record)
    return empty(204)


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


def _bind(handler: Any, collection: str) -> Any:
    def bound(ctx: Ctx, **params: str) -> Response:
        return handler(ctx, collection, **params)  # type: ignore[no-any-return]

    return bound


def register(router: Router) -> None:
    s = "network"
    p = "/network/v2.0"
    router.add("GET", "/network", versions, service=s, public=True)
    router.add("GET", p, version, service=s)
    router.add("GET", f"{p}/extensions", extensions, service=s)
    router.add("PUT", f"{p}/routers/{{router_id}}/add_router_interface", add_router_interface, service=s)
    router.add(
        "PUT", f"{p}/routers/{{router_id}}/remove_router_interface", remove_router_interface, service=s
    )
    for collection in COLLECTIONS:
        base = f"{p}/{collection}"
        router.add("GET", base, _bind(list_resources, collection), service=s)
        router.add("POST", base, _bind(create_resource, collection), service=s)
        router.add("GET", base + "/{item_id}", _bind(get_resource, collection), service=s)
        router.add("PUT", base + "/{item_id}", _bind(update_resource, collection), service=s)
        router.add("DELETE", base + "/{item_id}", _bind(delete_resource, collection), service=s)
        router.add("GET", base + "/{item_id}/tags", _bind(get_tags, collection), service=s)
        router.add("PUT", base + "/{item_id}/tags", _bind(replace_tags, collection), service=s)
        router.add("DELETE", base + "/{item_id}/tags", _bind(delete_tags, collection), service=s)
        router.add("GET", base + "/{item_id}/tags/{tag}", _bind(check_tag, collection), service=s)
        router.add("PUT", base + "/{item_id}/tags/{tag}", _bind(add_tag, collection), service=s)
        router.add("DELETE", base + "/{item_id}/tags/{tag}", _bind(delete_tag, collection), service=s)
