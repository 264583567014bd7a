"""Local stand-ins for the OpenAI and Anthropic HTTP APIs.

They speak the vendors' documented wire formats (JSON bodies, SSE streams, error bodies, the
headers that matter) closely enough for the official SDKs to parse them, so the providers are
tested through the real clients rather than mocks. Each fake runs uvicorn on its own thread and
event loop, so it keeps serving whatever the test's loop is doing.

    with FakeOpenAI(default_text="Hello there.", served_model="gpt-4o-mini-2024-07-18") as fake:
        fake.script(Fail(429, retry_after="7"), Answer(chunk_delay_s=0.5))
        ...  # point a client at fake.base_url
        fake.requests[0].body["messages"]

A scripted behaviour serves one request; with the queue empty `fake.default` serves
(an `Answer()` of `default_text` unless replaced, e.g. `fake.default = Answer(echo=True)`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fakes.threaded import ThreadedServer


@dataclass(frozen=True)
class Answer:
    """A successful answer, streamed or not as the request asks."""

    text: str | None = None  # None: the fake's default_text
    echo: bool = False  # answer with the request's user content, to see what reached the server
    delay_s: float = 0.0  # before the response starts: a hung server
    chunk_delay_s: float = 0.0  # before each streamed text chunk: a slow server
    model: str | None = None  # the model id to report; None: the fake's served_model
    error_after_chunks: int | None = None  # streaming: the vendor's in-stream error after N chunks


@dataclass(frozen=True)
class Fail:
    """An HTTP error with the vendor's error body."""

    status: int
    retry_after: str | None = None  # the Retry-After header, sent as given
    message: str = "scripted failure"
    delay_s: float = 0.0


Behaviour = Answer | Fail


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # the parsed JSON body; None when it was not JSON


