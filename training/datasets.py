"""Training data for the local model: curated clinic dialogues and staff corrections, de-identified,
split by conversation, rendered with the base model's chat template, described by a data card.

Two sources:

- **curated** (`training/data/curated_dialogues.jsonl`): dialogues written for the project, English
  and Spanish. A `grounded` record is a knowledge-base answer in exactly the shape the router
  serves (`rag.answer.SYSTEM_PROMPT`, the numbered sources and the question through
  `models.base.Prompt`), so the model learns to cite, to say NO_ANSWER and to decline dosing and
  diagnoses. A `conversation` record is a short exchange in the clinic's voice.
- **staff corrections** (the database): conversations that were escalated and where staff wrote to
  the patient. Staff replies are what the model learns; the bot's own earlier replies stay as
  context only (they are what staff had to correct). Only conversations of patients in the
  consent set are read, crisis and emergency cases are left out by default, and every turn goes
  through `models.privacy.redact` (names, phone numbers, e-mails, dates, addresses, record
  numbers), staff names included.

The split is by conversation (a stable hash of its id), so no conversation is on both sides. The
data card records counts, sources, redactions and the sha256 of each split as written.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.orm import Conversation, Escalation, Message
from models import privacy
from models.base import Prompt, Source
from models.privacy import redact
from rag.answer import LANGUAGE_NAMES, SYSTEM_PROMPT

CURATED_PATH = Path(__file__).parent / "data" / "curated_dialogues.jsonl"
DATA_CARD_VERSION = 1
IGNORE_INDEX = -100  # labels the loss skips (torch's CrossEntropyLoss default)

# The voice of conversation records and staff corrections: what the clinic's staff and the
# curated dialogues do, in the same limits as the knowledge-base prompt.
CONVERSATION_SYSTEM_PROMPT = """You are the patient assistant of a medical clinic, writing as the \
clinic's front desk would.
- Be brief, warm and plain. Offer to connect the patient with the clinic team when unsure.
- Do not diagnose, interpret personal results, or give doses; never tell the patient to start, \
stop or change a medicine.
- If something sounds urgent, tell the patient to call 911 (988 in a mental health crisis).
- Reply in {language}."""

# Escalation reasons whose conversations are not trained on by default: these are handled by the
# safety engine and staff, never by a model's words.
DEFAULT_EXCLUDED_REASONS = frozenset({"emergency", "crisis"})

Role = Literal["system", "user", "assistant"]
SourceName = Literal["curated", "staff_corrections"]
Split = Literal["train", "validation"]


@dataclass(frozen=True)
class Turn:
    role: Role
    content: str
    # Whether the loss is computed on this turn; only assistant turns can be trained.
    train: bool = False


@dataclass(frozen=True)
class Dialogue:
    id: str
    source: SourceName
    language: str
    turns: tuple[Turn, ...]
    topic: str | None = None

    def messages(self) -> list[dict[str, str]]:
        return [{"role": turn.role, "content": turn.content} for turn in self.turns]

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)


# -- curated dialogues -------------------------------------------------------------------------


def load_curated(path: Path = CURATED_PATH) -> list[Dialogue]:
    """The curated dialogues of a JSONL file (see the module docstring for the two kinds)."""
    dialogues = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            dialogues.append(_curated(json.loads(line)))
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a curated dialogue ({exc})") from exc
    ids = Counter(dialogue.id for dialogue in dialogues)
    if duplicates := sorted(i for i, n in ids.items() if n > 1):
        raise ValueError(f"{path}: duplicate ids {', '.join(duplicates)}")
    return dialogues


def _curated(record: dict[str, Any]) -> Dialogue:
    language = str(record["language"])
    if record["kind"] == "grounded":
        sources = tuple(
            Source(number, str(s["title"]), f"curated/{record['id']}/{number}", str(s["text"]))
            for number, s in enumerate(record["sources"], start=1)
        )
        prompt = Prompt(
            system=knowledge_system_prompt(language, str(record.get("channel", "web"))),
            question=str(record["question"]),
            sources=sources,
            language=language,
        )
        turns: tuple[Turn, ...] = (
            Turn("system", prompt.system),
            Turn("user", prompt.user_content()),
            Turn("assistant", str(record["answer"]), train=True),
        )
    elif record["kind"] == "conversation":
        body = []
        for message in record["messages"]:
            role = message["role"]
            if role not in ("user", "assistant"):
                raise ValueError(f"role {role!r}")
            body.append(Turn(role, str(message["content"]), train=role == "assistant"))
        turns = (Turn("system", conversation_system_prompt(language)), *body)
    else:
        raise ValueError(f"kind {record['kind']!r}")
    dialogue = Dialogue(str(record["id"]), "curated", language, turns, record.get("topic"))
    _check_shape(dialogue)
    return dialogue


def knowledge_system_prompt(language: str, channel: str = "web") -> str:
    """The router's knowledge-base prompt, as rag/answer.py fills it for this channel."""
    return SYSTEM_PROMPT.format(
        language=LANGUAGE_NAMES.get(language, "English"),
        sentences=2 if channel in ("sms", "voice") else 4,
    )


