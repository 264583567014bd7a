"""A second reader beside the rules: naive Bayes over the words of the case sets.

Rules recognise what their authors thought of; blind case sets show that the same emergency told
in other words is often missed. This model, trained on every labelled case and rule example we
have (`scripts/train_clinical_classifier.py`), may only *raise* a decision: to emergency, or to
crisis, when it is confident and the rules said less. It never lowers one. Its explanation is the
words that weighed most ("grunting", "ribs sucking in"), recorded with the decision.

Pure Python and JSON weights, so it runs the same in the platform and in Rasa's action server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

MODEL_DIR = Path(__file__).parent / "model"
# Words after these, up to the end of the clause, are read as negated ("no chest pain").
_NEGATORS = frozenset(
    ["no", "not", "never", "without", "denies", "deny", "nor", "sin", "ni", "nunca", "jamas",
     "tampoco", "negative"]
)  # fmt: skip
_CLAUSE_END = frozenset(".,;:!?") | frozenset(
    ["but", "however", "although", "pero", "aunque", "and", "y"]
)


# "I don't know" answers a question; it says nothing about the patient.
_NOT_KNOWING = (("do", "not", "know"), ("not", "sure"), ("no", "se"), ("ni", "idea"), ("unknown",))


def _without_not_knowing(tokens: Sequence[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(tokens):
        for phrase in _NOT_KNOWING:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                i += len(phrase)
                out.append(",")
                break
        else:
            out.append(tokens[i])
            i += 1
    return out


def features(tokens: Sequence[str]) -> set[str]:
    """Unigrams and bigrams, words in a negation's reach marked with "!"."""
    marked: list[str] = []
    negated = False
    for token in _without_not_knowing(tokens):
        if token in _CLAUSE_END:
            negated = False
            marked.append("|")
            continue
        if token in _NEGATORS:
            negated = True
            marked.append(token)
            continue
        marked.append("!" + token if negated else token)
    grams = {t for t in marked if t != "|"}
    grams |= {f"{a} {b}" for a, b in pairwise(marked) if "|" not in (a, b)}
    return grams


def _softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


@dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    evidence: tuple[str, ...]  # the features that weighed most for `label`


class NaiveBayes:
    def __init__(
        self,
        labels: Sequence[str],
        log_prior: Sequence[float],
        log_likelihood: dict[str, list[float]],
        log_unseen: Sequence[float],
        thresholds: dict[str, float],
    ) -> None:
        self.labels = list(labels)
        self.log_prior = list(log_prior)
        self.log_likelihood = log_likelihood
        self.log_unseen = list(log_unseen)
        self.thresholds = thresholds

    @classmethod
    def train(
        cls,
        documents: Iterable[tuple[Sequence[str], str]],
        *,
        labels: Sequence[str],
        alpha: float = 0.5,
        min_count: int = 2,
    ) -> NaiveBayes:
        """Bernoulli-style counts (a feature counts once per document), Laplace smoothing."""
        counts: dict[str, list[int]] = {}
        per_label = [0] * len(labels)
        docs = 0
        for tokens, label in documents:
            k = labels.index(label)
            per_label[k] += 1
            docs += 1
            for feature in features(tokens):
                counts.setdefault(feature, [0] * len(labels))[k] += 1
        kept = {f: c for f, c in counts.items() if sum(c) >= min_count}
        total = [sum(c[k] for c in kept.values()) for k in range(len(labels))]
        size = len(kept) + 1
        log_likelihood = {
            f: [math.log((c[k] + alpha) / (total[k] + alpha * size)) for k in range(len(labels))]
            for f, c in kept.items()
        }
        log_unseen = [math.log(alpha / (total[k] + alpha * size)) for k in range(len(labels))]
        log_prior = [
            math.log((per_label[k] + 1) / (docs + len(labels))) for k in range(len(labels))
        ]
        return cls(labels, log_prior, log_likelihood, log_unseen, {})

    def scores(self, tokens: Sequence[str]) -> tuple[list[float], set[str]]:
        present = {f for f in features(tokens) if f in self.log_likelihood}
        scores = list(self.log_prior)
        for feature in present:
            weights = self.log_likelihood[feature]
            for k in range(len(scores)):
                scores[k] += weights[k]
        return scores, present

    def probabilities(self, tokens: Sequence[str]) -> dict[str, float]:
        scores, _ = self.scores(tokens)
        return dict(zip(self.labels, _softmax(scores), strict=True))

    def predict(self, tokens: Sequence[str], label: str) -> Prediction:
        """How likely `label` is, and the words that argue for it most."""
        scores, present = self.scores(tokens)
        k = self.labels.index(label)
        probability = _softmax(scores)[k]
        others = [j for j in range(len(self.labels)) if j != k]

        def weight(feature: str) -> float:
            w = self.log_likelihood[feature]
            return w[k] - max(w[j] for j in others)

        evidence = sorted((f for f in present if weight(f) > 0), key=weight, reverse=True)[:5]
        return Prediction(label, probability, tuple(evidence))

    def to_json(self) -> dict[str, object]:
        return {
            "labels": self.labels,
            "log_prior": self.log_prior,
            "log_unseen": self.log_unseen,
            "thresholds": self.thresholds,
            "log_likelihood": {f: [round(x, 4) for x in w] for f, w in self.log_likelihood.items()},
        }

    @classmethod
    def load(cls, path: Path) -> NaiveBayes | None:
        if not path.exists():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            data["labels"],
            data["log_prior"],
            data["log_likelihood"],
            data["log_unseen"],
            data.get("thresholds", {}),
        )
