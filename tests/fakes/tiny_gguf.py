"""A tiny llama-architecture GGUF model (and a LoRA adapter for it), written from random weights.

Enough of a model for llama.cpp to load it, tokenize a prompt and generate, so the llama.cpp
provider can be tested for real without downloading anything: 2 layers, 64-wide embeddings,
4 heads, a 128-wide feed-forward and a small SentencePiece-style ("llama") vocabulary of
<unk>/<s>/</s>, the 256 byte-fallback tokens <0x00>..<0xFF> and a few hundred word pieces.
The output is gibberish, but deterministic: the generator is seeded, so each call writes the
same bytes.

Conventions llama.cpp insists on (see its src/models/llama.cpp, src/llama-vocab.cpp and
src/llama-adapter.cpp):

* A ggml tensor's shape is the numpy shape reversed: `blk.0.attn_q.weight` is `{n_embd_in,
  n_embd_out}` to ggml, so (n_out, n_in) here. `GGUFWriter.add_tensor` reverses it.
* Required keys: `general.architecture`, `llama.context_length`, `llama.embedding_length`,
  `llama.block_count`, `llama.feed_forward_length`, `llama.attention.head_count`,
  `llama.attention.layer_norm_rms_epsilon`, `tokenizer.ggml.model` and `tokenizer.ggml.tokens`
  (scores and token types are optional but must cover every token when present; tokens must be
  unique).
* No `tokenizer.chat_template`: the provider has to fall back to an explicit chat format.
* A LoRA adapter is its own GGUF with `general.type = "adapter"`, the base model's
  `general.architecture`, `adapter.type = "lora"` and a float32 `adapter.lora.alpha`; for each
  adapted base tensor W ({n_in, n_out} to ggml) it holds `<name>.lora_a` ({n_in, rank}, numpy
  (rank, n_in)) and `<name>.lora_b` ({rank, n_out}, numpy (n_out, rank)), as PEFT's lora_A/lora_B.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

ARCH = "llama"
N_LAYER = 2
N_EMBD = 64
N_HEAD = 4
N_HEAD_KV = 4
N_FF = 128
N_CTX_TRAIN = 8192
RMS_EPS = 1e-5
ROPE_BASE = 10000.0

UNK, BOS, EOS = 0, 1, 2
FIRST_BYTE = 3  # <0x00> .. <0xFF> are ids 3..258

LORA_RANK = 4
LORA_ALPHA = 8.0
LORA_TARGETS = ("attn_q", "attn_v", "ffn_down")

_SPACE = "\u2581"  # SentencePiece's "▁": a word's leading space
_WORDS_TEXT = (
    "the of and to in is for on with as at by from be this that are or it an was your you we "
    "can will not if all has have more about which their when there please call clinic doctor "
    "nurse patient appointment hours open close monday tuesday wednesday thursday friday "
    "saturday sunday morning afternoon evening today tomorrow week day time visit bring card "
    "insurance test result flu covid vaccine fever pain help emergency number phone book cancel "
    "change form address parking floor room wait minutes before after need should may must "
    "care health medicine dose take food water rest sleep child adult"
)


def _vocab() -> tuple[list[str], list[float], list[int]]:
    tokens = ["<unk>", "<s>", "</s>"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    scores = [0.0, 0.0, 0.0]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        types.append(gguf.TokenType.BYTE)
        scores.append(0.0)

    pieces: list[str] = [_SPACE]
    pieces += [chr(c) for c in range(33, 127)]  # printable ASCII, one character each
    pieces += [_SPACE + chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [_SPACE + chr(c) for c in range(ord("A"), ord("Z") + 1)]
    for word in _WORDS_TEXT.split():
        # every prefix too, so SentencePiece's pairwise merges can reach the whole word
        pieces += [_SPACE + word[:end] for end in range(2, len(word) + 1)]
    seen = set(tokens)
    for piece in pieces:
        if piece not in seen:
            seen.add(piece)
            tokens.append(piece)
            types.append(gguf.TokenType.NORMAL)
            # longer pieces win merges: higher score
            scores.append(float(len(piece)) - len(tokens) * 1e-3)
    return tokens, scores, [int(t) for t in types]


def _normal(
    rng: np.random.Generator, shape: tuple[int, ...], std: float
) -> npt.NDArray[np.float32]:
    return (rng.standard_normal(shape) * std).astype(np.float32)


def write_tiny_llama(path: str | Path, *, seed: int = 1234) -> Path:
    """Write the tiny model to `path` (a .gguf file) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, scores, types = _vocab()
    n_vocab = len(tokens)
    head_dim = N_EMBD // N_HEAD

    writer = gguf.GGUFWriter(str(path), ARCH)  # writes general.architecture itself
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name("tiny-random-llama")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(ROPE_BASE)

    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(UNK)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)

    writer.add_tensor("token_embd.weight", _normal(rng, (n_vocab, N_EMBD), 1.0))
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, dtype=np.float32))
    output = _normal(rng, (n_vocab, N_EMBD), 0.3)
    # Random logits would now and then pick </s> (an empty answer) or a lone byte token (half a
    # UTF-8 character, which decodes to nothing); zero logits keep them out of the top choices,
    # so every generated token is a printable piece.
    output[: FIRST_BYTE + 256] = 0.0
    writer.add_tensor("output.weight", output)

    kv_dim = N_HEAD_KV * head_dim
    for i in range(N_LAYER):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", _normal(rng, (N_EMBD, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _normal(rng, (kv_dim, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.attn_v.weight", _normal(rng, (kv_dim, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.attn_output.weight", _normal(rng, (N_EMBD, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(N_EMBD, dtype=np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", _normal(rng, (N_FF, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", _normal(rng, (N_FF, N_EMBD), 0.1))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", _normal(rng, (N_EMBD, N_FF), 0.1))

    _write(writer)
    return path


def write_tiny_lora(path: str | Path, base: str | Path, *, seed: int = 4321) -> Path:
    """Write a LoRA adapter for the model at `base` (its attention q/v and ffn_down weights) to
    `path` and return the path. Unlike a freshly initialised PEFT adapter (B = 0) this one
    changes the model's output, so a test can tell it is applied."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    reader = gguf.GGUFReader(str(base))
    arch_field = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    if arch_field is None or arch_field.contents() != ARCH:
        raise ValueError(f"{base} is not a {ARCH} model")

    writer = gguf.GGUFWriter(str(path), ARCH)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name("tiny-random-llama-lora")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, LORA_ALPHA)

    for tensor in reader.tensors:
        name = tensor.name
        if not name.startswith("blk.") or name.split(".")[2] not in LORA_TARGETS:
            continue
        n_in, n_out = (int(d) for d in tensor.shape)  # ggml order: {n_in, n_out}
        writer.add_tensor(f"{name}.lora_a", _normal(rng, (LORA_RANK, n_in), 0.5))
        writer.add_tensor(f"{name}.lora_b", _normal(rng, (n_out, LORA_RANK), 0.5))

    _write(writer)
    return path


def _write(writer: gguf.GGUFWriter) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
