"""The FastAPI application that composes the platform: channels, routes, settings, start-up."""
