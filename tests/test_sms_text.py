"""SMS text fitting (GSM-7, segments, shortening, splitting, option replies) and keywords."""

# The look-alike quotes and dashes that RUF001 warns about are this file's test data.
# ruff: noqa: RUF001

from __future__ import annotations

import random
import re
import time

import pytest

from bot.render import option_choice
from channels.sms.keywords import (
    DEFAULT_EXTRA_ES,
    HELP,
    OPT_IN,
    OPT_OUT,
    KeywordSet,
    classify,
    keyword_set,
)
from channels.sms.text import encoding, fit_for_sms, segments, to_gsm7

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    HAVE_HYPOTHESIS = True
except ImportError:  # the property tests below are then covered by the seeded fuzz test only
    HAVE_HYPOTHESIS = False


def squash(text: str) -> str:
    return " ".join(text.split())


# --- Encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Your appointment is on Monday at 9:30.",
        "Mañana a las 10. ¿Él viene? ¡Ya! Ñoño, pingüino, Ü, É, à",
        "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà",
        "line one\nline two\r\n",
        "Extension: ^ { } \\ [ ~ ] | € \x0c",
    ],
)
def test_gsm7_alphabet_and_extension_table(text: str) -> None:
    assert encoding(text) == "GSM-7"


@pytest.mark.parametrize(
    "text",
    [
        "¿Cuándo es mi cita?",  # á is not in the GSM-7 basic set
        "Información",
        "Fever 🤒",
        "It’s fine",  # curly apostrophe, before to_gsm7
        "tab\there",
        "back`tick",
        "esc\x1bape",  # ESC is the escape code, not a character
        "ç lower-case cedilla",  # only Ç is in the table
        "38 °C",
    ],
)
def test_anything_outside_gsm7_forces_ucs2(text: str) -> None:
    assert encoding(text) == "UCS-2"


# --- Segments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", 1),
        ("a", 1),
        ("a" * 160, 1),
        ("a" * 161, 2),
        ("a" * 153 * 2, 2),
        ("a" * 307, 3),
        ("a" * 153 * 3, 3),
        ("a" * 460, 4),
        # Extension characters cost two septets.
        ("€" * 80, 1),
        ("€" * 80 + "a", 2),
        ("{" * 76 + "a" * 154, 2),
        # 306 septets would fit two parts, but the escape sequence cannot straddle them.
        ("a" * 152 + "€" + "a" * 152, 3),
        ("a" * 151 + "€" + "a" * 153, 2),
        ("{" * 153, 3),  # 76 escape sequences (152 septets) per part
        # UCS-2.
        ("ó" * 70, 1),
        ("ó" * 71, 2),
        ("ó" * 67 * 2, 2),
        ("ó" * 135, 3),
        ("😀" * 35, 1),  # 70 UTF-16 code units
        ("😀" * 35 + "a", 2),
        ("😀" * 66, 2),  # 132 units
        ("😀" * 66 + "a", 2),
        ("😀" * 66 + "ab", 3),
        ("😀" * 67, 3),  # 134 units, but only 33 pairs fit in 67 units
        # The surrogate pair cannot straddle two parts either.
        ("ó" * 66 + "😀" + "ó" * 66, 3),
        ("ó" * 65 + "😀" + "ó" * 67, 2),
    ],
)
def test_segment_counts(text: str, expected: int) -> None:
    assert segments(text) == expected


def test_one_character_outside_gsm7_costs_segments() -> None:
    assert segments("a" * 100) == 1
    assert segments("a" * 99 + "’") == 2
    assert segments(to_gsm7("a" * 99 + "’")) == 1


# --- GSM-7 replacements --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typographic", "plain"),
    [
        ("‘single’ ‚low‛", "'single' 'low'"),
        ("“double” „low‟", '"double" "low"'),
        ("«comillas» ‹single›", "\"comillas\" 'single'"),
        ("5′ 11″", "5' 11\""),
        ("en – em — bar ― minus −5 fig ‒", "en - em - bar - minus -5 fig -"),
        ("hy‐phen non‑breaking", "hy-phen non-breaking"),
        ("wait…", "wait..."),
        ("• one\n• two", "- one\n- two"),
        ("no\u00a0break thin\u2009space narrow\u202fnbsp ideo\u3000graphic", None),
        ("tab\tseparated", "tab separated"),
        ("Brand™ ©2024 ®", "BrandTM (C)2024 (R)"),
        ("temp ≥ 38 and ≤ 40", "temp >= 38 and <= 40"),
        ("zero\u200bwidth soft\u00adhyphen", "zerowidth softhyphen"),
        ("line\u2028separator", "line\nseparator"),
        ("caf\u0065\u0301", "café"),  # composed to the GSM-7 é
    ],
)
def test_typography_becomes_gsm7(typographic: str, plain: str | None) -> None:
    converted = to_gsm7(typographic)
    if plain is not None:
        assert converted == plain
    assert encoding(converted) == "GSM-7"


