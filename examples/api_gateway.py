"""An API gateway in front of several services, with per-tenant and per-route limits.

Try it:   pip install "ratekeeper[fastapi]"
          python examples/api_gateway.py          (serves http://127.0.0.1:8000)
          curl -i -H 'X-Tenant: acme' http://127.0.0.1:8000/search/items

Every request passes three limits at once, all-or-nothing, in one store operation
(`ratekeeper.AsyncChain`): the gateway's global capacity, the tenant's plan, and the route's own
limit for that tenant (the expensive ``/reports`` service gets far less than ``/search``). A
denial consumes nothing at any level, names the limit that denied it, and carries the usual
headers. The services are stand-ins; a real gateway forwards the request (e.g. with httpx).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ratekeeper import AsyncChain, AsyncRateLimiter
from ratekeeper.stores.memory import AsyncMemoryStore

GLOBAL = "1000/second"  # what the services behind the gateway can take in all
PLANS = {"free": "20/minute", "pro": "600/minute"}
TENANTS = {"acme": "pro", "hooli": "free"}  # in real life: a lookup of the tenant's account
ROUTES = {"search": "300/minute", "reports": "5/minute"}  # per tenant and service


def create_app(clock: Callable[[], float] | None = None) -> FastAPI:
    store = AsyncMemoryStore()  # one store shared by every level (a chain needs one store)

    def limiter(limits: str, name: str) -> AsyncRateLimiter:
        return AsyncRateLimiter(limits, store=store, clock=clock, name=name)

    global_limiter = limiter(GLOBAL, "global")
    plans = {plan: limiter(rate, f"plan-{plan}") for plan, rate in PLANS.items()}
    routes = {service: limiter(rate, f"route-{service}") for service, rate in ROUTES.items()}
    app = FastAPI()

    @app.api_route("/{service}/{path:path}", methods=["GET", "POST"])
    async def gateway(service: str, path: str, request: Request) -> JSONResponse:
        tenant = request.headers.get("x-tenant", "")
        if tenant not in TENANTS:
            return JSONResponse({"error": "unknown tenant"}, status_code=401)
        if service not in ROUTES:
            return JSONResponse({"error": "no such service"}, status_code=404)
        chain = AsyncChain(global_limiter, plans[TENANTS[tenant]], routes[service])
        decision = await chain.hit("gateway", f"tenant:{tenant}", f"{tenant}:{service}")
        if not decision:
            denied_by = decision.policy  # the binding (denying) limit
            body = {"error": "rate limited", "limit": str(denied_by), "tenant": tenant}
            return JSONResponse(body, status_code=429, headers=decision.headers())
        body = {"service": service, "path": path, "tenant": tenant}  # forward here
        return JSONResponse(body, headers=decision.headers())

    return app


app = create_app()

if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
