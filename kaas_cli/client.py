"""A small HTTP client of the kaas API for the CLI. API errors become ``ApiError`` with the server's
message, so commands print what the server said instead of a traceback.

``transport`` is httpx's own seam: ``kaas`` leaves it unset (HTTP over the network); a caller that runs the
API in its own process passes a transport to it (``kaas_cli.commands.common.Wiring``).
"""

from __future__ import annotations

from typing import Any

import httpx

from kaas_cli.config import CliConfig


class ApiError(Exception):
    def __init__(self, status_code: int, error: str, message: str) -> None:
        super().__init__(f"{message} ({error}, HTTP {status_code})")
        self.status_code = status_code
        self.error = error
        self.message = message


def _error_of(response: httpx.Response) -> ApiError:
    """The API's error body (``{"error", "message", "detail"}``; its message already names each field a
    422 refuses) as an ``ApiError``."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return ApiError(response.status_code, "http_error", response.text or response.reason_phrase)
    message = body.get("message") or body.get("detail") or response.reason_phrase
    return ApiError(response.status_code, str(body.get("error", "http_error")), str(message))


class KaasClient:
    def __init__(
        self, config: CliConfig, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        if not config.token:
            raise ApiError(401, "unauthenticated", "no token configured: run `kaas up` or `kaas login`")
        self._http = httpx.Client(
            base_url=config.url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=timeout,
            verify=config.verify(),
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KaasClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _send(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ApiError(
                0, "unreachable", f"cannot reach the kaas API at {self._http.base_url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            raise _error_of(response)
        return response

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        """The JSON answer of the API (None for an empty one)."""
        response = self._send(method, path, json=json, params=params)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=_present(params))

    def get_text(self, path: str, **params: Any) -> str:
        """A document that is not JSON (a kubeconfig is YAML)."""
        return self._send("GET", path, params=_present(params)).text

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params=_present(params))


def _present(params: dict[str, Any]) -> dict[str, Any] | None:
    return {k: v for k, v in params.items() if v is not None} or None
