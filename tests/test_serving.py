"""The serving process's tuning (api/main.py): the thread-pool size is applied at startup and
changes nothing else."""

from __future__ import annotations

import anyio
from anyio import to_thread

from api.main import with_threadpool_size


def test_threadpool_size_is_applied_at_lifespan_startup():
    seen = []

    async def inner(scope, receive, send):
        seen.append((scope["type"], to_thread.current_default_thread_limiter().total_tokens))

    async def main():
        app = with_threadpool_size(inner, 8)
        await app({"type": "lifespan"}, None, None)
        await app({"type": "http"}, None, None)

    anyio.run(main)
    assert seen == [("lifespan", 8), ("http", 8)]


def test_no_size_keeps_the_app_and_anyio_default():
    async def inner(scope, receive, send):
        pass

    assert with_threadpool_size(inner, None) is inner

    async def main():
        return to_thread.current_default_thread_limiter().total_tokens

    assert anyio.run(main) == 40
