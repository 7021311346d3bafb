"""Publishing into a vmgenie repository index: the new entry first, exactly ten keys,
the URL ending in the zip's name, other entries kept as written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import main
from orchestrator.gmi.hashing import crc64nvme_file
from orchestrator.gmi.publish import INDEX_KEYS, PACKAGE_TARGET, PublishError, crc64nvme_base64, publish
from orchestrator.gmi.yamldotnet import bind_mapping, parse_document
from tests.support.gmi_fixtures import DISK_NAMES, NAMES, Build

OLD_DEBIAN = (
    "Debian-12:\n"
    '  - name: "GMI Debian 12"\n    version: "12"\n'
    '    url: "https://old.example.org/GMI-Debian-12.zip"\n    crc64nvme: "OyXSsOe/cuI="\n'
    "    last_modified: 2025-07-30T18:09:36+00:00\n    hyperv_generation: 2\n"
)
UBUNTU = (
    "Ubuntu-24.10:\n  - name: GMI Ubuntu 24.10\n    version: 24.10\n"
    "    url: https://x/GMI-Ubuntu-24.10.zip\n    crc64nvme: edD29PbqzNQ=\n"
    "    last_modified: 2025-07-30T18:09:36+00:00\n    description: ~\n    hyperv_generation: 2\n"
)


def vmgenie_loads(index: Path) -> dict[str, list[dict[str, object]]]:
    """The index as vmgenie's YamlDotNet binds it (every entry to GmiPackage)."""
    root = parse_document(index.read_text())
    assert root is not None
    out: dict[str, list[dict[str, object]]] = {}
    for key, seq in root.pairs:  # type: ignore[union-attr]
        out[key.value] = []  # type: ignore[union-attr]
        for item in seq.items:  # type: ignore[union-attr]
            bound, problems = bind_mapping(item, PACKAGE_TARGET)
            assert not problems, problems
            out[key.value].append(dict(bound.values))  # type: ignore[union-attr]
    return out


def test_new_entry_goes_first_with_exactly_ten_keys(hyperv_build: Build, tmp_path: Path) -> None:
    index = tmp_path / "gmi-repository.yml"
    index.write_text(UBUNTU + OLD_DEBIAN)
    zip_path = hyperv_build.out / NAMES.zip
    first = publish(zip_path, index, "https://gmi.example.org/images/")
    data = vmgenie_loads(index)
    assert list(data) == ["Ubuntu-24.10", "Debian-12"]  # other keys are kept, in order
    new, old = data["Debian-12"]  # vmgenie's FindByOsAndVersion takes [0]
    assert list(new) == list(INDEX_KEYS)
    assert new["name"] == "GMI Debian 12" and new["version"] == "12"
    assert new["url"] == "https://gmi.example.org/images/GMI-Debian-12.zip"
    assert new["crc64nvme"] == crc64nvme_base64(crc64nvme_file(zip_path))
    assert new["hyperv_generation"] == 2 and new["maintainer"] == "Test Maintainer"
    assert str(new["last_modified"]).endswith("+00:00")
    assert old["url"] == "https://old.example.org/GMI-Debian-12.zip" and first.replaced == 0
    # Other entries keep their values exactly as written (PyYAML would have made 24.10
    # a float 24.1 and the timestamp a datetime).
    ubuntu = data["Ubuntu-24.10"][0]
    assert ubuntu["version"] == "24.10" and ubuntu["last_modified"] == "2025-07-30T18:09:36+00:00"
    assert ubuntu["description"] is None
    text = index.read_text()
    assert 'version: "24.10"' in text and 'version: "12"' in text and "hyperv_generation: 2" in text
    assert yaml.safe_load(text)["Ubuntu-24.10"][0]["version"] == "24.10"


def test_publishing_again_replaces_the_same_url_and_stays_first(hyperv_build: Build, tmp_path: Path) -> None:
    index = tmp_path / "gmi-repository.yml"
    index.write_text(OLD_DEBIAN)
    zip_path = hyperv_build.out / NAMES.zip
    publish(zip_path, index, "https://a.example.org/GMI-Debian-12.zip")
    mirror = publish(zip_path, index, "https://mirror.example.org/GMI-Debian-12.zip")
    again = publish(zip_path, index, "https://A.example.org/GMI-Debian-12.zip")  # URLs match case-blind
    urls = [e["url"] for e in vmgenie_loads(index)["Debian-12"]]
    assert (mirror.replaced, again.replaced) == (0, 1)
    assert urls == [
        "https://A.example.org/GMI-Debian-12.zip",
        "https://mirror.example.org/GMI-Debian-12.zip",
        "https://old.example.org/GMI-Debian-12.zip",
    ]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("https://x/images/debian.zip", "last segment is 'debian.zip'"),
        ("https://x/GMI-Debian-12.zip?token=1", "query or fragment"),
        ("https://x/GMI-Debian-12.ZIP", "last segment is 'GMI-Debian-12.ZIP'"),
    ],
)
def test_url_must_end_in_the_zips_name(hyperv_build: Build, tmp_path: Path, url: str, words: str) -> None:
    index = tmp_path / "i.yml"
    with pytest.raises(PublishError, match="vmgenie saves the download") as exc:
        publish(hyperv_build.out / NAMES.zip, index, url)
    assert words in str(exc.value)
    assert not index.exists()


def test_publish_refuses_a_badly_named_zip(hyperv_build: Build, tmp_path: Path) -> None:
    bad = Path(shutil.copy2(hyperv_build.out / NAMES.zip, tmp_path / "debian.zip"))
    with pytest.raises(PublishError, match="not named GMI-<os>-<ver>.zip"):
        publish(bad, tmp_path / "i.yml", "https://x/")


def test_publish_refuses_a_disk_only_gmi(disk_only_build: Build, tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="disk-only GMI: vmgenie cannot import it") as exc:
        publish(disk_only_build.out / DISK_NAMES.zip, tmp_path / "i.yml", "https://x/")
    assert "finish it on a Hyper-V host" in exc.value.hint


def test_publish_refuses_an_index_vmgenie_cannot_load(hyperv_build: Build, tmp_path: Path) -> None:
    index = tmp_path / "i.yml"
    index.write_text(OLD_DEBIAN + "    sha256: abc\n")
    before = index.read_text()
    with pytest.raises(
        PublishError, match="Property 'sha256' not found on type 'VmGenie.Artifacts.GmiPackage'"
    ):
        publish(hyperv_build.out / NAMES.zip, index, "https://x/")
    assert index.read_text() == before


def test_publish_cli(hyperv_build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "idx.yml"
    with pytest.raises(SystemExit) as exc:
        main(["publish", str(hyperv_build.out / NAMES.zip), "--index", str(index), "--url", "https://x/"])
    assert exc.value.code == 0
    assert "added Debian-12" in capsys.readouterr().out
    assert "Debian-12" in vmgenie_loads(index)
    with pytest.raises(SystemExit) as bad:
        main(
            ["publish", str(hyperv_build.out / NAMES.zip), "--index", str(index), "--url", "https://x/a.zip"]
        )
    assert bad.value.code == 12
    assert "last segment is 'a.zip'" in capsys.readouterr().err
