"""A trained LoRA adapter as a GGUF LoRA file for llama.cpp (what `LLAMA_LORA_PATH` loads), and,
for llama-architecture models made by training/tiny_model.py, the base model as GGUF too.

A production base model is converted once with llama.cpp's own `convert_hf_to_gguf.py` (and
quantized with `llama-quantize`); only the adapter changes with each fine-tuning run, and this
module writes it with the `gguf` package, the way llama.cpp's `convert_lora_to_gguf.py` does for
llama models:

* PEFT's `...layers.{i}.self_attn.q_proj.lora_A.weight` becomes `blk.{i}.attn_q.weight.lora_a`
  (numpy shape (rank, n_in)) and `lora_B` becomes `.lora_b` ((n_out, rank));
* `adapter.lora.alpha` carries PEFT's `lora_alpha` (llama.cpp scales by alpha / rank, as PEFT);
* llama.cpp stores the query and key projections with their rows permuted for its rotary
  embedding, so `lora_b` of q_proj and k_proj (whose rows are the projection's outputs) is
  permuted the same way; `lora_a` is not.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ARCH = "llama"
# Hugging Face llama module names -> llama.cpp tensor names (inside blk.{i}).
_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_PEFT_NAME = re.compile(
    r"^(?:base_model\.model\.)?model\.layers\.(?P<layer>\d+)\.(?P<module>[a-z_]+\.[a-z_]+)"
    r"\.lora_(?P<part>[AB])(?:\.default)?\.weight$"
)

Array = npt.NDArray[np.float32]


def _permute(weights: Array, n_head: int) -> Array:
    """llama.cpp's row order for q/k projections (convert_hf_to_gguf.py's LlamaModel.permute)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _config(model_dir: Path) -> dict[str, Any]:
    config: dict[str, Any] = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != ARCH:
        raise ValueError(
            f"{model_dir} is a {config.get('model_type')!r} model; this converter handles llama "
            "models only (use llama.cpp's convert_lora_to_gguf.py for others)"
        )
    return config


def _heads(config: dict[str, Any]) -> tuple[int, int]:
    n_head = int(config["num_attention_heads"])
    return n_head, int(config.get("num_key_value_heads") or n_head)


def export_adapter_gguf(adapter_dir: Path, base_model_dir: Path, out_path: Path) -> Path:
    """Write the PEFT adapter in `adapter_dir` (trained on `base_model_dir`) as a GGUF LoRA."""
    import gguf
    from safetensors.numpy import load_file

    config = _config(base_model_dir)
    n_head, n_head_kv = _heads(config)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if adapter_config.get("peft_type") != "LORA":
        raise ValueError(f"{adapter_dir} holds a {adapter_config.get('peft_type')} adapter")
    if adapter_config.get("use_dora") or adapter_config.get("use_rslora"):
        raise ValueError("DoRA and rsLoRA adapters cannot be run by llama.cpp as plain LoRA")
    if adapter_config.get("modules_to_save"):
        raise ValueError("an adapter that also trains whole modules cannot be a GGUF LoRA")
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), ARCH)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(f"{base_model_dir.name}-lora")
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(adapter_config["lora_alpha"]))
    written = 0
    for name in sorted(tensors, key=_natural):
        match = _PEFT_NAME.match(name)
        if match is None or match["module"] not in _MODULES:
            raise ValueError(f"{adapter_dir}: cannot place adapter tensor {name} in llama.cpp")
        weights = tensors[name].astype(np.float32)
        module = match["module"]
        if match["part"] == "B" and module == "self_attn.q_proj":
            weights = _permute(weights, n_head)
        elif match["part"] == "B" and module == "self_attn.k_proj":
            weights = _permute(weights, n_head_kv)
        target = f"blk.{match['layer']}.{_MODULES[module]}.weight"
        writer.add_tensor(f"{target}.lora_{match['part'].lower()}", weights)
        written += 1
    if not written:
        raise ValueError(f"{adapter_dir}: no LoRA tensors found")
    _finish(writer)
    return out_path


def export_base_gguf(model_dir: Path, out_path: Path) -> Path:
    """Write a small llama model with a byte-level BPE tokenizer (training/tiny_model.py) as an
    f32 GGUF file with its chat template: the base that tests and benchmarks serve an adapter
    on. Real base models go through llama.cpp's convert_hf_to_gguf.py instead."""
    import gguf
    from safetensors.numpy import load_file

    config = _config(model_dir)
    n_head, n_head_kv = _heads(config)
    hidden = int(config["hidden_size"])
    weights = load_file(str(model_dir / "model.safetensors"))
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    if tokenizer["model"]["type"] != "BPE":
        raise ValueError(f"{model_dir}: only byte-level BPE tokenizers are handled here")

    vocab: dict[str, int] = dict(tokenizer["model"]["vocab"])
    for added in tokenizer.get("added_tokens", []):
        vocab[added["content"]] = added["id"]
    special = {added["content"] for added in tokenizer.get("added_tokens", [])}
    n_vocab = int(config["vocab_size"])
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [int(gguf.TokenType.UNUSED)] * n_vocab
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = int(gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]

    def token_id(role: str) -> int:
        return vocab[str(tokenizer_config[role])]

    rope = config.get("rope_parameters") or {}
    rope_theta = float(rope.get("rope_theta", config.get("rope_theta", 10000.0)))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out_path), ARCH)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(model_dir.name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_dimension_count(hidden // n_head)
    writer.add_rope_freq_base(rope_theta)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(token_id("bos_token"))
    writer.add_eos_token_id(token_id("eos_token"))
    writer.add_pad_token_id(token_id("pad_token"))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if template := tokenizer_config.get("chat_template") or _chat_template_file(model_dir):
        writer.add_chat_template(template)

    def tensor(name: str) -> Array:
        return weights[name].astype(np.float32)

    writer.add_tensor("token_embd.weight", tensor("model.embed_tokens.weight"))
    writer.add_tensor("output_norm.weight", tensor("model.norm.weight"))
    lm_head = "lm_head.weight" if "lm_head.weight" in weights else "model.embed_tokens.weight"
    writer.add_tensor("output.weight", tensor(lm_head))
    for i in range(int(config["num_hidden_layers"])):
        prefix = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_norm.weight", tensor(prefix + "input_layernorm.weight"))
        writer.add_tensor(
            f"blk.{i}.ffn_norm.weight", tensor(prefix + "post_attention_layernorm.weight")
        )
        for module, short in _MODULES.items():
            matrix = tensor(f"{prefix}{module}.weight")
            if module == "self_attn.q_proj":
                matrix = _permute(matrix, n_head)
            elif module == "self_attn.k_proj":
                matrix = _permute(matrix, n_head_kv)
            writer.add_tensor(f"blk.{i}.{short}.weight", matrix)
    _finish(writer)
    return out_path


def _chat_template_file(model_dir: Path) -> str | None:
    path = model_dir / "chat_template.jinja"
    return path.read_text(encoding="utf-8") if path.exists() else None


def _natural(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def _finish(writer: Any) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
