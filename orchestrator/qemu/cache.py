"""Build the lab's Debian base image once per machine and reuse it.

Building takes about a minute and needs the Debian mirror; tests and local runs only
need *a* base with known inputs. The cache entry is keyed by every input that changes
the image (suite, size, user, key, package list, recipe version), built in a temp dir
and renamed into place, and guarded by a file lock so parallel runs build it once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from orchestrator.qemu._run import run_tool
from orchestrator.qemu.base_image import (
    BASE_PACKAGES,
    BUILDER_VERSION,
    BaseImage,
    build_debian_base,
)

__all__ = ["cached_debian_base", "lab_cache_dir", "lab_ssh_key"]


def lab_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/gmi-fsm/lab`` (default ``~/.cache/gmi-fsm/lab``)."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "gmi-fsm" / "lab"


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def lab_ssh_key(cache_dir: Path | None = None) -> tuple[Path, str]:
    """An ed25519 key made once for the lab base image: (private key path, public key).

    Stable so the cached base (which bakes in the public key) stays valid across runs.
    """
    cache_dir = cache_dir or lab_cache_dir()
    key = cache_dir / "lab_ed25519"
    with _locked(cache_dir / ".lab_ed25519.lock"):
        if not key.exists() or not key.with_suffix(".pub").exists():
            key.unlink(missing_ok=True)
            key.with_suffix(".pub").unlink(missing_ok=True)
            run_tool(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gmi-fsm-lab", "-f", str(key)],
                what="creating the lab SSH key",
                where=key,
            )
    return key, key.with_suffix(".pub").read_text().strip()


def _key(inputs: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def cached_debian_base(
    *,
    user: str,
    authorized_key: str,
    suite: str = "bookworm",
    size_gib: int = 3,
    packages: Sequence[str] = BASE_PACKAGES,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> BaseImage:
    """Return the cached base for these inputs, building it first if needed.

    The cached disk is a template: never boot it directly, boot a
    :func:`orchestrator.qemu.disk.create_work_copy` of it.
    """
    cache_dir = (cache_dir or lab_cache_dir()).resolve()
    inputs: dict[str, object] = {
        "builder": BUILDER_VERSION,
        "suite": suite,
        "size_gib": size_gib,
        "user": user,
        "authorized_key": authorized_key.strip(),
        "packages": list(packages),
    }
    entry = cache_dir / f"debian-{suite}-{_key(inputs)}"
    with _locked(cache_dir / f".{entry.name}.lock"):
        image = _load(entry)
        if image is not None:
            return image
        shutil.rmtree(entry, ignore_errors=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=cache_dir))
        try:
            build_debian_base(
                tmp,
                user=user,
                authorized_key=authorized_key,
                suite=suite,
                size_gib=size_gib,
                packages=packages,
                progress=progress,
            )
            (tmp / "inputs.json").write_text(json.dumps(inputs, indent=2) + "\n")
            tmp.rename(entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        # Paths in base.json named the temp dir; rewrite them for the final place.
        return _relocate(entry)


def _relocate(entry: Path) -> BaseImage:
    meta = entry / "base.json"
    data = json.loads(meta.read_text())
    for name in ("disk", "kernel", "initrd", "metadata"):
        data[name] = str(entry / Path(data[name]).name)
    meta.write_text(json.dumps(data, indent=2) + "\n")
    return BaseImage.from_json(data)


def _load(entry: Path) -> BaseImage | None:
    try:
        image = BaseImage.from_json(json.loads((entry / "base.json").read_text()))
    except (OSError, ValueError, KeyError):
        return None
    if not (image.disk.is_file() and image.kernel.is_file() and image.initrd.is_file()):
        return None
    return image
