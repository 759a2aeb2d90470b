"""The web dashboard: one HTML page for every dashboard address, and its static files.

The page itself holds no data (the read API serves it, under the read scope or
`public_read`), so it is served to anyone; the browser routes by the address.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, Response

from autoswarm.shared.errors import NotFound

router = APIRouter(include_in_schema=False)

STATIC = {
    "app.js": "text/javascript; charset=utf-8",
    "chart.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
# The page loads only its own files and talks only to this coordinator.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@cache
def _file(name: str) -> bytes:
    return resources.files("autoswarm.coordinator.dashboard").joinpath(name).read_bytes()


def _page() -> HTMLResponse:
    headers = {**PAGE_HEADERS, "Content-Security-Policy": CSP}
    return HTMLResponse(_file("index.html"), headers=headers)


@router.get("/")
async def home() -> HTMLResponse:
    return _page()


@router.get("/tasks/{task_id}")
async def task_page(task_id: str) -> HTMLResponse:
    return _page()


@router.get("/tasks/{task_id}/lineage")
async def lineage_page(task_id: str) -> HTMLResponse:
    return _page()


@router.get("/experiments/{experiment_id}")
async def experiment_page(experiment_id: str) -> HTMLResponse:
    return _page()


@router.get("/contributors")
async def contributors_page() -> HTMLResponse:
    return _page()


@router.get("/ui/{name}")
async def static_file(name: str) -> Response:
    media_type = STATIC.get(name)
    if media_type is None:
        raise NotFound(f"no dashboard file {name!r}")
    return Response(_file(name), media_type=media_type, headers=PAGE_HEADERS)
