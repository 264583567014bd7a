"""Shared core: settings, database, task queue. Depends on nothing else in the platform."""
