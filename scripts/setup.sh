#!/usr/bin/env bash
# Installs what gmi-fsm needs on a fresh Debian machine (idempotent; safe to re-run):
# the host packages (QEMU, OVMF, mmdebstrap, OpenSSH, ...) and a Python virtual
# environment in .venv with gmi-fsm and its development tools.
# Sourced by scripts/demo.sh and scripts/test.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
APT_PACKAGES=(
  qemu-system-x86 qemu-utils ovmf           # the local QEMU host, UEFI like a Hyper-V Gen 2 VM
  mmdebstrap e2fsprogs dosfstools mtools fdisk grub-efi-amd64-bin  # the Debian base disk, no loop devices
  openssh-client openssh-server sudo        # the SSH guest target and its tests
  libguestfs-tools linux-image-cloud-amd64  # `gmi-fsm validate --inspect` reads disks offline
  debian-installer-12-netboot-amd64 openssl # `gmi-fsm lab installer-iso`: a real Debian installer
  unzip                                     # a second, independent zip reader for the ZIP64 test
  samba smbclient                           # a real SMB3 server for the Hyper-V transfer tests; smbclient for the benchmark
)

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

install_host_packages() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo_ apt-get -o DPkg::Lock::Timeout=900 update -q >&2
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}" >&2
  fi
}

install_python_env() {
  local py="${PYTHON:-python3}"
  if [ ! -x "$ROOT/.venv/bin/python" ]; then
    echo "setup: creating $ROOT/.venv" >&2
    "$py" -m venv "$ROOT/.venv" || {
      sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-venv >&2
      "$py" -m venv "$ROOT/.venv"
    }
  fi
  # Reinstall only when the dependency list changed.
  local stamp="$ROOT/.venv/.gmi-fsm-deps"
  local want
  want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing gmi-fsm and its tools into .venv" >&2
    "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip >&2
    "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT[dev]" >&2
    echo "$want" > "$stamp"
  fi
  export PATH="$ROOT/.venv/bin:$PATH"
}

install_host_packages
install_python_env
