"""A Flask app with app-wide default limits, per-route limits, costs and exemptions.

Run it:   python examples/flask_app.py        (serves http://127.0.0.1:5000)
Try it:   for i in 1 2 3 4; do curl -si http://127.0.0.1:5000/login -X POST | head -1; done
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask, g, jsonify, request

from ratekeeper.integrations import api_key, cost_from_header, user
from ratekeeper.integrations.flask import Limiter


def create_app(store: Any = None, **options: Any) -> Flask:
    app = Flask(__name__)

    @app.before_request  # before init_app, so the limiter sees g.user
    def authenticate() -> None:
        g.user = {"token-alice": "alice", "token-bob": "bob"}.get(
            request.headers.get("Authorization", "").removeprefix("Bearer ")
        )

    limiter = Limiter(
        default_limits="100/minute;2000/hour",
        key=user(fallback=api_key()),  # signed-in user, else API key, else client address
        store=store,
        exempt_paths=["/static/"],
        **options,
    )
    limiter.init_app(app)

    @app.get("/")
    def index() -> Any:
        return jsonify(user=g.user)

    @app.get("/health")
    @limiter.exempt
    def health() -> Any:
        return jsonify(status="ok")

    @app.post("/login")
    @limiter.limit("3/minute", scope="auth")  # login and password reset share one budget
    def login() -> Any:
        return jsonify(ok=True)

    @app.post("/password-reset")
    @limiter.limit("3/minute", scope="auth")
    def password_reset() -> Any:
        return jsonify(ok=True)

    @app.post("/batch")
    @limiter.limit("50/minute", cost=cost_from_header("X-Batch-Size", maximum=50))
    async def batch() -> Any:  # async views work too (Flask's async support)
        return jsonify(accepted=request.headers.get("X-Batch-Size", "1"))

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
