"""``lab base-image`` and ``lab installer-iso``: sources for the QEMU host."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from orchestrator.cli.main import cli, emit_json, fail, json_option
from orchestrator.exit_codes import ExitCode


@cli.group()
def lab() -> None:
    """A local lab: a base disk and an installer ISO for building GMIs on the QEMU host."""


F = TypeVar("F", bound=Callable[..., Any])


def _out_option(help_text: str) -> Callable[[F], F]:
    return click.option(
        "--out",
        "out",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path(".lab"),
        show_default=True,
        help=help_text,
    )


def _copy_lab_key(out: Path, key_path: Path) -> Path:
    """The lab's build key, next to what the command wrote (0600, as ssh insists)."""
    key = out / "lab_ed25519"
    shutil.copyfile(key_path, key)
    key.chmod(0o600)
    return key


@lab.command("base-image")
@_out_option("Folder that receives the base disk and the build key.")
@click.option("--user", default="gmi", show_default=True, help="The build user baked into the disk.")
@click.option("--suite", default="bookworm", show_default=True, help="The Debian suite.")
@click.option("--size-gib", type=int, default=3, show_default=True, help="Virtual disk size.")
@json_option
def base_image(out: Path, user: str, suite: str, size_gib: int, as_json: bool) -> None:
    """Build (or take from the cache) a UEFI-bootable GPT Debian base disk.

    Needs mmdebstrap, qemu-utils, dosfstools, mtools, fdisk and grub-efi-amd64-bin
    (scripts/setup.sh installs them). The disk is built once per machine and cached
    in $XDG_CACHE_HOME/gmi-fsm/lab; OUT gets a copy and the lab's build key.
    """
    from orchestrator.qemu._run import QemuToolError  # noqa: PLC0415
    from orchestrator.qemu.cache import cached_debian_base, lab_ssh_key  # noqa: PLC0415

    def progress(text: str) -> None:
        if not as_json:
            click.echo(f"  {text}", err=True)

    try:
        key_path, public = lab_ssh_key()
        image = cached_debian_base(
            user=user, authorized_key=public, suite=suite, size_gib=size_gib, progress=progress
        )
    except (QemuToolError, OSError) as exc:
        fail(
            f"cannot build the base image: {exc}",
            ExitCode.INTERNAL,
            "run scripts/setup.sh (it installs mmdebstrap and friends), and check free disk space",
        )
    out.mkdir(parents=True, exist_ok=True)
    disk = out / f"debian-{suite}-base.{image.disk_format}"
    if not disk.exists() or disk.stat().st_size != image.disk.stat().st_size:
        tmp = disk.with_name(disk.name + ".part")
        shutil.copyfile(image.disk, tmp)
        tmp.replace(disk)
    key = _copy_lab_key(out, key_path)
    data = {
        "disk": str(disk.resolve()),
        "format": image.disk_format,
        "sha256": image.sha256,
        "user": user,
        "ssh_private_key": str(key.resolve()),
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "cached": str(image.disk),
    }
    if as_json:
        emit_json(data)
    else:
        click.echo(f"base disk   {disk}  (sha256 {image.sha256[:16]}…)")
        click.echo(f"build user  {user}, key {key}")


@lab.command("installer-iso")
@_out_option("Folder that receives debian-12-netboot.iso and the build key.")
@json_option
def installer_iso(out: Path, as_json: bool) -> None:
    """Write a Debian 12 installer ISO from Debian's network installer package.

    For trying the QEMU host's ISO source (source.iso) where no installer ISO can be
    downloaded: the ISO holds the installer's kernel and initrd (like Debian's
    mini.iso); the installer fetches the rest from source.mirror. Needs the package
    debian-installer-12-netboot-amd64 (scripts/setup.sh installs it).
    """
    from orchestrator.qemu.cache import lab_ssh_key  # noqa: PLC0415
    from orchestrator.qemu.lab_iso import LabIsoError, write_netboot_iso  # noqa: PLC0415

    try:
        iso = write_netboot_iso(out / "debian-12-netboot.iso")
    except LabIsoError as exc:
        fail(f"cannot write the installer ISO: {exc}", ExitCode.INTERNAL, exc.hint)
    except OSError as exc:
        fail(f"cannot write the installer ISO: {exc}", ExitCode.INTERNAL, "check free disk space")
    key_path, _public = lab_ssh_key()
    key = _copy_lab_key(out, key_path)
    from events.blobs import digest_file  # noqa: PLC0415

    sha, size = digest_file(iso)
    data = {"iso": str(iso.resolve()), "sha256": sha, "size": size, "ssh_private_key": str(key.resolve())}
    if as_json:
        emit_json(data)
    else:
        click.echo(f"installer ISO  {iso}  ({size} bytes, sha256 {sha[:16]}…)")
        click.echo(f"build key      {key}")
