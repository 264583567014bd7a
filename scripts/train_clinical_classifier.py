"""`make train-clinical`: train the naive Bayes second reader (bot/clinical/classifier.py).

Training data: every labelled case we may tune on (../shared/eval dev sets, tests/cases/*.jsonl,
tests/cases/train/, and the spent blind sets blind to blind4), the rule files' examples and
counter-examples, and non-clinical text (the Rasa NLU examples of other intents, the
knowledge-base questions) as "none". tests/cases/blind5 is never read: it stays the honest check.
Thresholds are chosen by 5-fold cross-validation so that a raise is right at least 90% (crisis:
95%) of the time out of fold. Writes
bot/clinical/model/{triage,crisis}.json and prints one JSON line with the cross-validated figures.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.clinical.classifier import MODEL_DIR, NaiveBayes  # noqa: E402
from bot.clinical.engine import ClinicalEngine  # noqa: E402
from scripts.cases import read_cases  # noqa: E402

SHARED = ROOT.parent / "shared" / "eval"
CASES = ROOT / "tests" / "cases"
# blind4 (and any later blind set) is never read here: it stays the honest check.
TRAIN_FOLDERS = [
    SHARED,
    CASES,
    CASES / "train",
    CASES / "blind",
    CASES / "blind2",
    CASES / "blind3",
]
TRIAGE_LABELS = ["none", "self_care", "routine", "urgent", "emergency"]
CRISIS_LABELS = ["no_crisis", "crisis"]
# Out-of-fold precision a raise must reach: a false crisis alarm costs a patient more (a crisis
# questionnaire about a joke) than a false "be seen within a day", so its bar is higher.
TARGET_PRECISION = {"emergency": 0.9, "crisis": 0.95}


def _nlu_texts() -> list[str]:
    data = yaml.safe_load((ROOT / "bot" / "data" / "nlu.yml").read_text("utf-8"))
    texts: list[str] = []
    for block in data.get("nlu", []):
        if block.get("intent") in (None, "describe_symptoms"):
            continue
        for line in str(block.get("examples", "")).splitlines():
            line = line.strip().lstrip("-").strip()
            if line:
                texts.append(line)
    return texts


def datasets(engine: ClinicalEngine) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    triage: list[tuple[str, str]] = []
    crisis: list[tuple[str, str]] = []
    for row in read_cases(TRAIN_FOLDERS, "triage*.jsonl"):
        triage.append((row["text"], row["disposition"]))
        if row["disposition"] != "emergency":
            crisis.append((row["text"], "no_crisis"))
    for row in read_cases(TRAIN_FOLDERS, "crisis*.jsonl"):
        crisis.append((row["text"], row["label"]))
    for rule in engine.ruleset.rules:
        for example in rule.examples:
            if rule.level == "crisis":
                crisis.append((example.text, "crisis"))
            else:
                triage.append((example.text, rule.level))
        if rule.level == "crisis":
            crisis += [(e.text, "no_crisis") for e in rule.counter_examples]
    other = _nlu_texts()
    if (SHARED / "kb_questions_dev.jsonl").exists():
        other += [r["text"] for r in read_cases(TRAIN_FOLDERS, "kb_questions*.jsonl")]
    triage += [(text, "none") for text in other]
    crisis += [(text, "no_crisis") for text in other]
    return triage, crisis


def cross_validated(
    engine: ClinicalEngine, data: list[tuple[str, str]], labels: list[str], targets: list[str]
) -> list[tuple[float, bool]]:
    """Out-of-fold probability of any of `targets` for every document, and whether it is one."""
    tokenized = [(engine.tokens(text).tokens, label) for text, label in data]
    order = list(range(len(tokenized)))
    random.Random(7).shuffle(order)
    out: list[tuple[float, bool]] = []
    for fold in range(5):
        test = set(order[fold::5])
        model = NaiveBayes.train((tokenized[i] for i in order if i not in test), labels=labels)
        for i in test:
            tokens, label = tokenized[i]
            probabilities = model.probabilities(tokens)
            out.append((sum(probabilities[t] for t in targets), label in targets))
    return out


def threshold(scored: list[tuple[float, bool]], target: float) -> tuple[float, float, float]:
    """The lowest threshold whose raises are right at least `target` of the time."""
    best = (1.01, 0.0, 0.0)
    positives = sum(1 for _, y in scored if y) or 1
    grid = [x / 100 for x in range(50, 100)] + [0.995, 0.999, 0.9999, 0.99999, 0.999999]
    for t in grid:
        raised = [y for p, y in scored if p >= t]
        if not raised:
            continue
        precision = sum(raised) / len(raised)
        if precision >= target:
            return t, round(precision, 3), round(sum(raised) / positives, 3)
    return best


def main() -> int:
    if not SHARED.exists():
        print(f"warning: {SHARED} not found; training without the shared development sets, so "
              "the weights will differ from the committed ones", file=sys.stderr)  # fmt: skip
    engine = ClinicalEngine(second_reader=False)
    triage, crisis = datasets(engine)
    print(f"training on {len(triage)} triage and {len(crisis)} crisis texts", file=sys.stderr)
    MODEL_DIR.mkdir(exist_ok=True)
    figures: dict[str, Any] = {}
    plans = [
        ("triage", triage, TRIAGE_LABELS, {"emergency": ["emergency"]}),
        ("crisis", crisis, CRISIS_LABELS, {"crisis": ["crisis"]}),
    ]  # fmt: skip
    for name, data, labels, raises in plans:
        model = NaiveBayes.train(
            ((engine.tokens(text).tokens, label) for text, label in data), labels=labels
        )
        figures[name] = {"documents": len(data)}
        for raise_name, targets in raises.items():
            scored = cross_validated(engine, data, labels, targets)
            t, precision, recall = threshold(scored, TARGET_PRECISION[raise_name])
            model.thresholds[raise_name] = t
            figures[name][raise_name] = {"threshold": t, "cv_precision": precision,
                                         "cv_recall": recall}  # fmt: skip
            print(f"{name}: {raise_name} raised at p >= {t} (cross-validated precision "
                  f"{precision}, recall {recall})", file=sys.stderr)  # fmt: skip
        (MODEL_DIR / f"{name}.json").write_text(
            json.dumps(model.to_json(), ensure_ascii=False, sort_keys=True), encoding="utf-8"
        )
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
