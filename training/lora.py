"""LoRA (and QLoRA) fine-tuning of a local base model on a dataset written by training/datasets.py.

The Hugging Face `Trainer` runs the loop: it saves a checkpoint every `save_steps` (adapter,
optimizer, scheduler, RNG state) and a run started again with the same `output_dir` resumes from
the newest one. DeepSpeed is used when `deepspeed` names a config (training/deepspeed/), under
the launcher in training/launch.py. Progress goes to the log and to `progress.jsonl` (step, loss,
learning rate, tokens per second); the run ends with the adapter in `<output_dir>/adapter` and
`metrics.json` (losses, perplexity, throughput, peak memory, the dataset's hash).

    python -m training.lora --base-model PATH --data DIR --output DIR [--max-steps N] ...
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.datasets import IGNORE_INDEX, Dialogue, EncodedDialogue, encode_all, read_dialogues

if TYPE_CHECKING:
    import torch
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

ADAPTER_DIR = "adapter"
# The attention and MLP projections of llama-family models.
LLAMA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class LoraTrainingConfig:
    base_model: Path  # a local Hugging Face model directory; nothing is downloaded
    data_dir: Path  # train.jsonl, validation.jsonl, data_card.json (training/datasets.py)
    output_dir: Path
    max_length: int = 1024
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = LLAMA_TARGET_MODULES
    learning_rate: float = 2e-4
    epochs: float = 3.0
    max_steps: int = -1  # overrides epochs when positive
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    logging_steps: int = 10
    save_steps: int = 100
    save_total_limit: int = 3
    seed: int = 0
    bf16: bool = False
    gradient_checkpointing: bool = False
    # "4bit": QLoRA, the base model loaded in NF4 through bitsandbytes (a CUDA GPU only).
    quantization: Literal["none", "4bit"] = "none"
    deepspeed: Path | None = None  # a ZeRO config from training/deepspeed/
    resume: bool = True  # from the newest checkpoint in output_dir, when there is one
    use_cpu: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # passed to TrainingArguments as is

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("base_model", "data_dir", "output_dir", "deepspeed"):
            values[key] = str(values[key]) if values[key] is not None else None
        values["target_modules"] = list(self.target_modules)
        return values


@dataclass(frozen=True)
class TrainingResult:
    adapter_dir: Path
    global_step: int
    resumed_from: str | None
    train_loss: float | None
    eval_loss: float | None
    perplexity: float | None
    tokens_per_s: float
    seconds: float
    peak_memory_gb: float
    dataset_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        values["adapter_dir"] = str(self.adapter_dir)
        return values


def load_tokenizer(base_model: Path) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model, local_files_only=True)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"the tokenizer of {base_model} has no chat template: use an instruction-tuned base "
            "model, or set tokenizer.chat_template in its tokenizer_config.json"
        )
    return tokenizer


def load_base_model(config: LoraTrainingConfig) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"local_files_only": True}
    if config.bf16:
        kwargs["dtype"] = torch.bfloat16
    if config.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    model = AutoModelForCausalLM.from_pretrained(config.base_model, **kwargs)
    if config.quantization == "4bit":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=config.gradient_checkpointing
        )
    return model


def with_lora(model: PreTrainedModel, config: LoraTrainingConfig) -> PeftModel:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
    )
    peft_model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        peft_model.enable_input_require_grads()
    return peft_model


class EncodedDataset:
    """Encoded dialogues as the Trainer reads them (a map-style dataset)."""

    def __init__(self, examples: Sequence[EncodedDialogue]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        example = self.examples[index]
        return {"input_ids": example.input_ids, "labels": example.labels}


class PadCollator:
    """Right-pads a batch: the pad token for inputs, IGNORE_INDEX for labels."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        import torch

        width = max(len(item["input_ids"]) for item in batch)
        input_ids, labels, mask = [], [], []
        for item in batch:
            pad = width - len(item["input_ids"])
            input_ids.append(item["input_ids"] + [self.pad_token_id] * pad)
            labels.append(item["labels"] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(item["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


def encode_dialogues(
    tokenizer: PreTrainedTokenizerBase, dialogues: Sequence[Dialogue], max_length: int
) -> EncodedDataset:
    return EncodedDataset(list(encode_all(tokenizer, dialogues, max_length=max_length)))


def mean_loss(
    model: torch.nn.Module, dataset: EncodedDataset, pad_token_id: int, batch_size: int = 8
) -> float:
    """The mean token loss of `model` over the trained tokens of `dataset` (no gradients)."""
    import torch

    collate = PadCollator(pad_token_id)
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = collate(
                [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            )
            batch = {key: value.to(device) for key, value in batch.items()}
            logits = model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).logits
            shifted = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2).float(),
                shifted,
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
            total += float(losses)
            count += int((shifted != IGNORE_INDEX).sum())
    model.train(was_training)
    return total / max(count, 1)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-<step>` folder the Trainer left in `output_dir`, if any."""
    from transformers.trainer_utils import get_last_checkpoint

    if not output_dir.is_dir():
        return None
    found = get_last_checkpoint(str(output_dir))  # type: ignore[no-untyped-call]
    return Path(found) if found else None


def _progress_callback(log_path: Path, started: float) -> Any:
    from transformers import TrainerCallback

    class ProgressLog(TrainerCallback):
        """Loss, learning rate and throughput at every logging step, to the log and a file."""

        def __init__(self) -> None:
            self.tokens_at_start: int | None = None
            self.time_at_start = started

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.tokens_at_start = int(state.num_input_tokens_seen or 0)
            self.time_at_start = time.monotonic()

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            elapsed = max(time.monotonic() - self.time_at_start, 1e-9)
            tokens = int(state.num_input_tokens_seen or 0) - (self.tokens_at_start or 0)
            record = {
                "step": state.global_step,
                "max_steps": state.max_steps,
                "epoch": round(float(state.epoch or 0.0), 4),
                **{k: v for k, v in logs.items() if isinstance(v, int | float)},
                "tokens_per_s": round(tokens / elapsed, 2),
            }
            log.info("training progress", extra={"progress": record})
            with log_path.open("a", encoding="utf-8") as file:
                file.write(json.dumps(record, sort_keys=True) + "\n")

    return ProgressLog()


def train(config: LoraTrainingConfig) -> TrainingResult:
    """Fine-tune, evaluate on the validation split and save the adapter; see the module doc."""
    import torch
    from transformers import Trainer, TrainingArguments

    started = time.monotonic()
    config.output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(config.base_model)
    train_set = encode_dialogues(
        tokenizer, read_dialogues(config.data_dir / "train.jsonl"), config.max_length
    )
    validation_path = config.data_dir / "validation.jsonl"
    validation_set = encode_dialogues(
        tokenizer,
        read_dialogues(validation_path) if validation_path.exists() else [],
        config.max_length,
    )
    if not len(train_set):
        raise ValueError(f"no training examples in {config.data_dir / 'train.jsonl'}")
    card_path = config.data_dir / "data_card.json"
    card = json.loads(card_path.read_text(encoding="utf-8")) if card_path.exists() else {}
    dataset_sha256 = card.get("sha256", {}).get("dataset")

    # The arguments come first: with a ZeRO-3 config, creating them makes from_pretrained
    # partition the base model's weights across the GPUs as they load.
    args = TrainingArguments(
        output_dir=str(config.output_dir),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        logging_strategy="steps",
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        eval_strategy="no",
        seed=config.seed,
        bf16=config.bf16,
        deepspeed=str(config.deepspeed) if config.deepspeed else None,
        use_cpu=config.use_cpu,
        include_num_input_tokens_seen="non_padding",
        remove_unused_columns=False,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=torch.cuda.is_available(),
        optim="adamw_torch",
        **_checkpointing_argument(config.gradient_checkpointing),
        **config.extra,
    )
    model = with_lora(load_base_model(config), config)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        data_collator=PadCollator(int(tokenizer.pad_token_id)),
        callbacks=[_progress_callback(config.output_dir / "progress.jsonl", started)],
    )
    resume = last_checkpoint(config.output_dir) if config.resume else None
    if resume is not None:
        log.info("resuming from checkpoint", extra={"checkpoint": str(resume)})
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    eval_loss = None
    if len(validation_set):
        eval_loss = mean_loss(model, validation_set, int(tokenizer.pad_token_id))
    adapter_dir = config.output_dir / ADAPTER_DIR
    trainer.save_model(str(adapter_dir))  # the adapter only (peft), gathered under ZeRO-3
    tokenizer.save_pretrained(adapter_dir)

    seconds = time.monotonic() - started
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    train_seconds = float(output.metrics.get("train_runtime", seconds))
    result = TrainingResult(
        adapter_dir=adapter_dir,
        global_step=int(trainer.state.global_step),
        resumed_from=resume.name if resume else None,
        train_loss=_finite(output.training_loss),
        eval_loss=_finite(eval_loss),
        perplexity=_finite(math.exp(eval_loss)) if eval_loss is not None else None,
        tokens_per_s=round(tokens / max(train_seconds, 1e-9), 2),
        seconds=round(seconds, 3),
        peak_memory_gb=round(_peak_memory_gb(), 3),
        dataset_sha256=dataset_sha256,
    )
    if trainer.is_world_process_zero():
        (config.output_dir / "metrics.json").write_text(
            json.dumps(
                {"result": result.to_json(), "config": config.to_json()}, indent=2, sort_keys=True
            )
            + "\n",
            encoding="utf-8",
        )
    return result


def load_adapter(base_model: Path, adapter_dir: Path) -> PeftModel:
    """The base model with a saved adapter on it, for evaluation or merging."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_model, local_files_only=True)
    return PeftModel.from_pretrained(base, adapter_dir)


def _checkpointing_argument(enabled: bool) -> dict[str, Any]:
    # transformers 5 renamed gradient_checkpointing (deprecated, warns) to activation_checkpointing.
    if not enabled:
        return {}
    import inspect

    from transformers import TrainingArguments

    names = inspect.signature(TrainingArguments).parameters
    return {
        "activation_checkpointing"
        if "activation_checkpointing" in names
        else "gradient_checkpointing": True
    }


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _peak_memory_gb() -> float:
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    # ru_maxrss is in kilobytes on Linux: the process's peak resident memory.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.lora", description=__doc__)
    parser.add_argument("--base-model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, dest="data_dir")
    parser.add_argument("--output", type=Path, required=True, dest="output_dir")
    parser.add_argument("--deepspeed", type=Path)
    parser.add_argument("--no-resume", action="store_false", dest="resume")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--quantization", choices=["none", "4bit"], default="none")
    parser.add_argument("--use-cpu", action="store_true")
    for name in (
        "max_length",
        "lora_r",
        "lora_alpha",
        "max_steps",
        "batch_size",
        "gradient_accumulation_steps",
        "warmup_steps",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "seed",
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=int)
    for name in ("lora_dropout", "learning_rate", "epochs", "weight_decay"):
        parser.add_argument("--" + name.replace("_", "-"), type=float)
    # deepspeed's launcher passes --local_rank to every process; the Trainer reads LOCAL_RANK.
    parser.add_argument("--local_rank", "--local-rank", type=int, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    values = vars(_parser().parse_args(argv))
    values.pop("local_rank", None)
    known = {f.name for f in fields(LoraTrainingConfig)}
    config = LoraTrainingConfig(**{k: v for k, v in values.items() if k in known and v is not None})
    result = train(config)
    print(json.dumps(result.to_json(), sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
