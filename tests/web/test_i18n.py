"""The message catalogues: both languages for every key, no key defined twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from vpsmon.web.i18n import LANGUAGES, MessageError, load_messages, messages


def test_shipped_catalogues_have_both_languages_for_every_key() -> None:
    loaded = messages()
    assert set(loaded) == set(LANGUAGES)
    assert set(loaded["en"]) == set(loaded["zh-CN"])
    assert loaded["zh-CN"]["login.heading"] == "登录"


def test_a_key_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text('x:\n  en: "A"\n  zh-CN: "甲"\n', encoding="utf-8")
    (tmp_path / "b.yml").write_text('x:\n  en: "B"\n  zh-CN: "乙"\n', encoding="utf-8")
    with pytest.raises(MessageError, match="'x' is already defined in a.yml"):
        load_messages(tmp_path)


def test_a_key_missing_chinese_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.yml").write_text('x:\n  en: "A"\n', encoding="utf-8")
    with pytest.raises(MessageError, match="exactly the languages"):
        load_messages(tmp_path)