class _FakeServer:
    route_path = ""

    def __init__(
        self, *, default_text: str = "This is a scripted answer.", served_model: str | None = None
    ) -> None:
        self.default_text = default_text
        # What the response reports as `model`; None echoes the request's model.
        self.served_model = served_model
        self.default: Behaviour = Answer()
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Behaviour] = deque()
        self._http = ThreadedServer(type(self).__name__)
        self._stopping = False
        self.port = 0

    # -- control, from the test's side ---------------------------------------------------------

    def script(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, one each, in order."""
        self._queue.extend(behaviours)

    def reset(self) -> None:
        self._queue.clear()
        self.requests.clear()
        self.default = Answer()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._stopping = False
        self._http.serve(
            Starlette(
                routes=[
                    Route(self.route_path, self._handle, methods=["POST"]),
                    Route("/{path:path}", self._unknown_path, methods=["GET", "POST"]),
                ]
            )
        )
        self.port = self._http.port
        return self

    def stop(self) -> None:
        self._stopping = True  # ends scripted hangs at once, so shutdown is quick
        self._http.shutdown()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- serving, on the server's thread ------------------------------------------------------

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        self.requests.append(
            RecordedRequest(request.method, request.url.path, dict(request.headers), body)
        )
        refusal = self._check(request, body)
        if refusal is not None:
            return refusal
        behaviour = self._queue.popleft() if self._queue else self.default
        await self._pause(behaviour.delay_s)
        if isinstance(behaviour, Fail):
            return self._error(behaviour.status, behaviour.message, behaviour.retry_after)
        text = self.default_text if behaviour.text is None else behaviour.text
        if behaviour.echo:
            text = self._user_content(body)
        model = behaviour.model or self.served_model or str(body["model"])
        # "Tokens" are whitespace-separated pieces: enough to stream in parts and to honour
        # max_tokens the way the real APIs do (cut short, with a length stop reason).
        pieces = re.findall(r"\S+\s*|\s+", text)
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or len(pieces))
        truncated = len(pieces) > limit
        pieces = pieces[:limit]
        if body.get("stream"):
            return StreamingResponse(
                self._stream(pieces, truncated, model, body, behaviour),
                media_type="text/event-stream",
                headers=self._headers(),
            )
        return JSONResponse(self._complete(pieces, truncated, model, body), headers=self._headers())

    async def _unknown_path(self, request: Request) -> Response:
        return self._error(404, f"Unknown path {request.url.path}", None)

    async def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stopping and time.monotonic() < deadline:
            await asyncio.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    # -- the vendor's dialect --------------------------------------------------------------------

    def _check(self, request: Request, body: Any) -> Response | None:
        raise NotImplementedError

    def _error(self, status: int, message: str, retry_after: str | None) -> Response:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _user_content(self, body: Any) -> str:
        raise NotImplementedError

    def _complete(self, pieces: list[str], truncated: bool, model: str, body: Any) -> Any:
        raise NotImplementedError

    def _stream(
        self, pieces: list[str], truncated: bool, model: str, body: Any, behaviour: Answer
    ) -> AsyncIterator[str]:
        raise NotImplementedError


def _last_user_text(messages: Any) -> str:
    """The last user turn's text: content is a string or a list of typed parts."""
    for message in reversed(messages or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return ""


def _word_count(value: Any) -> int:
    return len(json.dumps(value).split())


class FakeOpenAI(_FakeServer):
    """`POST /v1/chat/completions`. The OpenAI SDK's base_url includes `/v1`."""

    route_path = "/v1/chat/completions"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def _check(self, request: Request, body: Any) -> Response | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not auth.removeprefix("Bearer ").strip():
            return self._error(401, "You didn't provide an API key.", None)
        if not isinstance(body, dict):
            return self._error(400, "We could not parse the JSON body of your request.", None)
        for name in ("model", "messages"):
            if name not in body:
                return self._error(400, f"Missing required parameter: '{name}'.", None, param=name)
        return None

    def _error(
        self, status: int, message: str, retry_after: str | None, param: str | None = None
    ) -> Response:
        # {"error": {message, type, param, code}}; `type`/`code` as the API uses them.
        kinds = {
            401: ("invalid_request_error", "invalid_api_key"),
            404: ("invalid_request_error", "model_not_found"),
            429: ("requests", "rate_limit_exceeded"),
        }
        default = ("server_error", None) if status >= 500 else ("invalid_request_error", None)
        error_type, code = kinds.get(status, default)
        headers = self._headers()
        if retry_after is not None:
            headers["retry-after"] = retry_after
        return JSONResponse(
            {"error": {"message": message, "type": error_type, "param": param, "code": code}},
            status_code=status,
            headers=headers,
        )

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex}", "openai-processing-ms": "12"}

    def _user_content(self, body: Any) -> str:
        return _last_user_text(body.get("messages"))

    def _complete(self, pieces: list[str], truncated: bool, model: str, body: Any) -> Any:
        prompt_tokens = _word_count(body.get("messages"))
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "length" if truncated else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(pieces),
                "total_tokens": prompt_tokens + len(pieces),
            },
            "system_fingerprint": "fp_fake",
        }

    async def _stream(
        self, pieces: list[str], truncated: bool, model: str, body: Any, behaviour: Answer
    ) -> AsyncIterator[str]:
        # `data: <chunk>` lines: a role-only first delta, content deltas, a final delta with the
        # finish_reason, a usage chunk if stream_options.include_usage asked, then `[DONE]`.
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_fake",
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for sent, piece in enumerate(pieces):
            if behaviour.error_after_chunks is not None and sent >= behaviour.error_after_chunks:
                # A failure after the 200 has gone out can only travel inside the stream.
                error = {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
                yield f"data: {json.dumps({'error': error})}\n\n"
                return
            await self._pause(behaviour.chunk_delay_s)
            yield chunk({"content": piece})
        yield chunk({}, "length" if truncated else "stop")
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt_tokens = _word_count(body.get("messages"))
            usage = {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(pieces),
                "total_tokens": prompt_tokens + len(pieces),
            }
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"


class FakeAnthropic(_FakeServer):
    """`POST /v1/messages`. The Anthropic SDK's base_url is the origin, without `/v1`."""

    route_path = "/v1/messages"

    @property
    def base_url(self) -> str:
        return self.origin

    def _check(self, request: Request, body: Any) -> Response | None:
        # The docs name `x-api-key`; the current SDK (2.x) sends the key as a Bearer token.
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not request.headers.get("x-api-key") and not bearer:
            return self._error(401, "x-api-key header is required", None)
        if not request.headers.get("anthropic-version"):
            return self._error(400, "anthropic-version: header is required", None)
        if not isinstance(body, dict):
            return self._error(400, "Request body is not valid JSON", None)
        for name in ("model", "messages", "max_tokens"):
            if name not in body:
                return self._error(400, f"{name}: Field required", None)
        return None

    def _error(self, status: int, message: str, retry_after: str | None) -> Response:
        # {"type": "error", "error": {type, message}, "request_id"}; the types per status are
        # the documented ones (529 is overloaded_error).
        kinds = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "request_too_large",
            429: "rate_limit_error",
            500: "api_error",
            529: "overloaded_error",
        }
        default = "api_error" if status >= 500 else "invalid_request_error"
        headers = self._headers()
        if retry_after is not None:
            headers["retry-after"] = retry_after
        return JSONResponse(
            {
                "type": "error",
                "error": {"type": kinds.get(status, default), "message": message},
                "request_id": headers["request-id"],
            },
            status_code=status,
            headers=headers,
        )

    def _headers(self) -> dict[str, str]:
        return {"request-id": f"req_{uuid.uuid4().hex[:24]}"}

    def _user_content(self, body: Any) -> str:
        return _last_user_text(body.get("messages"))

    def _message(self, model: str, body: Any, content: list[Any], output_tokens: int) -> Any:
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": _word_count([body.get("system"), body.get("messages")]),
                "output_tokens": output_tokens,
            },
        }

    def _complete(self, pieces: list[str], truncated: bool, model: str, body: Any) -> Any:
        message = self._message(
            model, body, [{"type": "text", "text": "".join(pieces)}], len(pieces)
        )
        message["stop_reason"] = "max_tokens" if truncated else "end_turn"
        return message

    async def _stream(
        self, pieces: list[str], truncated: bool, model: str, body: Any, behaviour: Answer
    ) -> AsyncIterator[str]:
        # Named events: message_start (the model id), content_block_start, ping, one
        # content_block_delta per piece, content_block_stop, message_delta (stop_reason and the
        # cumulative output_tokens), message_stop.
        def event(name: str, data: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n"

        yield event(
            "message_start", {"type": "message_start", "message": self._message(model, body, [], 1)}
        )
        yield event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        )
        yield event("ping", {"type": "ping"})
        for sent, piece in enumerate(pieces):
            if behaviour.error_after_chunks is not None and sent >= behaviour.error_after_chunks:
                # Documented: errors such as overloaded_error may arrive inside a 200 stream.
                error = {"type": "overloaded_error", "message": "Overloaded"}
                yield event("error", {"type": "error", "error": error})
                return
            await self._pause(behaviour.chunk_delay_s)
            yield event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        yield event("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "max_tokens" if truncated else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": len(pieces)},
            },
        )
        yield event("message_stop", {"type": "message_stop"})
