"""An aiohttp app with a default limit, per-handler limits, costs and an exempt handler.

Run it:   python examples/aiohttp_app.py        (serves http://127.0.0.1:8080)
Try it:   curl -i http://127.0.0.1:8080/ -H 'X-API-Key: k1'
"""

from __future__ import annotations

import os
from typing import Any

from aiohttp import web

from ratekeeper.integrations import api_key, cost_from_header
from ratekeeper.integrations.aiohttp import Limiter


def create_app(store: Any = None, **options: Any) -> web.Application:
    limiter = Limiter("30/minute", key=api_key(), store=store, **options)
    routes = web.RouteTableDef()

    @routes.get("/")
    async def index(request: web.Request) -> web.Response:
        return web.json_response({"hello": "world"})

    @routes.get("/health")
    @limiter.exempt
    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    @routes.post("/ingest")
    @limiter.limit("100/minute", cost=cost_from_header("X-Events", maximum=100))
    async def ingest(request: web.Request) -> web.Response:
        return web.json_response({"accepted": request.headers.get("X-Events", "1")})

    @routes.get("/search")
    @limiter.limit("5/minute", scope="search")
    async def search(request: web.Request) -> web.Response:
        return web.json_response({"q": request.query.get("q", "")})

    @routes.get("/suggest")
    @limiter.limit("5/minute", scope="search")  # shares the search budget
    async def suggest(request: web.Request) -> web.Response:
        return web.json_response({"suggestions": []})

    app = web.Application(middlewares=[limiter.middleware])
    app.add_routes(routes)
    return app


if __name__ == "__main__":
    web.run_app(create_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8080")))
