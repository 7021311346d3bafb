"""The build spec: YAML, validated by pydantic, secrets as references only.

``load_spec`` turns every problem into a :class:`SpecError` that names the file, the
field, the line (when the YAML tells it) and how to fix it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from orchestrator.secrets import is_reference
from orchestrator.spec_errors import SpecError, SpecIssue
from states.stages import STAGE_NAMES


def _reference(value: str) -> str:
    if not is_reference(value):
        msg = (
            "a plain-text secret is not allowed in a spec; write env:NAME or file:PATH "
            "(the value is read at run time and never stored)"
        )
        raise ValueError(msg)
    return value


SecretRef = Annotated[str, AfterValidator(_reference)]
"""A reference to a secret: ``env:NAME`` or ``file:PATH``."""


# Bounds of numbers a build can live with: a timeout of 1e300 s (or .inf) passes
# "greater than 0" yet means "wait forever", and asyncio cannot even schedule it.
MAX_TIMEOUT_S = 7 * 24 * 3600.0  # a week: far beyond any step, install or boot
MAX_RETRY_DELAY_S = 3600.0
MAX_HYPERV_MEMORY_MIB = 12 * 1024 * 1024  # 12 TiB, Hyper-V's maximum per VM
MAX_DISK_GIB = 64 * 1024  # 64 TiB, the VHDX format's maximum
MAX_HYPERV_CPUS = 240  # Hyper-V's maximum virtual processors per generation 2 VM


def _timeout(default: float, description: str | None = None) -> Any:
    return Field(default, gt=0, le=MAX_TIMEOUT_S, description=description)


class _Strict(BaseModel):
    # allow_inf_nan=False: .inf and .nan are YAML floats, but no field means them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class OsSpec(_Strict):
    name: str = Field(
        description="OS name as in the GMI file name, e.g. Debian", pattern=r"^[A-Za-z][A-Za-z0-9._]*$"
    )
    version: str = Field(description="OS version, e.g. 12 or 24.04", pattern=r"^[A-Za-z0-9][A-Za-z0-9._]*$")
    family: Literal["apt", "dnf", "zypper"] = Field(
        description="Package manager family: apt (Debian, Ubuntu), dnf (Alma, Rocky, RHEL, "
        "Fedora), zypper (openSUSE)"
    )


class LocalHostSpec(_Strict):
    """No hypervisor: only hooks run. For trying the engine and for CI."""

    kind: Literal["local"]


class QemuHostSpec(_Strict):
    kind: Literal["qemu"]
    memory_mib: int = Field(2048, ge=256, le=262144)
    cpus: int = Field(2, ge=1, le=64)
    accel: Literal["auto", "kvm", "tcg"] = "auto"
    firmware: Literal["uefi", "direct-kernel"] = "uefi"
    disk_gib: int | None = Field(None, ge=1, le=MAX_DISK_GIB, description="Grow the work disk to this size")
    boot_timeout_s: float = _timeout(600)
    shutdown_timeout_s: float = _timeout(120)
    install_timeout_s: float = _timeout(5400, "How long an unattended install from source.iso may take")


class HyperVSimulatorSpec(_Strict):
    """Selects :class:`orchestrator.hyperv.simulator.HyperVSimulator`: NOT a Hyper-V host."""

    state: str = Field(description="JSON file holding the simulator's state (shared across runs)")
    guest_steps: bool = Field(
        False,
        description="Also plan the guest steps (needs a real SSH guest at guest_address); "
        "off: the simulated build runs its host steps only",
    )
    guest_address: str = "127.0.0.1"
    kvp_delay_s: float = Field(
        0.2, ge=0, le=MAX_RETRY_DELAY_S, description="Seconds after start until KVP reports an address"
    )
    inspect_export: bool = Field(
        False,
        description="The simulator's export holds a real guest disk: inspect it offline in the "
        "validate stage, as on a real host (off: its disks are placeholders, nothing to look into)",
    )


class HyperVHostSpec(_Strict):
    kind: Literal["hyperv"]
    host: str = Field(description="Hyper-V host name or address (WinRM)")
    port: int | None = Field(None, ge=1, le=65535)
    transport: Literal["https", "http"] = "https"
    auth: Literal["negotiate", "kerberos", "ntlm", "credssp", "certificate"] = "negotiate"
    username: str | None = None
    password: SecretRef | None = None
    ca_bundle: str | None = Field(None, description="CA bundle path for the host's certificate")
    certificate_pem: str | None = None
    certificate_key_pem: str | None = None
    switch: str = "Default Switch"
    vm_path: str = Field(description="Folder on the host for the build VM, e.g. D:\\GMI\\build")
    export_path: str = Field(description="Folder on the host for the export")
    iso_path: str | None = Field(None, description="ISO path on the host")
    smb_share: str | None = Field(
        None,
        pattern=r'^[^\\/:*?"<>|\s][^\\/:*?"<>|]*$',
        description="Name of an SMB share on the Hyper-V host: ISOs, seed media and exports travel "
        "through it (SMB 3, TCP smb_port) instead of PowerShell Remoting; iso_path, vm_path and "
        "export_path must lie in the folder it serves (`gmi-fsm hyperv check` checks both)",
    )
    smb_port: int = Field(445, ge=1, le=65535, description="TCP port of the host's SMB server")
    smb_encrypt: bool = Field(
        True,
        description="Encrypt the SMB transfers (SMB 3 encryption); false: signed only, faster, for a "
        "trusted network (PowerShell Remoting over HTTPS is always encrypted)",
    )
    transfer_chunk_mib: int = Field(
        64,
        ge=1,
        le=4096,
        description="A transfer records its verified offset in the event log after every chunk of "
        "this many MiB; a resumed transfer sends again at most what followed the last one",
    )
    transfer_timeout_s: float = Field(
        86400,
        gt=0,
        description="How long one attempt of a transfer step (ISO, seed media, export) may take in "
        "all; each call within it has call_timeout_s, and a retry resumes where it stopped",
    )
    memory_mib: int = Field(
        2048,
        ge=512,
        le=MAX_HYPERV_MEMORY_MIB,
        description="Startup memory in MiB; Hyper-V wants a multiple of 2",
    )
    dynamic_memory: bool = True
    cpus: int = Field(2, ge=1, le=MAX_HYPERV_CPUS)
    disk_gib: int = Field(32, ge=4, le=MAX_DISK_GIB)
    secure_boot: bool = True
    secure_boot_template: str = "MicrosoftUEFICertificateAuthority"
    install: Literal["unattended", "manual"] = "unattended"
    keep_vm_on_failure: bool = True
    fetch_export: bool = Field(True, description="Copy the export here (needed to package it)")
    call_timeout_s: float = _timeout(600)
    install_timeout_s: float = _timeout(3600, "How long an unattended install may take")
    boot_timeout_s: float = _timeout(600, "How long to wait for the guest's KVP address")
    shutdown_timeout_s: float = _timeout(300, "How long a graceful shutdown may take")
    press_key_for_dvd: bool = Field(
        True,
        description="Type Enter into the VM console after start: Gen 2 firmware boots a DVD only "
        "when a key is pressed at 'Press any key to boot from CD or DVD'",
    )
    simulator: HyperVSimulatorSpec | None = Field(
        None,
        description="Run against the in-memory Hyper-V SIMULATOR (tests, demos) instead of a real host",
    )

    @model_validator(mode="after")
    def _smb_login(self) -> HyperVHostSpec:
        if self.smb_share and self.auth == "certificate":
            msg = (
                "host.smb_share needs a login SMB can use: auth certificate has none (SMB logs in with "
                "NTLM or Kerberos); use auth ntlm, negotiate or kerberos, or remove host.smb_share"
            )
            raise ValueError(msg)
        return self

    @field_validator("memory_mib")
    @classmethod
    def _whole_2mib(cls, v: int) -> int:
        # Hyper-V sizes VM memory in 2 MiB units: Set-VMMemory/New-VM refuse anything else.
        if v % 2:
            msg = (
                f"host.memory_mib is {v} MiB, not a multiple of 2 MiB, which Hyper-V refuses; "
                f"use {v - 1} or {v + 1}"
            )
            raise ValueError(msg)
        return v


HostSpec = Annotated[LocalHostSpec | QemuHostSpec | HyperVHostSpec, Field(discriminator="kind")]


class SourceSpec(_Strict):
    base_image: str | None = Field(None, description="A base disk (raw, qcow2 or VHDX)")
    iso: str | None = Field(None, description="An OS installer ISO")
    gmi_package: str | None = Field(
        None,
        description="A disk-only GMI (disk-only-GMI-<Os>-<Ver>.zip, e.g. from the QEMU host) to finish "
        "on a Hyper-V host: its VHDX becomes a generation 2 VM, booted with a fresh seed, validated, "
        "exported and packaged as an importable GMI naming this package as its parent",
    )
    vhdx: str | None = Field(
        None,
        description="A prepared and sealed VHDX to finish on a Hyper-V host (as gmi_package, without a "
        "parent package to name)",
    )
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    kernel: str | None = Field(None, description="vmlinuz for direct kernel boot")
    initrd: str | None = None
    kernel_cmdline: str = "root=LABEL=rootfs rw console=ttyS0 net.ifnames=0"
    mirror: str = Field(
        "http://deb.debian.org/debian",
        description="Package mirror the Debian installer uses (an ISO install on the QEMU host)",
    )
    mirror_proxy: str = Field(
        "", description="HTTP proxy for the installer, e.g. http://proxy:3128 (no credentials)"
    )

    @field_validator("mirror_proxy")
    @classmethod
    def _proxy_without_credentials(cls, v: str) -> str:
        if v and not re.fullmatch(r"https?://[^@\s/]+/?", v):
            # Never echo the value: it may hold a password.
            msg = "give the proxy as http://HOST:PORT, without credentials (a spec holds no secrets)"
            raise ValueError(msg)
        return v

    @model_validator(mode="after")
    def _one_source(self) -> SourceSpec:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            msg = f"give exactly one of {', '.join(SOURCE_KINDS)} (found {', '.join(given) or 'none'})"
            raise ValueError(msg)
        return self

    @property
    def finishes_disk(self) -> bool:
        """The source is a prepared disk (a disk-only GMI or a VHDX) to finish on Hyper-V."""
        return self.gmi_package is not None or self.vhdx is not None

    @property
    def uri(self) -> str:
        """The source's path as the spec gives it, whatever its kind."""
        return next(str(v) for k in SOURCE_KINDS if (v := getattr(self, k)) is not None)