def conversation_system_prompt(language: str) -> str:
    return CONVERSATION_SYSTEM_PROMPT.format(language=LANGUAGE_NAMES.get(language, "English"))


def _check_shape(dialogue: Dialogue) -> None:
    if not any(turn.train for turn in dialogue.turns):
        raise ValueError(f"dialogue {dialogue.id} has no assistant turn to learn from")
    if not dialogue.turns or dialogue.turns[-1].role != "assistant":
        raise ValueError(f"dialogue {dialogue.id} must end with an assistant turn")


# -- staff corrections from the database -------------------------------------------------------


ConsentSet = Collection[str] | Callable[[str], bool]


@dataclass
class CorrectionStats:
    escalated_conversations: int = 0
    without_consent: int = 0
    excluded_reason: int = 0
    without_staff_reply: int = 0
    used: int = 0
    corrected_bot_replies: int = 0
    redactions: Counter[str] = field(default_factory=Counter)


def staff_correction_dialogues(
    session: Session,
    *,
    consent: ConsentSet,
    excluded_reasons: Collection[str] = DEFAULT_EXCLUDED_REASONS,
    region: str = "US",
    stats: CorrectionStats | None = None,
) -> list[Dialogue]:
    """Escalated conversations with staff replies, of consenting patients only, de-identified.

    `consent` is the set of patient ids who agreed to their conversations being used for
    training (or a predicate on a patient id); nobody else's messages are even read. Message
    text is decrypted by the ORM (core/crypto.py), so the session's keyring must be the one the
    database was written with. The dialogue's id is a hash of the conversation id, so the data
    card and the written files hold no database identifiers."""
    stats = stats if stats is not None else CorrectionStats()
    allowed = consent if callable(consent) else consent.__contains__
    reasons: dict[str, set[str]] = {}
    staff_names: dict[str, set[str]] = {}
    patients: dict[str, str] = {}
    for case in session.scalars(select(Escalation).order_by(Escalation.created_at)):
        reasons.setdefault(case.conversation_id, set()).add(case.reason)
        patients[case.conversation_id] = case.patient_id
        if case.claimed_by_name:
            staff_names.setdefault(case.conversation_id, set()).add(case.claimed_by_name)

    dialogues = []
    for conversation_id in sorted(reasons):
        stats.escalated_conversations += 1
        if not allowed(patients[conversation_id]):
            stats.without_consent += 1
            continue
        if reasons[conversation_id] & set(excluded_reasons):
            stats.excluded_reason += 1
            continue
        conversation = session.get(Conversation, conversation_id)
        if conversation is None or not allowed(conversation.patient_id):
            stats.without_consent += 1
            continue
        messages = list(
            session.scalars(
                select(Message)
                .where(Message.conversation_id == conversation_id)
                .order_by(Message.seq)
            )
        )
        names = set(staff_names.get(conversation_id, ()))
        for message in messages:
            if message.sender == "staff" and (shown := (message.meta or {}).get("staff_shown_as")):
                names.add(str(shown))
        dialogue = _correction_dialogue(
            conversation_id, conversation.language, messages, sorted(names), region, stats
        )
        if dialogue is None:
            stats.without_staff_reply += 1
            continue
        stats.used += 1
        dialogues.append(dialogue)
    return dialogues


