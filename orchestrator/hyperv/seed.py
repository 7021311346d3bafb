"""Unattended-install media for the build VM, written locally with pycdlib.

Each installer finds its answers on a second DVD by volume label, so no boot
parameter has to be typed:

- Ubuntu (subiquity autoinstall): a NoCloud ``cidata`` volume with ``user-data``
  holding an ``autoinstall:`` section, and ``meta-data``.
- Alma, Rocky, RHEL, Fedora (anaconda): an ``OEMDRV`` volume with ``ks.cfg``.
- openSUSE (AutoYaST): an ``OEMDRV`` volume with ``autoinst.xml``.

Every profile installs the Hyper-V daemons (without hv_kvp_daemon the host never
learns the guest's address), one root partition without LVM, the build user with
the spec's public key and password-less sudo, and powers the VM off at the end: the
host waits for "Off" to know the install finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import yaml

from orchestrator.isofs import IsoMember, write_iso
from orchestrator.spec import BuildSpec


class SeedError(Exception):
    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True, slots=True)
class SeedMedia:
    label: str
    files: dict[str, str]  # name on the volume -> text


def seed_media(spec: BuildSpec, public_key: str) -> SeedMedia:
    """The answer files for ``spec``'s OS, for a build user logging in with ``public_key``."""
    user = spec.guest.user if spec.guest else "genie"
    os_name = spec.os.name.lower()
    if spec.os.family == "apt":
        if os_name != "ubuntu":
            raise SeedError(
                f"unattended install of {spec.os.name} is not supported on Hyper-V yet "
                "(the Debian installer reads no answer file from a second DVD without boot parameters)",
                hint="set host.install: manual and install from the VM console",
            )
        return SeedMedia("cidata", _ubuntu(spec, user, public_key))
    if spec.os.family == "dnf":
        return SeedMedia("OEMDRV", {"ks.cfg": _kickstart(spec, user, public_key)})
    return SeedMedia("OEMDRV", {"autoinst.xml": _autoyast(spec, user, public_key)})


def _ubuntu(spec: BuildSpec, user: str, public_key: str) -> dict[str, str]:
    sudoers = f"{user} ALL=(ALL) NOPASSWD:ALL"
    autoinstall = {
        "version": 1,
        "locale": spec.prepare.locale,
        "storage": {"layout": {"name": "direct"}},  # one root partition, no LVM
        "ssh": {"install-server": True, "allow-pw": False},
        "packages": ["linux-cloud-tools-virtual", "linux-tools-virtual"],
        "user-data": {
            "users": [
                {
                    "name": user,
                    "shell": "/bin/bash",
                    "lock_passwd": True,
                    "sudo": sudoers,
                    "ssh_authorized_keys": [public_key],
                }
            ]
        },
        "shutdown": "poweroff",
    }
    user_data = "#cloud-config\n" + yaml.safe_dump({"autoinstall": autoinstall}, sort_keys=False)
    meta = yaml.safe_dump({"instance-id": f"{spec.name}-install", "local-hostname": "gmi-build"})
    return {"user-data": user_data, "meta-data": meta}


def _kickstart(spec: BuildSpec, user: str, public_key: str) -> str:
    # Values are from the validated spec (user: ^[a-z_][a-z0-9_-]*$) and a parsed key.
    return "\n".join(
        [
            "text",
            "eula --agreed",
            f"lang {spec.prepare.locale}",
            "keyboard us",
            "timezone UTC --utc",
            "network --bootproto=dhcp --activate",
            "rootpw --lock",
            f"user --name={user} --groups=wheel --lock",
            f'sshkey --username={user} "{public_key}"',
            "bootloader --timeout=0",
            "zerombr",
            "clearpart --all --initlabel --disklabel=gpt",
            "reqpart",
            "part / --fstype=xfs --grow",
            "%packages",
            "@core",
            "hyperv-daemons",
            "openssh-server",
            "%end",
            "%post",
            f"echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-gmi-build",
            "chmod 0440 /etc/sudoers.d/90-gmi-build",
            "systemctl enable sshd hypervkvpd hypervvssd",
            "%end",
            "poweroff",
            "",
        ]
    )


def _autoyast(spec: BuildSpec, user: str, public_key: str) -> str:
    u, k, loc = escape(user), escape(public_key), escape(spec.prepare.locale)
    return f"""<?xml version="1.0"?>
<!DOCTYPE profile>
<profile xmlns="http://www.suse.com/1.0/yast2ns" xmlns:config="http://www.suse.com/1.0/configns">
  <general><mode>
    <confirm config:type="boolean">false</confirm>
    <final_halt config:type="boolean">true</final_halt>
  </mode></general>
  <language><language>{loc}</language></language>
  <partitioning config:type="list"><drive>
    <initialize config:type="boolean">true</initialize>
    <use>all</use>
    <partitions config:type="list">
      <partition><mount>/boot/efi</mount><size>512M</size>
        <filesystem config:type="symbol">vfat</filesystem></partition>
      <partition><mount>/</mount><size>max</size>
        <filesystem config:type="symbol">ext4</filesystem></partition>
    </partitions>
  </drive></partitioning>
  <software>
    <patterns config:type="list"><pattern>base</pattern></patterns>
    <packages config:type="list">
      <package>hyper-v</package><package>openssh</package><package>sudo</package>
    </packages>
  </software>
  <services-manager><services><enable config:type="list">
    <service>sshd</service><service>hv_kvp_daemon</service><service>hv_vss_daemon</service>
  </enable></services></services-manager>
  <users config:type="list"><user>
    <username>{u}</username>
    <authorized_keys config:type="list"><listentry>{k}</listentry></authorized_keys>
  </user></users>
  <files config:type="list"><file>
    <file_path>/etc/sudoers.d/90-gmi-build</file_path>
    <file_permissions>440</file_permissions>
    <file_contents><![CDATA[{u} ALL=(ALL) NOPASSWD:ALL
]]></file_contents>
  </file></files>
</profile>
"""


def write_seed_media(dest: Path, media: SeedMedia) -> Path:
    """Write ``media`` as an ISO (Joliet + Rock Ridge names) atomically."""
    members = [IsoMember(name, text.encode("utf-8")) for name, text in sorted(media.files.items())]
    return write_iso(dest, media.label, members)
