"""Training data: the curated dialogues stay within the clinic's limits, staff corrections are
used only with consent and without patient data, the split keeps each conversation on one side,
and the chat template marks exactly the replies the model learns from."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session

from core.orm import Base, ChannelIdentity, Conversation, Escalation, Message, Patient
from models.base import Source
from rag.answer import grounding_failures
from training.datasets import (
    IGNORE_INDEX,
    CorrectionStats,
    Dialogue,
    SourceName,
    Turn,
    build_dataset,
    encode,
    load_curated,
    read_dialogues,
    render,
    split_of,
    staff_correction_dialogues,
    write_dataset,
)
from training.tiny_model import write_tiny_base_model

# A dose or a quantity of medicine: what no assistant reply may ever give.
DOSE = re.compile(
    r"\b\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|g|ml|mL|units?|unidades|tablets?|pills?|pastillas?|"
    r"comprimidos?|gotas|drops)\b|\b(?:every|cada)\s+\d+\s*(?:hours?|horas)\b",
    re.IGNORECASE,
)
DIAGNOSIS = re.compile(
    r"\byou (?:have|probably have|might have)\b|\busted tiene\b"
    r"|\bit(?:'s| is) (?:the )?(?:flu|an? )",
    re.IGNORECASE,
)


# -- the curated set ---------------------------------------------------------------------------


def test_curated_dialogues_cover_both_languages_and_end_with_a_reply_to_learn() -> None:
    dialogues = load_curated()
    languages = {d.language for d in dialogues}
    assert languages == {"en", "es"}
    for language in languages:
        assert sum(d.language == language for d in dialogues) >= 8
    for dialogue in dialogues:
        assert dialogue.turns[0].role == "system"
        assert dialogue.turns[-1].role == "assistant"
        assert dialogue.turns[-1].train
        assert not any(t.train for t in dialogue.turns if t.role != "assistant")


def test_curated_replies_never_give_doses_or_diagnoses() -> None:
    for dialogue in load_curated():
        for turn in dialogue.turns:
            if turn.role == "assistant":
                assert not DOSE.search(turn.content), (dialogue.id, turn.content)
                assert not DIAGNOSIS.search(turn.content), (dialogue.id, turn.content)


def test_curated_knowledge_answers_pass_the_routers_own_grounding_check() -> None:
    grounded = [d for d in load_curated() if "<sources>" in d.turns[1].content]
    assert len(grounded) >= 10
    for dialogue in grounded:
        answer = dialogue.turns[-1].content
        if answer == "NO_ANSWER":
            continue
        sources = _sources_of(dialogue.turns[1].content)
        assert grounding_failures(answer, sources, dialogue.turns[0].content) == [], dialogue.id
    assert any(d.turns[-1].content == "NO_ANSWER" for d in grounded)


def _sources_of(user_content: str) -> list[Source]:
    blocks = re.findall(
        r'<source number="(\d+)" title="([^"]*)">\n(.*?)\n</source>', user_content, re.DOTALL
    )
    return [Source(int(n), title, f"s{n}", text) for n, title, text in blocks]


def test_a_malformed_curated_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "curated.jsonl"
    path.write_text(
        '{"id": "a", "language": "en", "kind": "conversation", '
        '"messages": [{"role": "user", "content": "hi"}]}\n',
        encoding="utf-8",
    )
    with pytest.raises(ValueError, match=r"curated\.jsonl:1"):
        load_curated(path)


# -- staff corrections from the database --------------------------------------------------------


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    engine = create_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _conversation(
    session: Session,
    *,
    patient: str,
    reason: str,
    messages: list[tuple[str, str]],
    staff_name: str = "Dana Whitfield",
) -> str:
    session.add(Patient(id=patient))
    identity = ChannelIdentity(patient_id=patient, channel="web", address=f"web:{patient}")
    session.add(identity)
    session.flush()
    conversation = Conversation(
        patient_id=patient, identity_id=identity.id, channel="web", language="en"
    )
    session.add(conversation)
    session.flush()
    session.add(
        Escalation(
            conversation_id=conversation.id,
            patient_id=patient,
            priority="normal",
            reason=reason,
            status="resolved",
            claimed_by_name=staff_name,
            created_at=datetime(2026, 11, 2, tzinfo=UTC),
        )
    )
    for sender, text in messages:
        meta = {"staff_id": "s1", "staff_shown_as": staff_name} if sender == "staff" else {}
        if sender == "staff":
            text = f"{staff_name}: {text}"
        session.add(
            Message(
                conversation_id=conversation.id,
                channel="web",
                direction="inbound" if sender == "patient" else "outbound",
                sender=sender,
                text=text,
                meta=meta,
                status="delivered",
            )
        )
    session.commit()
    return conversation.id


REQUEST = [
    ("patient", "Hi, my name is Maria Lopez, can someone call me at (415) 555-0182?"),
    ("bot", "I'm not sure I understood."),
    ("system", "A staff member has joined the conversation."),
    ("staff", "Hello Maria, this is Dana from the front desk."),
    ("staff", "We can call you tomorrow morning. Is 415-555-0182 still right?"),
    ("patient", "Yes, or email me at maria.lopez@example.com. DOB 03/14/1980."),
    ("staff", "Thank you, we will call you tomorrow. Your record MRN 12345678 is updated."),
    ("bot", "Is there anything else I can help with?"),
]


def test_only_consenting_patients_conversations_are_used(session: Session) -> None:
    _conversation(session, patient="p-yes", reason="request", messages=REQUEST)
    _conversation(session, patient="p-no", reason="request", messages=REQUEST)
    stats = CorrectionStats()

    dialogues = staff_correction_dialogues(session, consent={"p-yes"}, stats=stats)

    assert len(dialogues) == 1
    assert (stats.escalated_conversations, stats.without_consent, stats.used) == (2, 1, 1)
    # A predicate works as well as a set.
    assert len(staff_correction_dialogues(session, consent=lambda p: p == "p-no")) == 1
    assert staff_correction_dialogues(session, consent=set()) == []


def test_staff_corrections_are_de_identified(session: Session) -> None:
    conversation_id = _conversation(session, patient="p1", reason="request", messages=REQUEST)
    stats = CorrectionStats()

    (dialogue,) = staff_correction_dialogues(session, consent={"p1"}, stats=stats)

    text = dialogue.to_json()
    for secret in (
        "Maria",
        "Lopez",
        "Dana",
        "Whitfield",
        "555-0182",
        "415",
        "maria.lopez@example.com",
        "03/14/1980",
        "12345678",
        conversation_id,
        "p1",
    ):
        assert secret not in text, secret
    assert {"NAME", "PHONE", "EMAIL", "DATE", "ID"} <= set(stats.redactions)
    assert "[PHONE]" in text


def test_staff_replies_are_learned_in_place_of_the_bot_replies_they_corrected(
    session: Session,
) -> None:
    _conversation(session, patient="p1", reason="unanswered", messages=REQUEST)

    (dialogue,) = staff_correction_dialogues(session, consent={"p1"})

    roles = [(t.role, t.train) for t in dialogue.turns]
    assert roles == [
        ("system", False),
        ("user", False),
        ("assistant", True),  # staff's two messages, one turn, in place of the bot's miss
        ("user", False),
        ("assistant", True),
    ]  # the bot's closing line after staff's last reply is cut
    assert "not sure I understood" not in dialogue.to_json()
    assert "anything else" not in dialogue.to_json()
    merged = dialogue.turns[2].content
    assert merged.startswith("Hello [NAME]") and "\nWe can call you tomorrow" in merged
    assert not any(":" in t.content.split()[0] for t in dialogue.turns if t.train)


def test_bot_replies_the_patient_answered_stay_as_context(session: Session) -> None:
    _conversation(
        session,
        patient="p1",
        reason="request",
        messages=[
            ("patient", "Can I change my appointment?"),
            ("bot", "Which day would suit you?"),
            ("patient", "I need to talk to a person."),
            ("staff", "Of course, I can help you with that."),
        ],
    )
    (dialogue,) = staff_correction_dialogues(session, consent={"p1"})
    assert [(t.role, t.train) for t in dialogue.turns[1:]] == [
        ("user", False),
        ("assistant", False),
        ("user", False),
        ("assistant", True),
    ]


@pytest.mark.parametrize("reason", ["crisis", "emergency"])
def test_crisis_and_emergency_cases_are_left_out(session: Session, reason: str) -> None:
    _conversation(session, patient="p1", reason=reason, messages=REQUEST)
    stats = CorrectionStats()
    assert staff_correction_dialogues(session, consent={"p1"}, stats=stats) == []
    assert stats.excluded_reason == 1


def test_a_case_without_a_staff_reply_gives_nothing(session: Session) -> None:
    _conversation(
        session, patient="p1", reason="request", messages=[("patient", "hello"), ("bot", "Hi!")]
    )
    stats = CorrectionStats()
    assert staff_correction_dialogues(session, consent={"p1"}, stats=stats) == []
    assert stats.without_staff_reply == 1


# -- split and data card -------------------------------------------------------------------------


def _dialogue(i: int, source: SourceName = "curated") -> Dialogue:
    return Dialogue(
        id=f"d{i:03d}",
        source=source,
        language="en" if i % 2 else "es",
        turns=(Turn("user", f"question {i}"), Turn("assistant", f"answer {i}", train=True)),
    )


def test_the_split_is_by_conversation_and_the_same_every_time() -> None:
    dialogues = [_dialogue(i) for i in range(200)]
    shuffled = random.Random(7).sample(dialogues, len(dialogues))

    first = build_dataset(curated=dialogues, curated_path=None)
    again = build_dataset(curated=shuffled, curated_path=None)

    assert [d.id for d in first.train] == [d.id for d in again.train]
    assert [d.id for d in first.validation] == [d.id for d in again.validation]
    assert not {d.id for d in first.train} & {d.id for d in first.validation}
    assert len(first.train) + len(first.validation) == 200
    assert 20 <= len(first.validation) <= 60  # about 20 %
    # Adding conversations never moves an existing one to the other side.
    more = build_dataset(curated=[*dialogues, *(_dialogue(i) for i in range(200, 300))])
    assert {d.id for d in first.validation} <= {d.id for d in more.validation}
    assert split_of("d001", validation_fraction=0.2, seed="s") == split_of(
        "d001", validation_fraction=0.2, seed="s"
    )


def test_two_dialogues_always_give_a_validation_side() -> None:
    built = build_dataset(curated=[_dialogue(1), _dialogue(2)], validation_fraction=0.0)
    assert (len(built.train), len(built.validation)) == (1, 1)


def test_the_data_card_counts_sources_and_hashes_the_written_files(tmp_path: Path) -> None:
    curated = load_curated()
    corrections = [_dialogue(i, "staff_corrections") for i in range(5)]
    stats = CorrectionStats(escalated_conversations=9, without_consent=4, used=5)

    built = build_dataset(curated=curated, corrections=corrections, correction_stats=stats)
    card_path = write_dataset(built, tmp_path / "data")

    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert card["train"]["dialogues"] + card["validation"]["dialogues"] == len(curated) + 5
    by_source = {
        name: card["train"]["by_source"].get(name, 0) + card["validation"]["by_source"].get(name, 0)
        for name in ("curated", "staff_corrections")
    }
    assert by_source == {"curated": len(curated), "staff_corrections": 5}
    train_bytes = (tmp_path / "data" / "train.jsonl").read_bytes()
    validation_bytes = (tmp_path / "data" / "validation.jsonl").read_bytes()
    assert card["sha256"]["train"] == hashlib.sha256(train_bytes).hexdigest()
    assert card["sha256"]["validation"] == hashlib.sha256(validation_bytes).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", card["sha256"]["dataset"])
    (curated_source,) = [s for s in card["sources"] if s["name"] == "curated"]
    assert curated_source["path"] == "training/data/curated_dialogues.jsonl"
    (db_source,) = [s for s in card["sources"] if s["name"] == "staff_corrections"]
    assert db_source["excluded"]["without_consent"] == 4
    # What was written reads back as it was built.
    assert read_dialogues(tmp_path / "data" / "train.jsonl") == built.train


# -- chat-template formatting --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from transformers import AutoTokenizer

    texts = [t.content for d in load_curated() for t in d.turns]
    directory = write_tiny_base_model(tmp_path_factory.mktemp("tiny-base"), texts)
    return AutoTokenizer.from_pretrained(directory)


def test_only_the_trained_replies_and_their_end_marker_are_labelled(tokenizer: Any) -> None:
    dialogue = next(d for d in load_curated() if d.id == "cur-en-101")

    text, spans = render(tokenizer, dialogue)
    encoded = encode(tokenizer, dialogue, max_length=4096)

    assert text.startswith("<|im_start|>system\n")
    replies = [t.content for t in dialogue.turns if t.train]
    assert [text[a:b] for a, b in spans] == [f"{r}<|im_end|>\n" for r in replies]
    learned = [
        tok for tok, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != -100
    ]
    assert tokenizer.decode(learned) == "".join(f"{r}<|im_end|>\n" for r in replies)
    assert all(
        label in (IGNORE_INDEX, tok)
        for tok, label in zip(encoded.input_ids, encoded.labels, strict=True)
    )


def test_a_cut_dialogue_keeps_its_first_tokens(tokenizer: Any) -> None:
    dialogue = load_curated()[0]
    encoded = encode(tokenizer, dialogue, max_length=16)
    assert len(encoded.input_ids) == len(encoded.labels) == 16
    assert encoded.trained_tokens == 0  # the system prompt alone is longer than that


def test_the_command_line_builds_from_a_database_only_with_a_consent_file(
    session: Session, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.datasets import main

    _conversation(session, patient="p-yes", reason="request", messages=REQUEST)
    _conversation(session, patient="p-no", reason="request", messages=REQUEST)
    bind = session.get_bind()
    assert isinstance(bind, Engine)
    url = bind.url.render_as_string(hide_password=False)
    consent = tmp_path / "consent.txt"
    consent.write_text("# patients who agreed\np-yes\n")

    with pytest.raises(SystemExit):
        main([str(tmp_path / "refused"), "--database-url", url])
    assert not (tmp_path / "refused").exists()

    assert main([str(tmp_path / "out"), "--database-url", url, "--consent-file", str(consent)]) == 0

    card = json.loads((tmp_path / "out" / "data_card.json").read_text())
    (db_source,) = [s for s in card["sources"] if s["name"] == "staff_corrections"]
    assert (db_source["used"], db_source["excluded"]["without_consent"]) == (1, 1)
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["dataset"] == card["sha256"]["dataset"]