SOURCE_KINDS = ("base_image", "iso", "gmi_package", "vhdx")


class GuestSpec(_Strict):
    user: str = Field("genie", pattern=r"^[a-z_][a-z0-9_-]*$")
    ssh_private_key: SecretRef | None = Field(
        None, description="Reference to the build user's private key file: file:PATH"
    )
    ssh_key_passphrase: SecretRef | None = None
    password: SecretRef | None = None
    connect_timeout_s: float = _timeout(600)
    ssh_port: int = Field(22, ge=1, le=65535, description="The guest's SSH port (Hyper-V host)")

    @model_validator(mode="after")
    def _some_auth(self) -> GuestSpec:
        if self.ssh_private_key is None and self.password is None:
            msg = "give ssh_private_key (file:PATH) or password (env:NAME) for the build user"
            raise ValueError(msg)
        return self


class PrepareSpec(_Strict):
    update: bool = True
    remove_packages: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_:-]*$")]] = []
    extra_packages: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.+_:-]*$")]] = []
    hyperv_daemons: Literal["package", "source"] = "package"
    grub_timeout_zero: bool = True
    free_space: Literal["zero-fill", "fstrim", "none"] = "zero-fill"
    keep_build_user: bool = Field(
        False,
        description="Keep the build user in the image (locked: no password, no keys, no sudo rule); "
        "by default a user the build created is removed at seal",
    )
    locale: str = "en_US.UTF-8"