@pytest.mark.parametrize(
    "text",
    [
        "Mañana él irá. ¿Cuándo? ¡Ahora! Pingüino, Ñu, Ü.",
        "Información sobre la vacuna: útil para niños.",
        "Fever 🤒 — call us",
        "👨‍👩‍👧 family emoji keep their joiners",
    ],
)
def test_letters_and_emoji_are_left_alone(text: str) -> None:
    converted = to_gsm7(text)
    for char in "ñéíáóúüÑÜ🤒👨‍👩‍👧":
        assert converted.count(char) == text.count(char)


def test_spanish_with_accents_outside_gsm7_stays_ucs2() -> None:
    text = "Su cita es el miércoles. Llegue 15 minutos antes, por favor. Gracias por su atención."
    assert to_gsm7(text) == text
    assert encoding(to_gsm7(text)) == "UCS-2"
    assert fit_for_sms(text, shorten=True) == [text]


# --- Shortening ----------------------------------------------------------------------------

KB_ANSWER = (
    "Flu vaccines are available at all our clinics from October to March. "
    "Adults and children over 6 months can get one; no appointment is needed at the "
    "walk-in desk. Dr. Smith recommends it especially for people over 65, pregnant women "
    "and anyone with asthma or diabetes. Most insurance plans cover it fully, and the "
    "cash price is $25.50. You may have a sore arm or a mild fever for a day or two, "
    "which is normal. If you have had a severe allergic reaction to a vaccine before, "
    "talk to your doctor first. Bring your insurance card and a photo ID.\n"
    "Sources: [1] Flu vaccine; [2] Clinic hours; [3] Insurance and payment"
)


