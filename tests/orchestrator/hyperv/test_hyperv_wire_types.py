"""Every script parameter crosses PSRP with the type its param block declares.

pypsrp 0.9 serializes a bare Python int as <I32> (pypsrp/serializer.py,
``_get_tag_from_value``): an Offset of 2 GiB would reach Windows PowerShell as an Int32
it cannot read. These tests build the real CreatePipeline message pypsrp sends for each
shipped script (its own ``begin_invoke``, fragmenter and serializer; only the WinRM
shell that would carry the fragments is replaced by a recorder, so nothing touches the
network), take the fragments apart as [MS-PSRP] 2.2.4 and 2.2.1 describe them, and
read the XML back.
"""

from __future__ import annotations

import base64
import struct
import xml.etree.ElementTree as ET

import pytest
from pypsrp.powershell import RunspacePool
from pypsrp.serializer import Serializer
from pypsrp.wsman import WSMan

from orchestrator.hyperv.psrp import begin, pipeline, wire_parameters
from orchestrator.hyperv.scripts import (
    SCRIPT_NAMES,
    WIRE_TAGS,
    ScriptParamError,
    check_params,
    script_params,
    script_text,
)

BIG = (2**31, 2**40)
CREATE_PIPELINE = 0x00021006  # [MS-PSRP] 2.2.1: MessageType of CREATE_PIPELINE


class _RecordingShell:
    """Stands in for pypsrp's WinRS: keeps the fragments a Command and its Sends carry."""

    def __init__(self) -> None:
        self.fragments: list[bytes] = []

    def command(self, executable: str, arguments: list[str], command_id: str | None = None) -> ET.Element:
        self.fragments += [base64.b64decode(a) for a in arguments]
        return ET.Element("Body")

    def send(self, stream: str, data: bytes, command_id: str | None = None) -> None:
        self.fragments.append(data)


def _messages(fragments: list[bytes]) -> list[tuple[int, bytes]]:
    """(message type, payload) of each PSRP message the fragments carry."""
    blobs: dict[int, bytes] = {}
    done: list[tuple[int, bytes]] = []
    for frag in fragments:
        rest = frag
        while rest:
            object_id, _fragment_id = struct.unpack(">QQ", rest[:16])
            flags = rest[16]
            (length,) = struct.unpack(">I", rest[17:21])
            blobs[object_id] = blobs.get(object_id, b"") + rest[21 : 21 + length]
            rest = rest[21 + length :]
            if flags & 0x2:  # E: the object's last fragment
                msg = blobs.pop(object_id)
                (msg_type,) = struct.unpack("<I", msg[4:8])
                done.append((msg_type, msg[40:].removeprefix(b"\xef\xbb\xbf")))
    return done


def _opened_pool() -> tuple[RunspacePool, _RecordingShell]:
    """A pool in the state pypsrp leaves it after opening on Windows PowerShell 5.1: the
    host's SessionCapability says protocol 2.3, so pypsrp raises its envelope to 500 KiB
    (pypsrp/powershell.py, ``_process_session_capability``)."""
    wsman = WSMan("wire-test.invalid")
    pool = RunspacePool(wsman)
    pool.protocol_version, pool.ps_version, pool.serialization_version = "2.3", "2.0", "1.1.0.1"
    wsman.update_max_payload_size(512000)
    pool._fragmenter.max_size = wsman.max_payload_size
    shell = _RecordingShell()
    pool.shell = shell  # type: ignore[assignment]
    return pool, shell


def _create_pipeline_xml(name: str, values: dict[str, object]) -> ET.Element:
    pool, shell = _opened_pool()
    pipeline(pool, script_text(name), wire_parameters(name, values)).begin_invoke()
    messages = [payload for kind, payload in _messages(shell.fragments) if kind == CREATE_PIPELINE]
    assert len(messages) == 1
    return ET.fromstring(messages[0])


def _bound(xml: ET.Element) -> dict[str, ET.Element]:
    """Parameter name -> the element that carries its value (CommandParameter, 2.2.3.13)."""
    out: dict[str, ET.Element] = {}
    for obj in xml.iter("Obj"):
        ms = obj.find("MS")
        if ms is None:
            continue
        name = ms.find("S[@N='N']")
        value = ms.find("*[@N='V']")
        if name is not None and value is not None and name.text:
            out[name.text] = value
    return out


def _values(name: str, big: int) -> dict[str, object]:
    sample: dict[str, object] = {"S": "x", "B": True, "I32": 2**31 - 1, "I64": big}
    return {p.name: sample[p.wire_tag] for p in script_params(name)}


@pytest.mark.parametrize("big", BIG, ids=["2^31", "2^40"])
@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_each_parameter_has_its_declared_type_on_the_wire(name: str, big: int) -> None:
    values = _values(name, big)
    xml = _create_pipeline_xml(name, values)
    bound = _bound(xml)
    assert set(bound) == set(values)
    for p in script_params(name):
        element = bound[p.name]
        assert element.tag == p.wire_tag, f"{name}: ${p.name} [{p.ps_type}] went as <{element.tag}>"
        expected = values[p.name]
        text = str(expected).lower() if isinstance(expected, bool) else str(expected)
        assert element.text == text
    # The script itself is the fixed text, exactly (PSRP escapes its line ends, 2.2.5.1.1).
    texts = [Serializer()._deserialize_string(s.text) for s in xml.iter("S") if s.text]
    assert script_text(name) in texts


