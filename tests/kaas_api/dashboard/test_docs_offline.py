"""The API's documentation pages work on an air-gapped network: ``/docs`` (Swagger UI) and ``/redoc``
render in headless Chromium while every request that is not to kaas itself is refused, and no asset of the
pages comes from anywhere but kaas (the assets are package data of ``fastapi-offline``, served by kaas)."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

# committing: uvicorn serves the browser's requests side by side, in threads of its own
pytestmark = [pytest.mark.e2e, pytest.mark.committing]


def offline_page(browser: object, base_url: str) -> tuple[object, list[str], list[str]]:
    """A page whose every request outside kaas is aborted; returns it with the lists of what was asked
    from outside and of every URL loaded."""
    kaas = urlsplit(base_url).netloc
    page = browser.new_page()  # type: ignore[attr-defined]
    outside: list[str] = []
    loaded: list[str] = []

    def route(route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        loaded.append(url)
        if urlsplit(url).netloc != kaas:
            outside.append(url)
            route.abort()  # type: ignore[attr-defined]
        else:
            route.continue_()  # type: ignore[attr-defined]

    page.route("**/*", route)
    return page, outside, loaded


def test_swagger_ui_renders_every_operation_with_kaas_as_its_only_source(
    browser: object, base_url: str
) -> None:
    page, outside, loaded = offline_page(browser, base_url)
    page.goto(base_url + "/docs")  # type: ignore[attr-defined]
    page.wait_for_selector(".opblock", timeout=20_000)  # type: ignore[attr-defined]
    operations = page.locator(".opblock").count()  # type: ignore[attr-defined]
    assert operations > 40
    assert page.locator(".information-container .title").inner_text().startswith("kaas")  # type: ignore[attr-defined]
    assert outside == []
    assert any(url.endswith(".js") for url in loaded)


def test_redoc_renders_with_kaas_as_its_only_source(browser: object, base_url: str) -> None:
    page, outside, _ = offline_page(browser, base_url)
    page.goto(base_url + "/redoc")  # type: ignore[attr-defined]
    page.wait_for_selector("[data-section-id]", timeout=20_000)  # type: ignore[attr-defined]
    assert page.locator("[data-section-id]").count() > 10  # type: ignore[attr-defined]
    assert outside == []
