"""LoRA fine-tuning on CPU: a tiny random-weight llama model with a tiny tokenizer, both made by
the test, learns from the curated dialogues in a few steps; its adapter saves, reloads with the
same outputs, and a stopped run resumes from its last checkpoint. Nothing is downloaded."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from training.datasets import build_dataset, load_curated, write_dataset  # noqa: E402
from training.lora import (  # noqa: E402
    LoraTrainingConfig,
    encode_dialogues,
    load_adapter,
    load_base_model,
    load_tokenizer,
    main,
    mean_loss,
    train,
    with_lora,
)
from training.tiny_model import write_tiny_base_model  # noqa: E402


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [t.content for d in load_curated() for t in d.turns]
    return write_tiny_base_model(tmp_path_factory.mktemp("tiny-base"), texts)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # The short conversation records: a few hundred tokens each with the tiny tokenizer.
    dialogues = [d for d in load_curated() if "<sources>" not in d.turns[1].content]
    directory = tmp_path_factory.mktemp("data")
    write_dataset(build_dataset(curated=dialogues), directory)
    return directory


def _config(
    base_model: Path, data_dir: Path, output_dir: Path, **changes: object
) -> LoraTrainingConfig:
    config = LoraTrainingConfig(
        base_model=base_model,
        data_dir=data_dir,
        output_dir=output_dir,
        max_length=512,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        learning_rate=2e-2,
        max_steps=10,
        batch_size=4,
        logging_steps=2,
        save_steps=5,
        use_cpu=True,
    )
    return replace(config, **changes)  # type: ignore[arg-type]


def test_a_few_lora_steps_lower_the_loss_and_save_an_adapter(
    base_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = _config(base_model, data_dir, tmp_path / "run")
    tokenizer = load_tokenizer(base_model)
    from training.datasets import read_dialogues

    train_set = encode_dialogues(tokenizer, read_dialogues(data_dir / "train.jsonl"), 512)
    before = mean_loss(load_base_model(config), train_set, tokenizer.pad_token_id)

    result = train(config)

    after = mean_loss(
        load_adapter(base_model, result.adapter_dir), train_set, tokenizer.pad_token_id
    )
    assert after < before - 0.05, (before, after)
    assert result.global_step == 10
    assert result.resumed_from is None
    assert (result.adapter_dir / "adapter_config.json").is_file()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    # Only the adapter is saved, not a copy of the base model.
    assert not (result.adapter_dir / "model.safetensors").exists()
    assert result.eval_loss is not None and result.perplexity is not None
    card = json.loads((data_dir / "data_card.json").read_text(encoding="utf-8"))
    assert result.dataset_sha256 == card["sha256"]["dataset"]

    progress = [
        json.loads(line) for line in (config.output_dir / "progress.jsonl").read_text().splitlines()
    ]
    steps = [p for p in progress if "loss" in p]
    assert [p["step"] for p in steps] == [1, 2, 4, 6, 8, 10]
    assert all(p["tokens_per_s"] > 0 and p["max_steps"] == 10 for p in steps)
    assert steps[-1]["loss"] < steps[0]["loss"]
    metrics = json.loads((config.output_dir / "metrics.json").read_text())
    assert metrics["result"]["global_step"] == 10
    assert metrics["config"]["base_model"] == str(base_model)
    assert metrics["result"]["tokens_per_s"] > 0


def test_a_saved_adapter_reloads_with_identical_outputs(
    base_model: Path, data_dir: Path, tmp_path: Path
) -> None:
    config = _config(base_model, data_dir, tmp_path / "run")
    torch.manual_seed(0)
    model = with_lora(load_base_model(config), config)
    # A few plain optimizer steps so that the adapter is not its zero initialisation.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.tensor([[5, 17, 42, 99, 7, 3, 120, 64]])
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        base_logits = load_base_model(config)(input_ids=ids).logits
    model.save_pretrained(str(tmp_path / "adapter"))

    reloaded = load_adapter(base_model, tmp_path / "adapter").eval()
    with torch.no_grad():
        actual = reloaded(input_ids=ids).logits

    assert torch.equal(actual, expected)
    assert not torch.allclose(base_logits, expected)  # the adapter does change the outputs


def test_a_stopped_run_resumes_from_its_last_checkpoint(
    base_model: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "run"
    first = train(_config(base_model, data_dir, output, max_steps=4, save_steps=4))
    assert first.global_step == 4
    assert (output / "checkpoint-4").is_dir()

    # Started again (from the command line) with a longer schedule: it goes on from step 4.
    code = main(
        [
            "--base-model", str(base_model),
            "--data", str(data_dir),
            "--output", str(output),
            "--max-steps", "8",
            "--save-steps", "4",
            "--logging-steps", "2",
            "--max-length", "512",
            "--lora-r", "8",
            "--lora-alpha", "16",
            "--batch-size", "4",
            "--learning-rate", "0.02",
            "--use-cpu",
        ]
    )  # fmt: skip

    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["resumed_from"] == "checkpoint-4"
    assert result["global_step"] == 8
    steps = [
        json.loads(line)["step"]
        for line in (output / "progress.jsonl").read_text().splitlines()
        if "loss" in json.loads(line)
    ]
    assert steps == [1, 2, 4, 6, 8]  # no step trained twice after the resume
    assert (output / "checkpoint-8").is_dir()
