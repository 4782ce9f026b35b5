from __future__ import annotations

from collector_testkit import by_name, samples

from vpsmon.exporter.collectors.os import SPEC, os_families, os_version, parse_os_release


def test_os_release_unquotes_values_and_ignores_comments() -> None:
    release = parse_os_release(
        '# comment\nNAME="Debian GNU/Linux"\nID=debian\n'
        'VARIANT=\'Server Edition\'\nPRETTY_NAME="say \\"hi\\""\nnot an assignment\n'
    )
    assert release == {
        "NAME": "Debian GNU/Linux",
        "ID": "debian",
        "VARIANT": "Server Edition",
        "PRETTY_NAME": 'say "hi"',
    }


def test_os_version_is_the_major_minor_part_of_version_id() -> None:
    assert os_version("22.04") == 22.04
    assert os_version("11.5.1") == 11.5
    assert os_version("12") == 12
    assert os_version("") == 0
    assert os_version("rolling") == 0


def test_os_info_has_node_exporters_labels_from_usr_lib_when_etc_is_missing(
    fixture_context,
) -> None:
    families = by_name(SPEC.create(fixture_context())())
    info = families["node_os_info"]
    assert info.label_names == (
        "build_id",
        "id",
        "id_like",
        "image_id",
        "image_version",
        "name",
        "pretty_name",
        "variant",
        "variant_id",
        "version",
        "version_codename",
        "version_id",
    )
    values = dict(zip(info.label_names, info.samples[0][0], strict=True))
    assert values["pretty_name"] == "Ubuntu 22.04.3 LTS"
    assert values["version_codename"] == "jammy"
    assert values["build_id"] == ""
    assert samples(families["node_os_version"]) == {("ubuntu", "debian", "Ubuntu"): 22.04}


def test_os_etc_os_release_wins_over_usr_lib(fixture_context, tmp_path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text("ID=arch\nNAME=Arch\n")
    families = by_name(SPEC.create(fixture_context(rootfs=tmp_path))())
    assert "node_os_version" not in families, "no VERSION_ID, no version series"
    assert families["node_os_info"].samples[0][0][1] == "arch"


def test_os_without_any_os_release_exposes_nothing(fixture_context, tmp_path) -> None:
    assert list(SPEC.create(fixture_context(rootfs=tmp_path))()) == []


def test_os_support_end_becomes_a_timestamp() -> None:
    families = by_name(os_families({"ID": "fedora", "SUPPORT_END": "2025-05-13"}))
    assert families["node_os_support_end_timestamp_seconds"].samples == [((), 1747094400.0)]
    assert "node_os_support_end_timestamp_seconds" not in by_name(
        os_families({"SUPPORT_END": "someday"})
    )
