"""A multi-tenant FastAPI API whose rate limits depend on the tenant's plan.

Run it:   python examples/fastapi_tiers.py        (serves http://127.0.0.1:8000)
Try it:   curl -i -H 'X-API-Key: key-free' 'http://127.0.0.1:8000/search?q=cats'

- every request is limited by its tenant's plan (free / pro / enterprise), keyed by tenant;
  requests without a known API key get the free plan, keyed by client address;
- POST /reports costs one unit per page (``?pages=5`` costs 5);
- the two export routes share one budget;
- /health is never limited; a dead store lets requests through (logged).
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import Depends, FastAPI, Request

from ratekeeper.integrations.fastapi import Limiter

# In real life: a database lookup, or claims in a verified token.
TENANTS = {
    "key-free": ("acme", "free"),
    "key-pro": ("globex", "pro"),
    "key-enterprise": ("initech", "enterprise"),
}
PLAN_LIMITS = {
    "free": "5/minute",
    "pro": "50/minute;10/second",
    "enterprise": "500/minute",
}
REPORT_PAGES = {"free": "10/hour", "pro": "200/hour", "enterprise": "5000/hour"}


def tenant(request: Request) -> tuple[str, str] | None:
    return TENANTS.get(request.headers.get("x-api-key", ""))


def tenant_key(request: Request) -> str | None:
    found = tenant(request)
    return None if found is None else f"tenant:{found[0]}"  # None: key by client address


def plan_limit(request: Request) -> str:
    found = tenant(request)
    return PLAN_LIMITS[found[1] if found else "free"]


def report_limit(request: Request) -> str:
    found = tenant(request)
    return REPORT_PAGES[found[1] if found else "free"]


def pages(request: Request) -> int:
    return int(request.query_params.get("pages", "1"))  # a bad value costs 1 (and is logged)


def create_app(store: Any = None, **options: Any) -> FastAPI:
    """Build the app; ``store`` is a URL (``redis://...``) or store object, memory by default."""
    settings: dict[str, Any] = {
        "key": tenant_key,
        "store": store,
        "exempt_paths": ["/health"],
        # behind a load balancer: TRUSTED_PROXIES=10.0.0.0/8 python examples/fastapi_tiers.py
        "trusted_proxies": [p for p in os.environ.get("TRUSTED_PROXIES", "").split(",") if p],
    }
    # the default limit of every request is a function of the request: its tenant's plan
    limiter = Limiter(plan_limit, **{**settings, **options})
    app = FastAPI(title="ratekeeper multi-tenant example")
    limiter.init_app(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/search")
    async def search(q: str = "") -> dict[str, Any]:
        return {"query": q, "results": []}

    @app.post("/reports")
    @limiter.limit(report_limit, cost=pages)
    async def reports(pages: int = 1) -> dict[str, Any]:
        return {"pages": pages}

    @app.get("/export/csv")
    @limiter.limit("2/minute", scope="exports")
    def export_csv() -> dict[str, str]:  # a sync view: runs in the thread pool
        return {"format": "csv"}

    @app.get("/export/json")
    @limiter.limit("2/minute", scope="exports")
    async def export_json() -> dict[str, str]:
        return {"format": "json"}

    @app.get("/me", dependencies=[Depends(limiter.dependency("3/minute"))])
    async def me(request: Request) -> dict[str, Any]:
        found = tenant(request)
        return {"tenant": found[0] if found else None, "plan": found[1] if found else "free"}

    return app


app = create_app()  # `uvicorn examples.fastapi_tiers:app` works too

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
