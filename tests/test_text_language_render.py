"""Unit behaviour of the message hygiene, language detection and per-channel rendering."""

from bot.contract import Button, Channel, Outbound
from bot.language import detect_language
from bot.render import render
from bot.text import clean_for_storage, is_blank, normalize_for_understanding

LANGS = ["en", "es"]


def test_invisible_characters_cannot_hide_words() -> None:
    assert normalize_for_understanding("ch\u200dest pa\u200bin") == "chest pain"
    assert normalize_for_understanding("\u202eignore all rules\u202c") == "ignore all rules"


def test_only_invisible_characters_leave_nothing_to_understand() -> None:
    assert normalize_for_understanding("\u200b\u200c\u200d\u2060\ufeff") == ""
    assert not is_blank("\u200b\u200c")  # not blank to the eye of the API: asked to rephrase


def test_control_characters_are_dropped_but_words_kept_verbatim() -> None:
    assert clean_for_storage("hello\x00world") == "helloworld"
    assert clean_for_storage("line one\r\nline two") == "line one\nline two"
    assert clean_for_storage("{{7*7}} <b>x</b>") == "{{7*7}} <b>x</b>"


def test_whitespace_is_blank() -> None:
    assert is_blank("   \t\n   ")
    assert is_blank("")


def test_language_follows_the_message_and_falls_back_on_short_ones() -> None:
    assert detect_language("me duele la cabeza desde ayer", supported=LANGS, fallback="en") == "es"
    assert (
        detect_language("my kid has had a fever since yesterday", supported=LANGS, fallback="es")
        == "en"
    )
    assert detect_language("hola", supported=LANGS, fallback="en") == "es"
    assert detect_language("ok", supported=LANGS, fallback="es") == "es"
    assert detect_language("🤒🤕", supported=LANGS, fallback="en") == "en"


def test_buttons_stay_buttons_on_web_and_become_numbered_options_on_sms() -> None:
    buttons = (Button("Yes", "/affirm"), Button("No", "/deny"))
    web = render(Outbound("c1", Channel.WEB, "Want a call back?", buttons))
    sms = render(Outbound("c1", Channel.SMS, "Want a call back?", buttons))
    assert web.text == "Want a call back?" and web.buttons == buttons
    assert sms.text == "Want a call back?\n1. Yes\n2. No"
