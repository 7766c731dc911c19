"""A single-file Django project with ratekeeper's middleware and view decorator.

Run it:   python examples/django_app.py        (serves http://127.0.0.1:8001)
Try it:   curl -i http://127.0.0.1:8001/search/?q=x -H 'X-Cost: 3'

Settings live in ``RATEKEEPER`` (see ``SETTINGS`` below); importing this module configures
Django if nothing else has.
"""

from __future__ import annotations

import os
from typing import Any

import django
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path

from ratekeeper.integrations import cost_from_header
from ratekeeper.integrations.django import ratelimit, ratelimit_exempt

RATEKEEPER: dict[str, Any] = {
    "DEFAULT_LIMITS": "60/minute",  # every view that is not exempt and has no @ratelimit
    "STORE": os.environ.get("RATEKEEPER_STORE", "memory://"),
    "KEY": "ratekeeper.integrations.client_ip",  # a dotted path works (factories are called)
    "TRUSTED_PROXIES": [],  # e.g. ["10.0.0.0/8"] behind a load balancer
    "EXEMPT_PATHS": ["/health/"],
    "ON_STORE_ERROR": "allow",  # the default: a dead store must not take the site down
}

SETTINGS: dict[str, Any] = {
    "DEBUG": False,
    "SECRET_KEY": "example-only-not-secret",
    "ALLOWED_HOSTS": ["127.0.0.1", "localhost", "testserver"],
    "ROOT_URLCONF": __name__,
    "MIDDLEWARE": ["ratekeeper.integrations.django.RateLimitMiddleware"],
    "INSTALLED_APPS": [],
    "USE_TZ": True,
    "RATEKEEPER": RATEKEEPER,
}


def index(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"hello": "world"})


@ratelimit_exempt
def health(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@ratelimit("10/minute", cost=cost_from_header("X-Cost", maximum=10))
def search(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"q": request.GET.get("q", "")})


@ratelimit("5/minute", scope="uploads")
async def upload_image(request: HttpRequest) -> JsonResponse:  # async views work too
    return JsonResponse({"kind": "image"})


@ratelimit("5/minute", scope="uploads")  # shares the "uploads" budget
def upload_file(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"kind": "file"})


urlpatterns = [
    path("", index),
    path("health/", health),
    path("search/", search),
    path("upload/image/", upload_image),
    path("upload/file/", upload_file),
]

if not settings.configured:
    settings.configure(**SETTINGS)
    django.setup()

if __name__ == "__main__":
    from wsgiref.simple_server import make_server

    from django.core.wsgi import get_wsgi_application

    port = int(os.environ.get("PORT", "8001"))
    print(f"serving on http://127.0.0.1:{port}")
    make_server("127.0.0.1", port, get_wsgi_application()).serve_forever()
