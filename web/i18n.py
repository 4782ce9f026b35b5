"""English and Simplified Chinese UI strings. The browser's language picks one by default.

Strings live in web/messages/*.yml, one file per area of the UI, each key mapping to
``{en: ..., zh-CN: ...}``. Keeping areas in separate files lets features add their strings
without touching each other's; a key defined twice, or missing a language, is an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import yaml

LANGUAGES = ("en", "zh-CN")
MESSAGES_DIR = Path(__file__).parent / "messages"


class MessageError(ValueError):
    """A message catalogue is malformed."""


def load_messages(directory: Path = MESSAGES_DIR) -> dict[str, dict[str, str]]:
    """Merge every catalogue in ``directory`` into ``{language: {key: text}}``."""
    merged: dict[str, dict[str, str]] = {lang: {} for lang in LANGUAGES}
    origin: dict[str, str] = {}
    for path in sorted(directory.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise MessageError(f"{path.name}: expected a mapping of message keys")
        for key, texts in data.items():
            if key in origin:
                raise MessageError(f"{path.name}: key {key!r} is already defined in {origin[key]}")
            if not isinstance(texts, dict) or set(texts) != set(LANGUAGES):
                raise MessageError(
                    f"{path.name}: key {key!r} must have exactly the languages {LANGUAGES}"
                )
            for lang in LANGUAGES:
                if not isinstance(texts[lang], str) or not texts[lang]:
                    raise MessageError(f"{path.name}: key {key!r} has an empty {lang} text")
                merged[lang][key] = texts[lang]
            origin[key] = path.name
    return merged


@cache
def messages() -> Mapping[str, Mapping[str, str]]:
    """The shipped catalogues, loaded once per process."""
    return load_messages()


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    """The `lang` cookie if valid, else the first supported language the browser asks for."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "en"