class ManifestSpec(_Strict):
    maintainer: str = "gmi-fsm"
    maintainer_email: str = ""
    source_url: str = ""
    description: str = ""


class OutputSpec(_Strict):
    dir: str = Field("out", description="Where the GMI and its package are written")
    formats: list[Literal["zip", "tar.gz"]] = ["zip"]


class HookSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    stage: str
    when: Literal["before", "after"] = "after"
    target: Literal["local", "guest"] = "local"
    run: str = Field(min_length=1, description="A POSIX sh script")
    args: list[str] = []
    sudo: bool = False
    idempotent: bool = False
    check: str | None = Field(None, description="sh script: exit 0 means the effect is there")
    timeout_s: float = _timeout(600)
    retries: int = Field(0, ge=0, le=20)
    retry_delay_s: float = Field(1.0, ge=0, le=MAX_RETRY_DELAY_S)
    facts: bool = Field(False, description="Record key=value lines of stdout as facts")

    @field_validator("stage")
    @classmethod
    def _known_stage(cls, v: str) -> str:
        if v not in STAGE_NAMES:
            msg = f"unknown stage {v!r}; stages are: {', '.join(STAGE_NAMES)}"
            raise ValueError(msg)
        return v


class BuildSpec(_Strict):
    """A GMI build: what to build, where, and how."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", description="A short name for the build")
    os: OsSpec
    host: HostSpec
    source: SourceSpec | None = None
    guest: GuestSpec | None = None
    prepare: PrepareSpec = PrepareSpec()
    manifest: ManifestSpec = ManifestSpec()
    output: OutputSpec = OutputSpec()
    hooks: list[HookSpec] = []
    step_timeout_s: float = _timeout(1800, "Default timeout of a step")

    @model_validator(mode="after")
    def _host_needs(self) -> BuildSpec:
        if self.host.kind != "local":
            if self.source is None:
                msg = f"host kind {self.host.kind} needs a source (base_image or iso)"
                raise ValueError(msg)
            if self.guest is None:
                msg = f"host kind {self.host.kind} needs a guest section (user and key)"
                raise ValueError(msg)
        if self.host.kind == "qemu" and self.source is not None and self.source.iso is not None:
            self._qemu_iso_install()
        if self.source is not None and self.source.finishes_disk and self.host.kind != "hyperv":
            kind = "gmi_package" if self.source.gmi_package is not None else "vhdx"
            msg = (
                f"source.{kind} (finishing a prepared disk) needs host kind hyperv, not {self.host.kind}: "
                "only Hyper-V can make the VM configuration (.vmcx) an importable GMI holds"
            )
            raise ValueError(msg)
        if any(h.target == "guest" for h in self.hooks) and self.host.kind == "local":
            msg = "guest hooks need a host with a guest (qemu or hyperv)"
            raise ValueError(msg)
        names = [f"{h.stage}/{h.name}" for h in self.hooks]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            msg = f"hook names must be unique per stage: {', '.join(sorted(dupes))}"
            raise ValueError(msg)
        return self

    def _qemu_iso_install(self) -> None:
        # The QEMU host answers the Debian installer through its initrd (preseed);
        # other installers' seeds are written for Hyper-V's second DVD only.
        if self.os.family != "apt" or self.os.name.lower() != "debian":
            msg = (
                f"the QEMU host installs from an ISO with the Debian installer only, not {self.os.name}; "
                "use the distribution's cloud image as source.base_image (examples/ has specs), "
                "or the Hyper-V host for an ISO install"
            )
            raise ValueError(msg)
        assert isinstance(self.host, QemuHostSpec)
        if self.host.firmware != "uefi":
            msg = "an ISO install needs host.firmware: uefi (the installer puts GRUB on an EFI partition)"
            raise ValueError(msg)

    def secret_refs(self) -> list[tuple[str, str]]:
        """Every secret reference in the spec, with the field it is in."""
        refs: list[tuple[str, str]] = []
        if self.guest is not None:
            for name in ("ssh_private_key", "ssh_key_passphrase", "password"):
                value = getattr(self.guest, name)
                if value:
                    refs.append((f"guest.{name}", value))
        if isinstance(self.host, HyperVHostSpec) and self.host.password:
            refs.append(("host.password", self.host.password))
        return refs

    @property
    def gmi_name(self) -> str:
        """``GMI-<os>-<ver>``: the package's base name vmgenie expects."""
        return f"GMI-{self.os.name}-{self.os.version}"

    @property
    def vm_name(self) -> str:
        return f"GMI {self.os.name} {self.os.version}"