def test_short_replies_are_sent_as_they_are() -> None:
    assert fit_for_sms("See you tomorrow at 9 a.m. Dr. Lee", shorten=True) == [
        "See you tomorrow at 9 a.m. Dr. Lee"
    ]
    assert fit_for_sms("  Hi!\n", shorten=False) == ["Hi!"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t\u00a0"])
def test_blank_reply_gives_no_bodies(text: str) -> None:
    assert fit_for_sms(text, shorten=True) == []
    assert fit_for_sms(text, shorten=False) == []


def test_shortening_keeps_whole_sentences_and_the_sources_line() -> None:
    [body] = fit_for_sms(KB_ANSWER, shorten=True)
    assert len(body) <= 320
    answer, sources = body.rsplit("\n", 1)
    assert sources == "Sources: [1] Flu vaccine; [2] Clinic hours; [3] Insurance and payment"
    assert KB_ANSWER.startswith(answer)
    assert answer.endswith(".")
    assert not answer.endswith("Dr.")
    # As many sentences as fit: the next one (which starts with "Dr. Smith") would not.
    assert answer.endswith("walk-in desk.")
    next_sentence = KB_ANSWER[len(answer) + 1 :].split("diabetes.")[0] + "diabetes."
    assert next_sentence.startswith("Dr. Smith recommends")
    assert len(answer) + 1 + len(next_sentence) + 1 + len(sources) > 320


def test_spanish_answer_keeps_fuentes_line_and_handles_inverted_marks() -> None:
    text = (
        "¿Necesita la vacuna? ¡Sí! La vacuna contra la gripe se ofrece de octubre a marzo. "
        "No hace falta cita. " * 6 + "\nFuentes: [1] Vacuna contra la gripe; [2] Horario"
    )
    [body] = fit_for_sms(text, shorten=True)
    assert len(body) <= 320
    assert body.endswith("\nFuentes: [1] Vacuna contra la gripe; [2] Horario")
    assert body.startswith("¿Necesita la vacuna? ¡Sí!")
    assert body.split("\n")[0].endswith(("cita.", "marzo.", "¡Sí!", "vacuna?"))


def test_overlong_first_sentence_is_cut_at_a_word_with_ellipsis() -> None:
    sentence = " ".join(f"word{i}" for i in range(200)) + "."
    sources = "Sources: [1] Something"
    [body] = fit_for_sms(f"{sentence}\n{sources}", shorten=True)
    assert len(body) <= 320
    answer, kept_sources = body.rsplit("\n", 1)
    assert kept_sources == sources
    assert answer.endswith("...")
    assert re.fullmatch(r"(word\d+ )*word\d+\.\.\.", answer)
    assert sentence.startswith(answer.removesuffix("..."))


def test_overlong_first_sentence_without_sources() -> None:
    [body] = fit_for_sms("x " * 400, shorten=True)
    assert len(body) <= 320
    assert body.endswith("x...")


def test_a_single_giant_word_is_hard_cut() -> None:
    [body] = fit_for_sms("y" * 1000, shorten=True)
    assert body == "y" * 317 + "..."


def test_runaway_sources_line_does_not_crowd_out_the_answer() -> None:
    sources = "Sources: " + "; ".join(f"[{i}] Document number {i}" for i in range(40))
    [body] = fit_for_sms(f"Short answer. Another sentence.\n{sources}", shorten=True)
    assert len(body) <= 320
    assert body.startswith("Short answer. Another sentence.\nSources: [0] Document")
    assert body.endswith("...")


def test_only_a_sources_line_is_still_fitted() -> None:
    sources = "Fuentes: " + "; ".join(f"[{i}] Documento {i}" for i in range(60))
    [body] = fit_for_sms(sources, shorten=True)
    assert len(body) <= 320
    assert body.startswith("Fuentes: [0]")


def test_shortened_reply_is_gsm7_when_it_can_be() -> None:
    text = "It’s a “quick” answer — really… " * 20 + "\nSources: [1] Clinic hours"
    [body] = fit_for_sms(text, shorten=True)
    assert encoding(body) == "GSM-7"
    assert segments(body) <= 3


def test_preferred_below_minimum_is_refused() -> None:
    with pytest.raises(ValueError):
        fit_for_sms("text", shorten=True, preferred=5)
    with pytest.raises(ValueError):
        fit_for_sms("text", shorten=False, limit=0)


# --- Splitting (never shortened) -------------------------------------------------------------


def safety_text(length: int) -> str:
    sentences = [
        "Call 911 now if you have chest pain, trouble breathing or weakness on one side.",
        "Dr. Smith says a temperature above 38.5 needs a call to the clinic.",
        "Give acetaminophen every 4 to 6 hours, e.g. 15 mg per kg, i.e. not more often.",
        "The nurse line is open from 8 a.m. to 8 p.m. every day.",
        "¿Tiene dificultad para respirar? ¡Llame al 911 ahora mismo!",
        "Reply with: 1. Yes 2. No 3. Not sure.",
    ]
    words: list[str] = []
    i = 0
    while len(" ".join(words)) < length:
        words.append(sentences[i % len(sentences)])
        i += 1
    return " ".join(words)


def test_long_safety_text_is_split_without_losing_a_word() -> None:
    text = safety_text(5000)
    parts = fit_for_sms(text, shorten=False)
    assert len(parts) >= 4
    assert all(0 < len(part) <= 1600 for part in parts)
    assert squash(" ".join(parts)) == squash(text)
    # Every part ends at the end of a sentence.
    assert all(part.endswith((".", "!", "?")) for part in parts)


def test_shorten_false_never_cuts_even_when_above_preferred() -> None:
    text = safety_text(900)
    assert fit_for_sms(text, shorten=False) == [text]


@pytest.mark.parametrize("limit", [40, 60, 75, 90, 120, 200])
def test_splitting_keeps_numbers_abbreviations_and_options_together(limit: int) -> None:
    parts = fit_for_sms(safety_text(2000), shorten=False, limit=limit)
    assert all(0 < len(part) <= limit for part in parts)
    for part in parts:
        assert not part.endswith(("Dr.", " 38.", "e.g.", "i.e.", " a.m.", " 1.", " 2.", " 3."))
        assert not part.startswith((".5", "Smith", "5 needs"))
    joined = "\n".join(parts)
    assert "38.5" in joined
    assert "Dr. Smith" in joined


def test_word_fallback_keeps_abbreviations_with_the_next_word() -> None:
    text = "Please call the clinic and ask for Dr. Smith or option 1. Yes today without delay"
    for limit in range(20, len(text)):
        parts = fit_for_sms(text, shorten=False, limit=limit)
        assert squash(" ".join(parts)) == text
        for part in parts:
            assert not part.endswith(("Dr.", "1.")), (limit, parts)


def test_split_points_prefer_sentences_then_words_then_hard_cuts() -> None:
    text = "First sentence here. Second sentence is a bit longer than that."
    assert fit_for_sms(text, shorten=False, limit=30) == [
        "First sentence here.",
        "Second sentence is a bit",
        "longer than that.",
    ]
    assert fit_for_sms("z" * 3500, shorten=False) == ["z" * 1600, "z" * 1600, "z" * 300]


def test_a_plain_no_ends_a_sentence() -> None:
    text = "Is it urgent? The answer is no. Call us tomorrow."
    assert fit_for_sms(text, shorten=False, limit=35) == [
        "Is it urgent? The answer is no.",
        "Call us tomorrow.",
    ]


def test_word_cut_with_ellipsis_fits_exactly() -> None:
    assert fit_for_sms("abcd " * 10, shorten=True, preferred=20) == ["abcd abcd abcd..."]
    assert fit_for_sms("abcd, " * 10, shorten=True, preferred=20) == ["abcd, abcd, abcd..."]


def test_long_unbroken_text_is_split_in_linear_time() -> None:
    # A pasted URL or data blob has no spaces; scanning it must not be quadratic.
    started = time.perf_counter()
    for text in ("x" * 50_000, "a." * 25_000, "1. " * 15_000):
        parts = fit_for_sms(text, shorten=False)
        assert "".join("".join(parts).split()) == "".join(text.split())
        assert len(fit_for_sms(text, shorten=True)) == 1
    assert time.perf_counter() - started < 5


def test_line_breaks_are_boundaries() -> None:
    text = "Options\n1. Yes\n2. No"
    assert fit_for_sms(text, shorten=False, limit=12) == ["Options", "1. Yes\n2. No"]


def test_question_and_exclamation_are_boundaries_in_spanish() -> None:
    text = "¿Tiene fiebre? ¡Llame al 911! Gracias."
    assert fit_for_sms(text, shorten=False, limit=20) == [
        "¿Tiene fiebre?",
        "¡Llame al 911!",
        "Gracias.",
    ]


def random_text(rng: random.Random) -> str:
    pieces = [
        "Dr.", "Smith", "38.5", "e.g.", "a.m.", "1.", "Yes", "word", "fever.", "¿Qué?",
        "¡Ya!", "“quoted”", "dash—", "…", "€5", "🤒", "niño", "información", "\n", "\t",
        "\u00a0", "x" * rng.randint(1, 30),
    ]  # fmt: skip
    return " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 300)))


def check_split_keeps_content(text: str, limit: int) -> None:
    parts = fit_for_sms(text, shorten=False, limit=limit)
    assert all(part.strip() and len(part) <= limit for part in parts)
    assert squash(" ".join(parts)) == squash(to_gsm7(text))


def check_shortening_bounds(text: str, preferred: int) -> None:
    parts = fit_for_sms(text, shorten=True, preferred=preferred)
    assert len(parts) <= 1
    assert all(part.strip() and len(part) <= preferred for part in parts)


def test_seeded_fuzz_split_and_shorten() -> None:
    rng = random.Random(20240611)
    for _ in range(300):
        text = random_text(rng)
        check_split_keeps_content(text, limit=rng.randint(31, 400))
        check_shortening_bounds(text, preferred=rng.randint(20, 400))


if HAVE_HYPOTHESIS:
    # Words shorter than the limit: a hard cut inside a word is the only way to change the
    # space-joined text, and that is tested separately above.
    words = st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20
    ).filter(lambda word: not any(char.isspace() for char in word))
    separators = st.sampled_from([" ", "  ", "\n", ". ", "! ", "? ", ".\n", "\t", "\u00a0"])
    texts = st.lists(st.tuples(words, separators), max_size=120).map(
        lambda pairs: "".join(word + sep for word, sep in pairs)
    )

    @settings(max_examples=300, deadline=None)
    @given(text=texts, limit=st.integers(min_value=31, max_value=500))
    def test_property_splitting_never_loses_content(text: str, limit: int) -> None:
        check_split_keeps_content(text, limit)

    @settings(max_examples=300, deadline=None)
    @given(text=st.text(), limit=st.integers(min_value=1, max_value=200))
    def test_property_parts_are_never_blank_or_too_long(text: str, limit: int) -> None:
        parts = fit_for_sms(text, shorten=False, limit=limit)
        assert all(part.strip() and len(part) <= limit for part in parts)
        assert "".join("".join(parts).split()) == "".join(to_gsm7(text).split())

    @settings(max_examples=300, deadline=None)
    @given(text=texts, preferred=st.integers(min_value=20, max_value=600))
    def test_property_shortening_stays_within_preferred(text: str, preferred: int) -> None:
        check_shortening_bounds(text, preferred)

    @settings(max_examples=300, deadline=None)
    @given(text=st.text())
    def test_property_to_gsm7_is_idempotent_and_segments_positive(text: str) -> None:
        once = to_gsm7(text)
        assert to_gsm7(once) == once
        assert segments(once) >= 1

