"""The DynamoDB stand-in of the tests: moto's server mode, one process, real HTTP.

    python tests/stores/motoserver.py PORT      # serves on 127.0.0.1:PORT until SIGTERM

``scripts/services`` starts one for the suite; tests start private ones (to stop, freeze or
restart them). Two differences from moto's own ``moto_server`` command:

- requests are served one at a time: moto's backends check a write's condition and then write,
  without a lock, so two threads could both pass conditional writes that real DynamoDB
  serializes (the exactness tests would then test moto, not the store);
- connections are HTTP/1.1 keep-alive, as DynamoDB's endpoints are (werkzeug's default, HTTP/1.0,
  opens a connection per request).

The process names itself ``moto-server`` (``/proc/PID/comm``) so that ``scripts/services stop``
can tell it from a reused PID.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

PROCESS_NAME = b"moto-server"
PR_SET_NAME = 15  # prctl(2)


def _name_process() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_NAME, ctypes.c_char_p(PROCESS_NAME), 0, 0, 0)


def make(port: int, host: str = "127.0.0.1") -> Any:
    """The server (werkzeug's), not yet serving: ``serve_forever()`` it in some thread."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    turn = threading.Lock()

    def one_at_a_time(
        environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        with turn:
            return list(app(environ, start_response))

    class KeepAlive(MotoRequestHandler):  # type: ignore[misc]
        protocol_version = "HTTP/1.1"

    return make_server(host, port, one_at_a_time, threaded=True, request_handler=KeepAlive)


if __name__ == "__main__":
    _name_process()
    server = make(int(sys.argv[1]))
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
