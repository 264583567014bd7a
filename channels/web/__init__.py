"""Web chat channel: socket.io beside FastAPI; the page itself lives in webapp/frontend."""
