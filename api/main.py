"""ASGI entry point for uvicorn workers: `api.main:app`."""

from api.app import create_app

app = create_app()