def _correction_dialogue(
    conversation_id: str,
    language: str,
    messages: Sequence[Message],
    staff_names: Sequence[str],
    region: str,
    stats: CorrectionStats,
) -> Dialogue | None:
    exchange: list[tuple[str, str]] = []  # (sender, text) of patient, bot and staff messages
    for message in messages:
        if message.sender not in ("patient", "bot", "staff"):
            continue  # "system": notices about the case itself, not part of the exchange
        text = _strip_staff_prefix(message) if message.sender == "staff" else message.text
        exchange.append((message.sender, text))
    # A name said once (the patient introducing themselves) is removed everywhere it recurs.
    names = set(staff_names)
    for _, text in exchange:
        names.update(names_in(text))
    names.update(part for name in list(names) for part in name.split() if len(part) > 2)

    turns: list[Turn] = []
    senders: list[str] = []
    for sender, original in exchange:
        redaction = redact(original, known_names=sorted(names), region=region)
        stats.redactions.update(redaction.counts)
        text = redaction.text.strip()
        if not text:
            continue
        role: Role = "user" if sender == "patient" else "assistant"
        if turns and senders[-1] == sender:
            # SMS parts, or two messages in a row from the same sender: one turn.
            last = turns.pop()
            turns.append(Turn(role, f"{last.content}\n{text}", last.train))
            continue
        if turns and turns[-1].role == "assistant" and role == "assistant":
            if sender == "staff":
                # Staff answered instead of the bot's reply: that is the correction to learn.
                turns.pop()
                senders.pop()
                stats.corrected_bot_replies += 1
            else:
                continue  # the bot speaking after staff, unprompted: neither context nor target
        turns.append(Turn(role, text, train=sender == "staff"))
        senders.append(sender)
    # From the patient's first message to staff's last reply.
    while turns and turns[0].role != "user":
        turns.pop(0)
    last_staff = max((i for i, turn in enumerate(turns) if turn.train), default=None)
    if last_staff is None:
        return None
    turns = turns[: last_staff + 1]
    return Dialogue(
        id="conv-" + hashlib.sha256(conversation_id.encode()).hexdigest()[:16],
        source="staff_corrections",
        language=language,
        turns=(Turn("system", conversation_system_prompt(language)), *turns),
    )


def names_in(text: str) -> set[str]:
    """Names a message introduces ("my name is ...", "soy ...", "Dr. ..."), found with the
    privacy guard's own patterns so that later mentions of the bare name can be removed too."""
    found: set[str] = set()
    for pattern in (privacy._DECLARED_NAME, privacy._INTRODUCED_NAME, privacy._TITLED_NAME):
        for match in pattern.finditer(text):
            name = match.group(1)
            if name and name.split()[0] not in privacy._NOT_NAMES:
                found.add(name)
    return found


def _strip_staff_prefix(message: Message) -> str:
    # escalation/cases.py sends "<shown as>: <body>"; later SMS parts carry no prefix.
    shown = (message.meta or {}).get("staff_shown_as")
    prefix = f"{shown}: " if shown else ""
    return (
        message.text[len(prefix) :] if prefix and message.text.startswith(prefix) else message.text
    )


# -- split and data card -----------------------------------------------------------------------


