"""From a fine-tuned adapter to llama.cpp: the tiny base model and a LoRA adapter trained on it
are written as GGUF, llama.cpp computes the same logits as transformers and PEFT do, and the
llama.cpp provider of the LLM router serves the base model with the adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
llama_cpp = pytest.importorskip("llama_cpp")

from models.base import Prompt, Source  # noqa: E402
from models.llamacpp_provider import LlamaCppProvider, _apply_lora  # noqa: E402
from training.datasets import load_curated  # noqa: E402
from training.gguf_export import export_adapter_gguf, export_base_gguf  # noqa: E402
from training.lora import LoraTrainingConfig, load_adapter, load_base_model, with_lora  # noqa: E402
from training.tiny_model import write_tiny_base_model  # noqa: E402

PROMPT_TEXT = "<|im_start|>user\nWhen does the clinic open?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny base model and an adapter moved off its zero start by a few optimizer steps."""
    root = tmp_path_factory.mktemp("gguf-export")
    texts = [t.content for d in load_curated() for t in d.turns]
    base = write_tiny_base_model(root / "base", texts)
    config = LoraTrainingConfig(
        base_model=base,
        data_dir=root,
        output_dir=root,
        lora_r=4,
        lora_alpha=8,
        lora_dropout=0.0,
    )
    torch.manual_seed(0)
    model = with_lora(load_base_model(config), config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    ids = torch.tensor([list(range(10, 60))])
    for _ in range(4):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(str(root / "adapter"))
    return base, root / "adapter"


def _prompt_ids(base: Path) -> list[int]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    return list(tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"])


def _llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> Any:
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=256, logits_all=True, n_threads=2, verbose=False
    )
    try:
        if lora is not None:
            _apply_lora(llm, lora)
        assert llm.tokenize(PROMPT_TEXT.encode(), add_bos=False, special=True) == ids
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)])
    finally:
        llm.close()


def test_llama_cpp_computes_what_transformers_and_peft_compute(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    base, adapter = trained
    base_gguf = export_base_gguf(base, tmp_path / "base.gguf")
    lora_gguf = export_adapter_gguf(adapter, base, tmp_path / "lora.gguf")
    ids = _prompt_ids(base)
    with torch.no_grad():
        expected_base = (
            load_base_model(LoraTrainingConfig(base_model=base, data_dir=base, output_dir=base))(
                input_ids=torch.tensor([ids])
            )
            .logits[0]
            .numpy()
        )
        expected_tuned = (
            load_adapter(base, adapter).eval()(input_ids=torch.tensor([ids])).logits[0].numpy()
        )

    actual_base = _llama_logits(base_gguf, ids)
    actual_tuned = _llama_logits(base_gguf, ids, lora_gguf)

    assert np.abs(actual_base - expected_base).max() < 1e-3
    assert np.abs(actual_tuned - expected_tuned).max() < 1e-3
    # The adapter matters, so the comparison above says something about its conversion.
    assert np.abs(expected_tuned - expected_base).max() > 0.05


async def test_the_router_provider_serves_the_base_model_with_the_adapter(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    base, adapter = trained
    base_gguf = export_base_gguf(base, tmp_path / "clinic-base.gguf")
    lora_gguf = export_adapter_gguf(adapter, base, tmp_path / "clinic-lora.gguf")
    provider = LlamaCppProvider(
        model_path=str(base_gguf), lora_path=str(lora_gguf), n_ctx=512, n_threads=2
    )
    prompt = Prompt(
        system="You are the clinic's assistant.",
        question="When does the clinic open?",
        sources=(Source(1, "Opening hours", "kb/hours.md", "Weekdays 8:00-18:00."),),
        max_tokens=8,
        temperature=0.0,
    )

    answer = await provider.complete(prompt, 60.0)

    assert isinstance(answer, str)
    assert provider.loaded
    assert provider.version.startswith("clinic-base.gguf@")
    assert "+clinic-lora.gguf@" in provider.version


def test_adapters_llama_cpp_cannot_run_plainly_are_refused(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    base, adapter = trained
    changed = tmp_path / "adapter"
    changed.mkdir()
    (changed / "adapter_model.safetensors").write_bytes(
        (adapter / "adapter_model.safetensors").read_bytes()
    )
    config = json.loads((adapter / "adapter_config.json").read_text())
    (changed / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ValueError, match="DoRA"):
        export_adapter_gguf(changed, base, tmp_path / "out.gguf")

    not_llama = tmp_path / "not-llama"
    not_llama.mkdir()
    model_config = json.loads((base / "config.json").read_text())
    (not_llama / "config.json").write_text(json.dumps({**model_config, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match="llama models only"):
        export_adapter_gguf(adapter, not_llama, tmp_path / "out.gguf")
