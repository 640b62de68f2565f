"""The errors the simulated services answer, each in the body shape of the real service.

Handlers raise ``ApiError``; ``simcloud.app`` renders it. The helpers build the bodies Nova, Neutron, Octavia,
Glance and Keystone really send, so openstacksdk turns them into the same exceptions with the same messages.
"""

from __future__ import annotations

from typing import Any

NOVA_ERROR_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    409: "conflictingRequest",
}


class ApiError(Exception):
    """An HTTP error answer: status and JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


def nova_error(status: int, message: str) -> ApiError:
    key = NOVA_ERROR_KEYS.get(status, "computeFault")
    return ApiError(status, {key: {"code": status, "message": message}})


def neutron_error(status: int, error_type: str, message: str) -> ApiError:
    return ApiError(status, {"NeutronError": {"type": error_type, "message": message, "detail": ""}})


def octavia_error(status: int, message: str) -> ApiError:
    return ApiError(status, {"faultcode": "Client", "faultstring": message, "debuginfo": None})


def glance_error(status: int, message: str) -> ApiError:
    titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict"}
    title = titles.get(status, "Error")
    return ApiError(status, {"message": message, "code": f"{status} {title}", "title": title})


def keystone_error(status: int, message: str) -> ApiError:
    titles = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}
    return ApiError(
        status, {"error": {"code": status, "message": message, "title": titles.get(status, "Error")}}
    )
