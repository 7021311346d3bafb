"""Publishing into a vmgenie repository index."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.cli.main import main
from orchestrator.gmi.hashing import crc64nvme_file
from orchestrator.gmi.publish import PublishError, crc64nvme_base64, publish
from tests.support.gmi_fixtures import NAMES, Build


def test_publish_creates_then_updates_the_index(hyperv_build: Build, tmp_path: Path) -> None:
    index = tmp_path / "gmi-repository.yml"
    index.write_text(
        'Fedora-42:\n  - name: "GMI Fedora 42"\n    version: "42"\n    url: "https://x/GMI-Fedora-42.zip"\n'
        '    crc64nvme: "gEADQ0g/PTE="\n    hyperv_generation: 2\n'
    )
    zip_path = hyperv_build.out / NAMES.zip
    first = publish(zip_path, index, "https://gmi.example.org/images/")
    assert not first.replaced
    data = yaml.safe_load(index.read_text())
    assert list(data) == ["Fedora-42", "Debian-12"]  # other entries are kept
    entry = data["Debian-12"][0]
    assert entry["name"] == "GMI Debian 12" and entry["version"] == "12"
    assert entry["url"] == "https://gmi.example.org/images/GMI-Debian-12.zip"
    assert entry["crc64nvme"] == crc64nvme_base64(crc64nvme_file(zip_path))
    assert entry["hyperv_generation"] == 2 and entry["maintainer"] == "Test Maintainer"
    assert entry["last_modified"].endswith("+00:00")
    again = publish(zip_path, index, "https://mirror.example.org/GMI-Debian-12.zip")
    assert again.replaced
    data = yaml.safe_load(index.read_text())
    assert len(data["Debian-12"]) == 1 and data["Debian-12"][0]["url"].startswith("https://mirror.")


def test_publish_refuses_a_badly_named_zip(hyperv_build: Build, tmp_path: Path) -> None:
    bad = Path(shutil.copy2(hyperv_build.out / NAMES.zip, tmp_path / "debian.zip"))
    with pytest.raises(PublishError, match="not named GMI-<os>-<ver>.zip"):
        publish(bad, tmp_path / "i.yml", "https://x/")


def test_publish_cli(hyperv_build: Build, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    index = tmp_path / "idx.yml"
    with pytest.raises(SystemExit) as exc:
        main(["publish", str(hyperv_build.out / NAMES.zip), "--index", str(index), "--url", "https://x/"])
    assert exc.value.code == 0
    assert "added Debian-12" in capsys.readouterr().out
    assert "Debian-12" in yaml.safe_load(index.read_text())