def test_the_transfer_offsets_cross_as_int64() -> None:
    for name in ("file-read-pieces", "file-write-pieces", "file-digest"):
        for big in BIG:
            values = _values(name, big)
            bound = _bound(_create_pipeline_xml(name, values))
            offset = "PrefixLength" if name == "file-digest" else "Offset"
            assert bound[offset].tag == "I64"
            assert int(bound[offset].text or "") == big


def test_what_bare_pypsrp_would_have_sent() -> None:
    # The defect this guards against: pypsrp's own choice for an untagged int.
    pool, shell = _opened_pool()
    untagged = {"Path": "x", "Offset": 2**31, "Length": 1, "PieceBytes": 1}
    pipeline(pool, script_text("file-read-pieces"), untagged).begin_invoke()  # type: ignore[arg-type]
    payload = next(p for k, p in _messages(shell.fragments) if k == CREATE_PIPELINE)
    assert _bound(ET.fromstring(payload))["Offset"].tag == "I32"


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_an_int32_parameter_refuses_what_does_not_fit(name: str) -> None:
    for p in script_params(name):
        if p.wire_tag != "I32":
            continue
        values = _values(name, 2**31)
        values[p.name] = 2**31
        with pytest.raises(ScriptParamError, match=rf"\${p.name} is \[int\]"):
            wire_parameters(name, values)


def test_values_of_the_wrong_kind_are_refused() -> None:
    good = {"VmName": "v", "BuildId": "b", "TimeoutSeconds": 5, "StopIfRunning": True}
    check_params("vm-wait-off", good)
    for key, bad in (("TimeoutSeconds", "5"), ("TimeoutSeconds", True), ("StopIfRunning", 1), ("VmName", 3)):
        with pytest.raises(ScriptParamError, match=key):
            check_params("vm-wait-off", {**good, key: bad})
    with pytest.raises(ScriptParamError, match="declares"):
        check_params("vm-wait-off", {**good, "Extra": 1})


def test_every_script_parameter_declares_a_type_with_a_wire_tag() -> None:
    for name in SCRIPT_NAMES:
        params = script_params(name)
        assert params, f"{name} declares no parameters"
        for p in params:
            assert p.ps_type.lower() in WIRE_TAGS


def _with_param_block(monkeypatch: pytest.MonkeyPatch, block: str) -> None:
    from orchestrator.hyperv import scripts

    monkeypatch.setattr(scripts, "_read", lambda name: f"param(\n{block}\n)\n# @preamble\n")
    scripts.script_params.cache_clear()


def test_a_parameter_without_a_type_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.hyperv import scripts

    try:
        _with_param_block(monkeypatch, "    [string]$VmName,\n    $Offset")
        with pytest.raises(ScriptParamError, match=r"must be \[type\]\$Name"):
            scripts.script_params("vm-probe")
        _with_param_block(monkeypatch, "    [string]$VmName,\n    [datetime]$When")
        with pytest.raises(ScriptParamError, match=r"\$When is \[datetime\], which has no PSRP wire type"):
            scripts.script_params("vm-probe")
    finally:
        monkeypatch.undo()
        scripts.script_params.cache_clear()


PIPELINE_INPUT = 0x00041002  # [MS-PSRP] 2.2.1
END_OF_PIPELINE_INPUT = 0x00041003


def test_a_transfer_call_carries_its_pieces_as_pipeline_input() -> None:
    # file-write-pieces reads its data as $input: one PIPELINE_INPUT message per piece,
    # each a plain <S>, then END_OF_PIPELINE_INPUT, on the pipeline CreatePipeline opened.
    pieces = [base64.b64encode(bytes([i]) * (1 << 20)).decode() for i in range(3)]
    pool, shell = _opened_pool()
    ps = pipeline(
        pool,
        script_text("file-write-pieces"),
        wire_parameters("file-write-pieces", {"Path": "p", "Offset": 2**40}),
    )
    begin(ps, pieces)
    messages = _messages(shell.fragments)
    kinds = [kind for kind, _ in messages]
    assert kinds == [CREATE_PIPELINE, PIPELINE_INPUT, PIPELINE_INPUT, PIPELINE_INPUT, END_OF_PIPELINE_INPUT]
    create = ET.fromstring(messages[0][1])
    assert create.find(".//B[@N='NoInput']") is not None
    assert create.find(".//B[@N='NoInput']").text == "false"  # type: ignore[union-attr]
    sent = [ET.fromstring(payload) for kind, payload in messages if kind == PIPELINE_INPUT]
    assert [(e.tag, e.text) for e in sent] == [("S", piece) for piece in pieces]
    # Each fragment fits the 500 KiB envelope (pypsrp splits a piece over several).
    assert max(len(f) for f in shell.fragments) <= 512000