else:

    def test_property_tests_need_hypothesis() -> None:
        pytest.skip("hypothesis is not installed; the seeded fuzz test covers the properties")


# --- Numbered options ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "count", "expected"),
    [
        ("2", 3, 2),
        (" 2 ", 3, 2),
        ("2.", 3, 2),
        ("#2", 3, 2),
        ("2)", 3, 2),
        ("option 2", 3, 2),
        ("Option 2", 3, 2),
        ("opción 2", 3, 2),
        ("OPCIÓN 3", 3, 3),
        ("opcion 1", 3, 1),
        ("opcio\u0301n 1", 3, 1),  # decomposed accent
        ("1", 1, 1),
        ("\n3\n", 3, 3),
        ("4", 3, None),
        ("0", 3, None),
        ("-1", 3, None),
        ("2", 0, None),
        ("", 3, None),
        ("two", 3, None),
        ("2 days", 3, None),
        ("I have 2 kids", 3, None),
        ("2 or 3", 3, None),
        ("2.5", 3, None),
        ("option", 3, None),
        ("#", 3, None),
    ],
)
def test_option_choice(reply: str, count: int, expected: int | None) -> None:
    assert option_choice(reply, count) == expected


# --- Carrier keywords ----------------------------------------------------------------------


def test_default_keywords_match_twilio() -> None:
    twilio_opt_out = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
    assert twilio_opt_out == OPT_OUT
    assert {"START", "YES", "UNSTOP"} == OPT_IN
    assert {"HELP", "INFO"} == HELP
    assert keyword_set() == KeywordSet(opt_out=OPT_OUT, opt_in=OPT_IN, help=HELP)