def spec_schema() -> dict[str, Any]:
    return BuildSpec.model_json_schema()


def spec_sha256(data: dict[str, Any]) -> str:
    from events.chain import canonical_json  # noqa: PLC0415

    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


SPEC_MAX_BYTES = 1 << 20  # a spec is a few KiB; the cap bounds the time and memory of reading one
SPEC_MAX_DEPTH = 64  # collections in collections: a real spec nests 4 deep
SPEC_MAX_NUMBER_DIGITS = 100  # int() of 5,000 digits is refused by Python itself (CVE-2020-10735)


def load_spec(path: Path) -> tuple[BuildSpec, dict[str, Any]]:
    """Read and validate a spec file; return the model and its frozen JSON form."""
    import yaml  # noqa: PLC0415 - only commands that read specs pay for it

    from orchestrator.small_file import UnreadableFile, read_small_file  # noqa: PLC0415

    shown = str(path)
    try:
        text = read_small_file(path, SPEC_MAX_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise SpecError(
            shown,
            [SpecIssue(field="", message="file not found")],
            hint="check the path; `gmi-fsm spec check FILE` validates a spec",
        ) from None
    except UnreadableFile as exc:
        raise SpecError(shown, [SpecIssue(field="", message=str(exc))], hint=exc.hint) from None
    except OSError as exc:
        raise SpecError(shown, [SpecIssue(field="", message=f"cannot read it: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            shown, [SpecIssue(field="", message=f"cannot read it: not UTF-8 text ({exc.reason})")]
        ) from None
    try:
        node, data = _parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # A mark at the stream's end may lie past the last line: keep it inside the file.
        line = min(mark.line + 1, max(1, len(text.splitlines()))) if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark.line + 1 != line:
            problem += f" ({context} that starts on line {context_mark.line + 1})"
        raise SpecError(
            shown, [SpecIssue(field="", message=f"not valid YAML: {problem}", line=line)]
        ) from None
    if not isinstance(data, dict):
        raise SpecError(
            shown, [SpecIssue(field="", message="the top level must be a mapping (key: value)", line=1)]
        )
    return validate_spec(data, shown, node)


def _parse_yaml(text: str) -> tuple[Any, Any]:
    """(node, data) of one YAML document, composed once, with bounded nesting and
    number lengths (PyYAML's composer recurses once per level: 100,000 ``[`` would
    raise RecursionError; ``int()`` of 5,000 digits raises ValueError)."""
    import yaml  # noqa: PLC0415

    class SpecLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            try:
                if self.depth > SPEC_MAX_DEPTH:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"the spec nests deeper than {SPEC_MAX_DEPTH} levels",
                        self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_yaml_int(self, node: Any) -> Any:
            digits = sum(c.isalnum() for c in str(node.value))
            if digits > SPEC_MAX_NUMBER_DIGITS:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"a number of {digits} digits is too long (at most {SPEC_MAX_NUMBER_DIGITS})",
                    node.start_mark,
                )
            return super().construct_yaml_int(node)

    SpecLoader.add_constructor("tag:yaml.org,2002:int", SpecLoader.construct_yaml_int)
    loader = SpecLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()
    return node, data


def validate_spec(
    data: dict[str, Any], shown: str = "<spec>", node: Any = None
) -> tuple[BuildSpec, dict[str, Any]]:
    try:
        spec = BuildSpec.model_validate(data)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            loc = [str(p) for p in err["loc"] if not _is_union_tag(p)]
            field = ".".join(loc)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (check its spelling; `gmi-fsm spec schema` lists the keys)"
            elif err["type"] == "missing":
                msg = "required key is missing"
            elif err["type"] == "union_tag_invalid":
                ctx = err.get("ctx", {})
                msg = f"unknown kind {ctx.get('tag')!r}; use one of: {ctx.get('expected_tags')}"
            elif err["type"] == "union_tag_not_found":
                msg = f"required key {err.get('ctx', {}).get('discriminator')} is missing"
            msg = msg.removeprefix("Value error, ")
            issues.append(SpecIssue(field=field, message=msg, line=_line_of(node, err["loc"])))
        raise SpecError(shown, issues) from None
    frozen = spec.model_dump(mode="json", exclude_defaults=False)
    return spec, frozen


_TAGS = {"local", "qemu", "hyperv"}


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and part in _TAGS


def _line_of(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on ``loc`` (the key if the value is
    missing)."""
    line: int | None = None
    current = node
    for part in loc:
        if current is None or _is_union_tag(part):
            continue
        if hasattr(current, "start_mark"):
            line = current.start_mark.line + 1
        nxt = None
        if current.__class__.__name__ == "MappingNode":
            for k, v in current.value:
                if k.value == str(part):
                    line = k.start_mark.line + 1
                    nxt = v
                    break
        elif (
            current.__class__.__name__ == "SequenceNode"
            and isinstance(part, int)
            and 0 <= part < len(current.value)
        ):
            nxt = current.value[part]
            line = nxt.start_mark.line + 1
        current = nxt
    return line


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
