"""A small HTTP client of the kaas API for the CLI. API errors become ``ApiError`` with the server's
message, so commands print what the server said instead of a traceback."""

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


class KaasClient:
    def __init__(self, config: CliConfig, *, timeout: float = 30.0) -> None:
        if not config.token:
            raise ApiError(401, "unauthenticated", "no token configured: run `kaas up` or `kaas login`")
        self._http = httpx.Client(
            base_url=config.url.rstrip("/"),
            headers={"Authorization": f"Bearer {config.token}"},
            timeout=timeout,
            verify=config.verify(),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KaasClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None
    ) -> Any:
        try:
            response = self._http.request(method, path, json=json, params=params)
        except httpx.HTTPError as exc:
            raise ApiError(
                0, "unreachable", f"cannot reach the kaas API at {self._http.base_url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            error = body.get("error", "http_error") if isinstance(body, dict) else "http_error"
            message = body.get("message") or body.get("detail") if isinstance(body, dict) else None
            raise ApiError(
                response.status_code, str(error), str(message or response.text or response.reason_phrase)
            )
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
