"""The manifest as vmgenie's YamlDotNet 13.1.1 binds it: exactly twelve keys, scalars,
an Int32 generation; written with every string quoted."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.gmi.manifest import (
    VMGENIE_KEYS,
    Manifest,
    ManifestError,
    bind_manifest,
    manifest_yaml,
    parse_manifest,
    vmgenie_view,
)
from orchestrator.gmi.yamldotnet import int32_from_scalar, quote

SHA = "b" * 64
GOOD = {
    "gmi_version": "'1.0'",
    "os": "Ubuntu",
    "version": "'24.10'",
    "created": "'2025-07-30T18:09:36Z'",
    "updated": "'2025-07-30T18:09:36Z'",
    "vm_name": "GMI Ubuntu 24.10",
    "hyperv_generation": "2",
    "maintainer": "m",
    "maintainer_email": "e@example.org",
    "source_url": "https://example.org",
    "description": "d",
    "checksum_sha256": SHA,
}


def text(**changes: str | None) -> str:
    data = {**GOOD, **changes}
    return "".join(f"{k}: {v}\n" for k, v in data.items() if v is not None)


def binding_error(doc: str) -> str:
    with pytest.raises(ManifestError) as exc:
        bind_manifest(doc)
    assert exc.value.vmgenie_throws
    return str(exc.value)


def test_a_good_manifest_binds_and_checks() -> None:
    m = parse_manifest(text())
    assert (m.version, m.hyperv_generation, m.created) == ("24.10", 2, "2025-07-30T18:09:36Z")


def test_an_extra_key_throws_with_vmgenies_own_message() -> None:
    msg = binding_error(text() + "os_pretty_name: Ubuntu 24.10\n")
    assert "Property 'os_pretty_name' not found on type 'VmGenie.Artifacts.GmiMetadata'." in msg
    assert "line 13" in msg and "move other facts to a sidecar" in msg


def test_keys_are_case_sensitive_and_exact() -> None:
    assert "Property 'OS' not found" in binding_error(text(os=None) + "OS: Ubuntu\n")
    assert "Property 'vmName' not found" in binding_error(text(vm_name=None) + "vmName: x\n")


@pytest.mark.parametrize(
    ("value", "vmgenie_says"),
    [
        ("[Ubuntu]", "No node deserializer was able to deserialize the node into type System.String"),
        ("{a: 1}", "Exception during deserialization"),
        ("\n  - a\n  - b", "No node deserializer"),
    ],
)
def test_a_non_scalar_string_value_throws(value: str, vmgenie_says: str) -> None:
    msg = binding_error(text(description=value))
    assert vmgenie_says in msg and "description" in msg


@pytest.mark.parametrize(
    ("scalar", "expected"),
    [
        ("2", 2),
        ("'2'", 2),  # quoting does not matter to a typed property
        ('"2"', 2),
        ("+2", 2),
        ("0x2", 2),
        ("0b10", 2),
        ("02", 2),  # a leading 0 is octal to YamlDotNet
        ("010", 8),
        ("2_0", 20),  # underscores are skipped
        ("1:0", 60),  # base 60
        ("0", 0),
        ("-0", 0),
        ("~", 0),  # null: default(int)
        ("", 0),
        ("{}", 0),  # an empty mapping makes a default Int32
        ("2147483647", 2147483647),
        ("-2147483648", -2147483648),
    ],
)
def test_hyperv_generation_binds_as_yamldotnet_reads_an_int32(scalar: str, expected: int) -> None:
    bound = bind_manifest(text(hyperv_generation=scalar))
    assert bound.values["hyperv_generation"] == expected


@pytest.mark.parametrize(
    "scalar",
    [
        "2.0",
        "0X2",
        "08",
        "0x",
        "0b",
        "0b2",
        "'-'",
        "1e0",
        "two",
        "true",
        "''",
        "2147483648",
        "-2147483649",
        "1:x",
    ],
)
def test_hyperv_generation_that_is_not_an_int32_throws(scalar: str) -> None:
    msg = binding_error(text(hyperv_generation=scalar))
    assert "hyperv_generation" in msg and "is not an Int32" in msg
    assert "Exception during deserialization" in msg  # what vmgenie prints


def test_hyperv_generation_as_a_list_throws() -> None:
    assert "System.Int32" in binding_error(text(hyperv_generation="[2]"))
    assert "Property 'a' not found on type 'System.Int32'." in binding_error(text(hyperv_generation="{a: 1}"))


def test_int32_reader_directly() -> None:
    assert int32_from_scalar("0x7fffffff") == 2**31 - 1
    assert int32_from_scalar("-0x80000000") == -(2**31)
    with pytest.raises(ValueError, match="OverflowException"):
        int32_from_scalar("0x80000000")
    with pytest.raises(ValueError, match="FormatException"):
        int32_from_scalar("1.5")


def test_unquoted_scalars_bind_as_their_text() -> None:
    # PyYAML would read 24.10 as 24.1, 010 as 8 and the timestamp as a datetime;
    # YamlDotNet gives a string property the scalar's text.
    bound = bind_manifest(
        text(version="24.10", gmi_version="1.0", created="2025-07-30T18:09:36Z", maintainer="010")
    )
    assert bound.values["version"] == "24.10" and bound.values["gmi_version"] == "1.0"
    assert bound.values["created"] == "2025-07-30T18:09:36Z" and bound.values["maintainer"] == "010"
    assert bind_manifest(text(version="12")).values["version"] == "12"
    assert bind_manifest(text(description="yes")).values["description"] == "yes"


def test_null_strings_bind_but_are_not_a_complete_manifest() -> None:
    bound = bind_manifest(text(description="~", source_url="", vm_name="null"))
    assert bound.values["description"] is None and bound.values["source_url"] is None
    assert vmgenie_view(bound)["vm_name"] == "GMI Ubuntu 24.10"  # EnsureDefaults
    with pytest.raises(ManifestError) as exc:
        parse_manifest(text(description="~"))
    assert not exc.value.vmgenie_throws and "description: is null" in str(exc.value)


def test_missing_keys_are_gmi_fsms_rule_not_vmgenies() -> None:
    doc = text(checksum_sha256=None, maintainer=None, vm_name=None, hyperv_generation="1")
    bound = bind_manifest(doc)  # vmgenie binds it
    view = vmgenie_view(bound)
    assert view["vm_name"] == "GMI Ubuntu 24.10" and view["checksum_sha256"] == ""
    with pytest.raises(ManifestError) as exc:
        parse_manifest(doc)
    assert not exc.value.vmgenie_throws
    assert "checksum_sha256: required key is missing" in str(exc.value)
    assert "maintainer: required key is missing" in str(exc.value)


def test_generation_zero_is_two_to_vmgenie() -> None:
    assert vmgenie_view(bind_manifest(text(hyperv_generation="0")))["hyperv_generation"] == 2


def test_a_repeated_key_binds_and_the_last_wins() -> None:
    bound = bind_manifest(text() + "description: second\n")
    assert bound.values["description"] == "second" and bound.duplicates == ["description"]


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        ("", "the document is empty"),
        ("- a\n- b\n", "not a mapping"),
        (text() + "---\nos: x\n", "second YAML document"),
        (text(os="&o Ubuntu", description="*o"), "an alias"),
        (text(version="!!str 12"), "explicit tag"),
        ("os: [unclosed\n", "not valid YAML"),
        ("? [a, b]\n: c\n", "not a plain name"),
        ("os: " + "[" * 2000 + "]" * 2000 + "\n", "nest"),  # libyaml: "maximum nesting depth"
    ],
)
def test_documents_vmgenie_cannot_bind(doc: str, words: str) -> None:
    assert words in binding_error(doc)


def test_upper_case_checksum_is_accepted_as_vmgenie_compares_case_insensitively() -> None:
    m = parse_manifest(text(checksum_sha256="B" * 64))
    assert m.disk_sha256 == "b" * 64
    with pytest.raises(ManifestError, match="checksum_sha256"):
        parse_manifest(text(checksum_sha256="xyz"))


TRICKY = [
    "24.10",
    "12",
    "010",
    "yes",
    "null",
    "~",
    "",
    " leading and trailing ",
    'quote " and backslash \\',
    "line\nbreak\ttab",
    "unicode: Débian 🐧",
    "control \x07 bell \x7f del \x85 nel \u2028 ls \ufeff bom",
    "#not a comment",
    "- not a list",
    "key: not a mapping",
]


@pytest.mark.parametrize("value", TRICKY)
def test_written_strings_read_back_exactly_by_both_readers(value: str) -> None:
    m = Manifest(
        gmi_version="1.0",
        os="Ubuntu",
        version="24.10",
        created="2025-07-30T18:09:36Z",
        updated="2025-07-30T18:09:36Z",
        vm_name="GMI Ubuntu 24.10",
        hyperv_generation=2,
        maintainer=value,
        maintainer_email="e",
        source_url="u",
        description=value,
        checksum_sha256=SHA,
    )
    doc = manifest_yaml(m)
    assert bind_manifest(doc).values["description"] == value  # as vmgenie binds it
    assert yaml.safe_load(doc)["description"] == value  # and as PyYAML reads it
    assert parse_manifest(doc) == m


def test_manifest_is_written_with_exactly_the_twelve_keys_all_strings_quoted() -> None:
    doc = manifest_yaml(parse_manifest(text()))
    lines = [ln for ln in doc.splitlines() if not ln.startswith("#")]
    assert [ln.split(":", 1)[0] for ln in lines] == list(VMGENIE_KEYS)
    for ln in lines:
        key, value = ln.split(": ", 1)
        assert value == "2" if key == "hyperv_generation" else value.startswith('"'), ln
    assert 'version: "24.10"' in doc and 'created: "2025-07-30T18:09:36Z"' in doc
    assert quote("24.10") == '"24.10"'
