"""Glance v2 under ``/image``: version discovery, list (``name``/``status``/``visibility`` filters), get.

Called by ``simcloud.app``. The images are the seeded ones (``ubuntu-22.04``, ``fake-image``); uploads are
not simulated.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response

from simcloud.errors import glance_error
from simcloud.http import Ctx, Router, json_response
from simcloud.state import Record


def versions(ctx: Ctx) -> Response:
    return json_response(
        {
            "versions": [
                {
                    "id": f"v2.{minor}",
                    "status": "CURRENT" if minor == 17 else "SUPPORTED",
                    "links": [{"rel": "self", "href": f"{ctx.base_url}/image/v2/"}],
                }
                for minor in (17, 15, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
            ]
        },
        300,
    )


def _view(image: Record) -> dict[str, Any]:
    image_id = image["id"]
    return {
        "name": image["name"],
        "disk_format": "raw",
        "container_format": "bare",
        "visibility": "public",
        "size": 1024,
        "virtual_size": 1024,
        "status": "active",
        "checksum": "0f343b0931126a20f133d67c2b018a3b",
        "protected": False,
        "min_ram": 0,
        "min_disk": 0,
        "owner": image["owner"],
        "os_hidden": False,
        "os_hash_algo": "sha512",
        "os_hash_value": "0" * 128,
        "id": image_id,
        "created_at": image["created"],
        "updated_at": image["created"],
        "tags": list(image["tags"]),
        "self": f"/v2/images/{image_id}",
        "file": f"/v2/images/{image_id}/file",
        "schema": "/v2/schemas/image",
        "stores": "fs",
    }


def list_images(ctx: Ctx) -> Response:
    images = sorted(ctx.sim.tables["images"].values(), key=lambda i: i["created"], reverse=True)
    views = [_view(image) for image in images]
    for key in ("name", "status", "visibility", "id", "owner"):
        wanted = ctx.arg(key)
        if wanted is not None:
            views = [view for view in views if str(view[key]) == wanted]
    return json_response({"images": views, "first": "/v2/images", "schema": "/v2/schemas/images"})


def get_image(ctx: Ctx, image_id: str) -> Response:
    image = ctx.sim.tables["images"].get(image_id)
    if image is None:
        raise glance_error(404, f"No image found with ID {image_id}")
    return json_response(_view(image))


def register(router: Router) -> None:
    s = "image"
    router.add("GET", "/image", versions, service=s, public=True)
    router.add("GET", "/image/versions", versions, service=s, public=True)
    router.add("GET", "/image/v2/images", list_images, service=s)
    router.add("GET", "/image/v2/images/{image_id}", get_image, service=s)
