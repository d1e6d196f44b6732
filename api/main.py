"""ASGI entry point for uvicorn workers: `api.main:app`.

Tuning that belongs to the serving process rather than to the application object (tests build
apps with `create_app` and keep the defaults):
- the size of the AnyIO thread pool that runs the sync routes (`NHR_THREADPOOL_SIZE`), applied
  on the worker's own event loop at lifespan startup;
- logging records skip the caller lookup and thread/process names, which the access log's
  format never prints (the "Optimization" table of the logging HOWTO).
"""

import logging

from anyio import to_thread

from api.app import create_app
from registry.settings import get_settings

logging._srcfile = None  # no findCaller() walk of the stack for every access-log line
logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def with_threadpool_size(asgi, size: int | None):
    """Wrap `asgi` so that, at lifespan startup, the worker's AnyIO thread limiter holds `size`
    tokens (None: AnyIO's default of 40). Nothing else changes."""
    if not size:
        return asgi

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            to_thread.current_default_thread_limiter().total_tokens = size
        await asgi(scope, receive, send)

    app.inner = asgi
    return app


app = with_threadpool_size(create_app(), get_settings().serve.threadpool_size)
