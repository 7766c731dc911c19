from __future__ import annotations

from collections.abc import Iterator

import pytest

from .upstream import Upstream


@pytest.fixture
def upstream(request: pytest.FixtureRequest) -> Iterator[Upstream]:
    quota, style = getattr(request, "param", (10, "draft10"))
    server = Upstream(quota, style)
    yield server
    server.close()
