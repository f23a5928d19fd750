"""Run an ASGI app on a real loopback port in a background thread, for tests."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from serving.process import free_port


@contextmanager
def serving(app, port: int | None = None, host: str = "127.0.0.1") -> Iterator[str]:
    """Yield the app's base URL while uvicorn serves it; stop it afterwards.

    Any 127.x.y.z `host` works on Linux: several servers on one port, as the
    pods behind one headless Service.
    """
    port = port or free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
