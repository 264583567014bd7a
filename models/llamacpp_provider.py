"""A local GGUF model through llama.cpp (the llama-cpp-python bindings), with an optional LoRA
adapter: the provider that keeps patient text on the clinic's own machine (`cloud = False`).

llama.cpp is synchronous and its contexts are not thread-safe, so each attempt runs in a worker
thread that holds the model's lock for the whole generation (one generation at a time per model)
and hands text pieces to the event loop through an asyncio queue. The model loads lazily, on the
first attempt (or `load()`), once; loads are serialised process-wide (see `_LOAD_LOCK`): while
one runs, llama-cpp-python sends the whole process's stdout and stderr to /dev/null.

`timeout_s` bounds the whole attempt as the caller sees it: loading, waiting for the model's
lock, reading the prompt and generating. When it runs out the attempt raises
`ProviderError(kind="timeout")` at once and tells the worker to stop; llama.cpp cannot be
interrupted inside a call, so the worker stops after the token it is computing (a load or a long
prompt's evaluation runs to its end first; a load that finishes late is kept for the next
attempt). The same happens when the consumer stops reading early.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from models.base import ErrorKind, Prompt, ProviderError

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_types import (
        ChatCompletionRequestMessage,
        ChatCompletionStreamResponseDelta,
        CreateChatCompletionStreamResponse,
    )

NAME = "llamacpp"
# Used when the GGUF file carries no chat template (llama-cpp-python would guess "llama-2").
FALLBACK_CHAT_FORMAT = "chatml"
_HASH_CHARS = 12
_LOCK_POLL_S = 0.05
# llama.cpp rounds the context up to a multiple of 256 tokens; llama-cpp-python sizes its token
# buffer by the number asked for, and fails ("could not broadcast input array") once a prompt
# and answer outgrow that number. Asking for a multiple of 256 keeps the two equal.
_CTX_STEP = 256
# One load at a time in the whole process. With verbose=False llama-cpp-python silences llama.cpp
# by pointing the process's stdout/stderr (fds 1 and 2, and sys.stdout/stderr) at /dev/null while
# it loads, and puts back what it saved: two overlapping loads could leave them silenced for good.
_LOAD_LOCK = threading.Lock()


@dataclass(frozen=True)
class _Done:
    pass


_DONE = _Done()
_Item = str | ProviderError | _Done


class LlamaCppProvider:
    name = NAME
    cloud = False

    def __init__(
        self,
        *,
        model_path: str,
        lora_path: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int | None = None,
        chat_format: str | None = None,
    ) -> None:
        """`n_ctx` is rounded up to a multiple of 256, as llama.cpp does. `n_gpu_layers=None`
        offloads every layer when this llama.cpp build can use a GPU (CUDA, Metal...) and none
        otherwise; `chat_format=None` uses the GGUF file's own chat template, or
        `FALLBACK_CHAT_FORMAT` when it has none."""
        self.model_path = Path(model_path)
        self.lora_path = Path(lora_path) if lora_path else None
        self.model = self.model_path.name
        self.n_ctx = max(_CTX_STEP, -(-n_ctx // _CTX_STEP) * _CTX_STEP)  # see _CTX_STEP
        self.n_threads = n_threads
        self.n_gpu_layers = n_gpu_layers
        self.chat_format = chat_format
        self._llm: Llama | None = None
        self._generate_lock = threading.Lock()  # one generation at a time: contexts are not shared
        self._version: str | None = None

    @property
    def version(self) -> str:
        """`<model file>@<sha256[:12]>`, plus `+<adapter file>@<sha256[:12]>` with a LoRA adapter,
        e.g. "tiny.gguf@1a2b3c4d5e6f+tiny-lora.gguf@0f1e2d3c4b5a". Hashed once, when the model
        loads (or on first use of this property); "unavailable" stands in for a file that cannot
        be read, and is not cached."""
        return self._version or self._compute_version()

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        """Load the model now (blocking; e.g. at start-up from a thread) instead of on the first
        attempt. Raises ProviderError(kind="unavailable") when it cannot."""
        self._ensure_loaded()

    async def stream(self, prompt: Prompt, *, timeout_s: float) -> AsyncGenerator[str, None]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()

        def emit(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                stop.set()

        worker = threading.Thread(
            target=self._work,
            args=(prompt, emit, stop, time.monotonic() + timeout_s),
            name=f"llamacpp:{self.model}",
            daemon=True,  # a load or prompt evaluation cannot be interrupted: never wait for it
        )
        worker.start()
        try:
            while True:
                # The deadline wraps the wait only, never the `yield` (see the OpenAI provider).
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await queue.get()
                except TimeoutError:
                    raise ProviderError(
                        NAME, "timeout", f"no complete answer within {timeout_s:g} s"
                    ) from None
                if isinstance(item, _Done):
                    return
                if isinstance(item, ProviderError):
                    raise item
                yield item
        finally:
            stop.set()  # timeout, error, or the consumer stopped reading: end the generation

    async def complete(self, prompt: Prompt, timeout_s: float) -> str:
        """The whole answer at once, for callers that do not want streaming."""
        return "".join([piece async for piece in self.stream(prompt, timeout_s=timeout_s)])

    # -- the worker thread -------------------------------------------------------------------

    def _work(
        self, prompt: Prompt, emit: Callable[[_Item], None], stop: threading.Event, deadline: float
    ) -> None:
        try:
            llm = self._ensure_loaded()
            with self._generation_slot(stop, deadline) as acquired:
                if not acquired:
                    if not stop.is_set():
                        emit(ProviderError(NAME, "timeout", "the model stayed busy"))
                    return
                for piece in self._generate(llm, prompt, stop):
                    emit(piece)
            emit(_DONE)
        except ProviderError as exc:
            emit(exc)
        except ValueError as exc:
            # llama-cpp-python's "Requested tokens (N) exceed context window of M"
            kind: ErrorKind = "bad_request" if "context window" in str(exc) else "server"
            emit(ProviderError(NAME, kind, str(exc)))
        except Exception as exc:  # llama_decode failures and the like: this attempt failed
            emit(ProviderError(NAME, "server", f"{type(exc).__name__}: {exc}"))

    @contextlib.contextmanager
    def _generation_slot(self, stop: threading.Event, deadline: float) -> Iterator[bool]:
        """Hold the model's generation lock; yields False when the deadline passes (or the
        attempt is abandoned) before the lock is free."""
        while not stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if self._generate_lock.acquire(timeout=min(remaining, _LOCK_POLL_S)):
                try:
                    yield True
                finally:
                    self._generate_lock.release()
                return
        yield False

    def _generate(self, llm: Llama, prompt: Prompt, stop: threading.Event) -> Iterator[str]:
        messages: list[ChatCompletionRequestMessage] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user_content()},
        ]
        chunks = cast(
            "Iterator[CreateChatCompletionStreamResponse]",
            llm.create_chat_completion(
                messages=messages,
                stream=True,
                max_tokens=prompt.max_tokens,
                temperature=prompt.temperature,
            ),
        )
        try:
            for chunk in chunks:
                # Checked once per token: the earliest point llama.cpp can be stopped.
                if stop.is_set():
                    return
                for choice in chunk["choices"]:
                    # The first chunk carries only the role, the last only the finish reason.
                    delta = cast("ChatCompletionStreamResponseDelta", choice["delta"])
                    text = delta.get("content")
                    if text:
                        yield text
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # ends llama-cpp-python's generator, and with it the decoding

    def _ensure_loaded(self) -> Llama:
        llm = self._llm
        if llm is not None:
            return llm
        with _LOAD_LOCK:
            if self._llm is None:
                self._llm = self._load()
            return self._llm

    def _load(self) -> Llama:
        if not self.model_path.is_file():
            raise ProviderError(
                NAME,
                "unavailable",
                f"model file {self.model_path} not found: configure model_path with the path "
                "of a GGUF model file",
            )
        if self.lora_path is not None and not self.lora_path.is_file():
            raise ProviderError(
                NAME,
                "unavailable",
                f"LoRA adapter {self.lora_path} not found: configure lora_path with the path of "
                "a GGUF LoRA adapter for this model, or leave it unset",
            )
        try:
            import llama_cpp
        except ImportError as exc:
            raise ProviderError(
                NAME, "unavailable", f"llama-cpp-python is not installed ({exc})"
            ) from exc

        n_gpu_layers = self.n_gpu_layers
        if n_gpu_layers is None:
            n_gpu_layers = -1 if llama_cpp.llama_supports_gpu_offload() else 0
        try:
            llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_ctx=self.n_ctx,
                n_threads=self.n_threads,
                n_gpu_layers=n_gpu_layers,
                chat_format=self.chat_format,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            # "Failed to load model from file": corrupt, truncated, not GGUF, an architecture
            # this llama.cpp does not know, or no memory for the weights or the context.
            raise ProviderError(
                NAME,
                "unavailable",
                f"llama.cpp could not load {self.model_path} ({exc}): configure model_path with "
                "a valid GGUF model file",
            ) from exc
        if self.lora_path is not None:
            try:
                _apply_lora(llm, self.lora_path)
            except Exception:
                llm.close()
                raise
        if self.chat_format is None and "tokenizer.chat_template" not in llm.metadata:
            llm.chat_format = FALLBACK_CHAT_FORMAT
        self._compute_version()  # hash the files now, in this worker thread, not on the loop
        return llm

    def _compute_version(self) -> str:
        parts = [f"{self.model_path.name}@{_short_sha256(self.model_path)}"]
        if self.lora_path is not None:
            parts.append(f"{self.lora_path.name}@{_short_sha256(self.lora_path)}")
        version = "+".join(parts)
        if "@unavailable" not in version:
            self._version = version
        return version


def _apply_lora(llm: Llama, path: Path) -> None:
    """Load a GGUF LoRA adapter into the model and switch it on (scale 1) in its context.

    Done through llama.cpp's C API rather than `Llama(lora_path=...)`: llama-cpp-python 0.3.x
    tests the adapter pointer with `is None`, but ctypes returns a NULL *pointer object* for a
    failed load, so a bad adapter passes unnoticed and crashes the process at the first decode;
    its `lora_path` also turns mmap off, and later releases drop the argument. The adapter is
    freed with the model.
    """
    import llama_cpp

    adapter = llama_cpp.llama_adapter_lora_init(llm.model, str(path).encode())
    if not adapter:  # NULL (a falsy pointer object): llama.cpp logged why to stderr
        raise ProviderError(
            NAME,
            "unavailable",
            f"llama.cpp could not load the LoRA adapter {path} (not a GGUF LoRA adapter, or not "
            "one made for this model): configure lora_path with a GGUF LoRA adapter for the "
            "model at model_path, or leave it unset",
        )
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(adapter)
    scales = (ctypes.c_float * 1)(1.0)
    if llama_cpp.llama_set_adapters_lora(llm.ctx, adapters, 1, scales) != 0:
        raise ProviderError(
            NAME, "unavailable", f"llama.cpp could not apply the LoRA adapter {path}"
        )


def _short_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as file:
            while block := file.read(1 << 20):
                digest.update(block)
    except OSError:
        return "unavailable"
    return digest.hexdigest()[:_HASH_CHARS]
