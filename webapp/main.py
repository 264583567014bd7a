"""ASGI entry point: `uvicorn webapp.main:app`."""

from webapp.app import create_app

app = create_app()