def split_of(dialogue_id: str, *, validation_fraction: float, seed: str) -> Split:
    """Which side a conversation falls on: stable across runs, machines and Python versions."""
    digest = hashlib.sha256(f"{seed}:{dialogue_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "validation" if bucket < validation_fraction else "train"


@dataclass(frozen=True)
class BuiltDataset:
    train: list[Dialogue]
    validation: list[Dialogue]
    card: dict[str, Any]


def build_dataset(
    *,
    curated: Iterable[Dialogue] = (),
    corrections: Iterable[Dialogue] = (),
    correction_stats: CorrectionStats | None = None,
    validation_fraction: float = 0.2,
    seed: str = "clinic-training-v1",
    curated_path: Path | None = CURATED_PATH,
) -> BuiltDataset:
    """Split the dialogues by conversation and describe them. At least one dialogue goes to
    validation whenever there are two or more (the smallest hash, so still deterministic)."""
    dialogues = sorted([*curated, *corrections], key=lambda d: (d.source, d.id))
    ids = Counter(d.id for d in dialogues)
    if duplicates := sorted(i for i, n in ids.items() if n > 1):
        raise ValueError(f"duplicate dialogue ids: {', '.join(duplicates)}")
    sides = {
        d.id: split_of(d.id, validation_fraction=validation_fraction, seed=seed) for d in dialogues
    }
    if len(dialogues) >= 2 and "validation" not in sides.values():
        first = min(sides, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
        sides[first] = "validation"
    train = [d for d in dialogues if sides[d.id] == "train"]
    validation = [d for d in dialogues if sides[d.id] == "validation"]
    card = _data_card(train, validation, correction_stats, validation_fraction, seed, curated_path)
    return BuiltDataset(train, validation, card)


def _jsonl(dialogues: Iterable[Dialogue]) -> bytes:
    return "".join(d.to_json() + "\n" for d in dialogues).encode("utf-8")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data_card(
    train: list[Dialogue],
    validation: list[Dialogue],
    stats: CorrectionStats | None,
    validation_fraction: float,
    seed: str,
    curated_path: Path | None,
) -> dict[str, Any]:
    def counts(dialogues: list[Dialogue]) -> dict[str, Any]:
        return {
            "dialogues": len(dialogues),
            "trained_turns": sum(t.train for d in dialogues for t in d.turns),
            "by_source": dict(sorted(Counter(d.source for d in dialogues).items())),
            "by_language": dict(sorted(Counter(d.language for d in dialogues).items())),
        }

    sources: list[dict[str, Any]] = []
    if any(d.source == "curated" for d in (*train, *validation)) and curated_path is not None:
        sources.append(
            {
                "name": "curated",
                "path": _display_path(curated_path),
                "sha256": _sha256(curated_path.read_bytes()),
            }
        )
    if stats is not None:
        sources.append(
            {
                "name": "staff_corrections",
                "escalated_conversations": stats.escalated_conversations,
                "used": stats.used,
                "excluded": {
                    "without_consent": stats.without_consent,
                    "safety_reason": stats.excluded_reason,
                    "without_staff_reply": stats.without_staff_reply,
                },
                "corrected_bot_replies": stats.corrected_bot_replies,
                "redactions": dict(sorted(stats.redactions.items())),
                "deidentification": "models.privacy.redact",
            }
        )
    train_bytes, validation_bytes = _jsonl(train), _jsonl(validation)
    return {
        "version": DATA_CARD_VERSION,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "split": {"by": "conversation", "validation_fraction": validation_fraction, "seed": seed},
        "sources": sources,
        "train": counts(train),
        "validation": counts(validation),
        "sha256": {
            "train": _sha256(train_bytes),
            "validation": _sha256(validation_bytes),
            # What the manifest of a model trained on this names as its data.
            "dataset": _sha256(train_bytes + b"\0" + validation_bytes),
        },
    }


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return path.name


def write_dataset(built: BuiltDataset, directory: Path) -> Path:
    """train.jsonl, validation.jsonl and data_card.json under `directory`; returns the card's
    path. The card's hashes are of these files' exact bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.jsonl").write_bytes(_jsonl(built.train))
    (directory / "validation.jsonl").write_bytes(_jsonl(built.validation))
    card = directory / "data_card.json"
    card.write_text(json.dumps(built.card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return card


def read_dialogues(path: Path) -> list[Dialogue]:
    """Dialogues written by `write_dataset`."""
    dialogues = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            turns = tuple(Turn(**turn) for turn in record.pop("turns"))
            dialogues.append(Dialogue(turns=turns, **record))
    return dialogues


# -- chat-template formatting ------------------------------------------------------------------


class ChatTokenizer(Protocol):
    """What formatting needs of a Hugging Face tokenizer."""

    def apply_chat_template(
        self, conversation: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> Any: ...

    def __call__(
        self, text: str, *, add_special_tokens: bool, return_offsets_mapping: bool
    ) -> Any: ...


@dataclass(frozen=True)
class EncodedDialogue:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX outside the trained assistant turns

    @property
    def trained_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def render(tokenizer: ChatTokenizer, dialogue: Dialogue) -> tuple[str, list[tuple[int, int]]]:
    """The dialogue as the base model's chat template writes it, and the character spans of the
    trained assistant turns in it.

    A span runs from where the template would start the assistant's reply
    (`add_generation_prompt=True` on the turns before it) to the end of the rendering with that
    turn: the reply and the template's end-of-turn marker, so the model learns to stop."""
    messages = dialogue.messages()
    text = _template(tokenizer, messages, add_generation_prompt=False)
    spans = []
    for index, turn in enumerate(dialogue.turns):
        if not turn.train:
            continue
        before = _template(tokenizer, messages[:index], add_generation_prompt=True)
        through = _template(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (through.startswith(before) and text.startswith(through)):
            raise ValueError(
                "this chat template does not render a conversation as the prefix of its "
                "continuation; the trained turns cannot be located in it"
            )
        spans.append((len(before), len(through)))
    return text, spans


def _template(
    tokenizer: ChatTokenizer, messages: list[dict[str, str]], *, add_generation_prompt: bool
) -> str:
    if not messages:
        return ""
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return str(rendered)


def encode(tokenizer: ChatTokenizer, dialogue: Dialogue, *, max_length: int) -> EncodedDialogue:
    """Token ids of the rendered dialogue, labelled only on its trained turns; cut at
    `max_length` tokens (the data card counts dialogues, the trainer reports truncation)."""
    text, spans = render(tokenizer, dialogue)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(encoding["input_ids"])
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(input_ids, encoding["offset_mapping"], strict=True)
    ]
    return EncodedDialogue(input_ids[:max_length], labels[:max_length])


def encode_all(
    tokenizer: ChatTokenizer, dialogues: Iterable[Dialogue], *, max_length: int
) -> Iterator[EncodedDialogue]:
    for dialogue in dialogues:
        encoded = encode(tokenizer, dialogue, max_length=max_length)
        if encoded.trained_tokens:  # cut before any trained token: nothing to learn
            yield encoded


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """python -m training.datasets OUT_DIR [--database-url URL --consent-file IDS] ...

    Until patients' training consent is recorded in the database, the consent set is a file of
    patient ids, one per line, that the privacy officer keeps."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.datasets", description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--curated", type=Path, default=CURATED_PATH)
    parser.add_argument("--no-curated", action="store_true")
    parser.add_argument("--database-url", help="read staff corrections from this database")
    parser.add_argument("--consent-file", type=Path, help="patient ids who consented, one a line")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--seed", default="clinic-training-v1")
    args = parser.parse_args(argv)

    curated = [] if args.no_curated else load_curated(args.curated)
    corrections: list[Dialogue] = []
    stats: CorrectionStats | None = None
    if args.database_url:
        if args.consent_file is None:
            parser.error("--database-url needs --consent-file: nobody's data is used without it")
        from core.db import make_sync_engine

        consent = {
            line.strip()
            for line in args.consent_file.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")
        }
        stats = CorrectionStats()
        engine = make_sync_engine(args.database_url)
        try:
            with Session(engine) as session:
                corrections = staff_correction_dialogues(session, consent=consent, stats=stats)
        finally:
            engine.dispose()
    built = build_dataset(
        curated=curated,
        corrections=corrections,
        correction_stats=stats,
        validation_fraction=args.validation_fraction,
        seed=args.seed,
        curated_path=None if args.no_curated else args.curated,
    )
    card = write_dataset(built, args.out)
    print(json.dumps({"data_card": str(card), **built.card["sha256"]}, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
