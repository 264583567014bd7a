# The platform image (web app and Celery worker). Rasa and its action server use the official
# rasa/rasa and rasa/rasa-sdk images instead (see docker-compose.yml).
FROM node:20-bookworm-slim AS chat-page
WORKDIR /src/webapp/frontend
COPY webapp/frontend/package.json webapp/frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY webapp/frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
# llama-cpp-python compiles llama.cpp: a compiler and cmake, and a portable build (the default
# targets the building machine's CPU). For GPU offload build with -DGGML_CUDA=on on a CUDA base.
# espeak-ng is the embedded text-to-speech of phone calls (channels/voice/).
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 CMAKE_ARGS="-DGGML_NATIVE=OFF"
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake libgomp1 espeak-ng \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml requirements/platform.lock ./
COPY requirements/ requirements/
COPY bot/ bot/
COPY channels/ channels/
COPY core/ core/
COPY escalation/ escalation/
COPY rag/ rag/
COPY models/ models/
COPY training/ training/
COPY webapp/*.py webapp/
COPY webapp/routes/ webapp/routes/
COPY kb/ kb/
COPY alembic.ini README.md ./
RUN pip install -c requirements/platform.lock .
COPY --from=chat-page /src/webapp/static/ webapp/static/
RUN useradd --system --uid 10001 clinic && mkdir -p /app/var && chown clinic /app/var
USER clinic
EXPOSE 8000
# One worker per container: scale with containers behind a sticky load balancer (docker-compose.yml
# runs WEB_REPLICAS of them behind nginx), because socket.io's long-polling fallback must reach the
# process holding the session.
CMD ["uvicorn", "webapp.main:app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers"]