SPANISH = keyword_set(
    extra_opt_out=DEFAULT_EXTRA_ES["opt_out"],
    extra_opt_in=DEFAULT_EXTRA_ES["opt_in"],
    extra_help=DEFAULT_EXTRA_ES["help"],
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("STOP", "opt_out"),
        ("stop", "opt_out"),
        ("  Stop.  ", "opt_out"),
        ("STOP!!", "opt_out"),
        ("stopall", "opt_out"),
        ("Unsubscribe", "opt_out"),
        ("cancel", "opt_out"),  # carriers treat it so; see the comment on OPT_OUT
        ("end", "opt_out"),
        ("quit", "opt_out"),
        ("revoke", "opt_out"),
        ("optout", "opt_out"),
        ("start", "opt_in"),
        ("Yes", "opt_in"),
        ("unstop", "opt_in"),
        ("help", "help"),
        ("Info.", "help"),
        ("alto", "opt_out"),
        ("¡Alto!", "opt_out"),
        ("parar", "opt_out"),
        ("Baja", "opt_out"),
        ("CANCELAR", "opt_out"),
        ("detener", "opt_out"),
        ("comenzar", "opt_in"),
        ("Iniciar", "opt_in"),
        ("reanudar", "opt_in"),
        ("ayuda", "help"),
        ("Ayúda", "help"),
        ("AYÚDA!", "help"),
        ("stop texting me about my appointment", None),
        ("please stop", None),
        ("stop please", None),
        ("cancel my appointment", None),
        ("help me my child has a fever", None),
        ("stop?", None),
        ("stops", None),
        ("", None),
        ("   ", None),
        ("sí", None),
    ],
)
def test_classify_with_spanish_extras(message: str, expected: str | None) -> None:
    assert classify(message, SPANISH) == expected


def test_spanish_words_need_configuring() -> None:
    default = keyword_set()
    assert classify("alto", default) is None
    assert classify("ayuda", default) is None
    assert classify("STOP", default) == "opt_out"


def test_configured_keywords_are_folded() -> None:
    keywords = keyword_set(extra_help=["Socorro", "  ÁYUDAME "])
    assert "AYUDAME" in keywords.help
    assert classify("ayudame", keywords) == "help"
    assert classify("SOCORRO.", keywords) == "help"


def test_keyword_in_two_categories_is_refused() -> None:
    with pytest.raises(ValueError, match="more than one category"):
        keyword_set(extra_opt_in=["stop"])
    with pytest.raises(ValueError, match="blank"):
        keyword_set(extra_help=["  "])
