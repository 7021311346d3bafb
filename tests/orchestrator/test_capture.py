"""OutputCapture: small outputs stay in memory, large ones spool to a file and a blob;
either way the digest, head, tail, text and blob describe exactly the masked bytes."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from events.blobs import BlobStore
from events.store import SqliteEventStore
from orchestrator.capture import HEAD_BYTES, TAIL_BYTES, OutputCapture
from orchestrator.secrets import MASK, REDACTOR

SECRET = "capture-secret-4b1d"


@pytest.fixture
def blobs(tmp_path: Path) -> Iterator[BlobStore]:
    store = SqliteEventStore(tmp_path / "events.db")
    try:
        yield BlobStore(store.conn)
    finally:
        store.close()


def _feed(capture: OutputCapture, data: bytes, chunk: int) -> None:
    for i in range(0, len(data), chunk):
        capture("stdout", data[i : i + chunk])


def _blob(blobs: BlobStore, sha256: str) -> bytes:
    return b"".join(blobs.read(sha256))


def _open_spools(folder: Path) -> list[str]:
    """Files in ``folder`` this process holds open. A spool file has no name (it is
    never visible in the folder), but /proc/self/fd still shows where it lives."""
    fds = Path("/proc/self/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder) + "/"):
            found.append(target)
    return found


@pytest.mark.parametrize("size", [0, 1, HEAD_BYTES - 1, HEAD_BYTES])
def test_an_output_that_fits_in_the_head_never_touches_the_disk(tmp_path, blobs, size):
    spool = tmp_path / "spool"
    spool.mkdir()
    data = bytes(i % 251 for i in range(size))
    capture = OutputCapture(spool_dir=spool)
    _feed(capture, data, 100)
    assert list(spool.iterdir()) == [], "no spool file while the output fits in the head"
    out, err = capture.finish(blobs)
    assert list(spool.iterdir()) == []
    assert (out.sha256, out.size) == (hashlib.sha256(data).hexdigest(), size)
    assert out.head == data.decode("utf-8", "replace")
    assert out.tail == ""
    assert not blobs.has(out.sha256), "the event's head holds it whole: no blob"
    assert capture.stdout_text() == out.head
    assert (err.size, err.head, err.sha256) == (0, "", hashlib.sha256(b"").hexdigest())


@pytest.mark.parametrize("chunk", [1, 1000, HEAD_BYTES, HEAD_BYTES + 1, 1 << 20])
def test_an_output_past_the_head_spools_and_is_stored_whole(tmp_path, blobs, chunk):
    spool = tmp_path / "spool"
    spool.mkdir()
    data = b"".join(b"line %06d\n" % i for i in range(3000))  # 33,000 bytes
    capture = OutputCapture(spool_dir=spool)
    _feed(capture, data, chunk)
    assert len(_open_spools(spool)) == 1, "one spool file for stdout, none for the empty stderr"
    assert list(spool.iterdir()) == [], "the spool file has no name: a crash cannot leave it behind"
    out, err = capture.finish(blobs)
    assert _open_spools(spool) == [], "the spool file is closed"
    assert (out.sha256, out.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert _blob(blobs, out.sha256) == data
    assert out.head == data[:HEAD_BYTES].decode()
    assert out.tail == data[-TAIL_BYTES:].decode()
    assert capture.stdout_text() == data.decode()
    assert err.size == 0


def test_one_byte_past_the_head(tmp_path, blobs):
    data = b"a" * HEAD_BYTES + b"b"
    capture = OutputCapture(spool_dir=tmp_path)
    _feed(capture, data, HEAD_BYTES)
    out, _ = capture.finish(blobs)
    assert _blob(blobs, out.sha256) == data
    assert out.head == "a" * HEAD_BYTES
    assert out.tail == data[-TAIL_BYTES:].decode()


def test_a_secret_split_across_the_spill_point_is_masked_everywhere(tmp_path, blobs):
    REDACTOR.add(SECRET)
    before = b"x" * (HEAD_BYTES - 5)
    data = before + SECRET.encode() + b"\n" + b"y" * 10_000
    capture = OutputCapture(spool_dir=tmp_path)
    capture("stdout", data[: HEAD_BYTES - 1])  # the secret starts before the head's end
    capture("stdout", data[HEAD_BYTES - 1 :])
    out, _ = capture.finish(blobs)
    masked = before + MASK.encode() + b"\n" + b"y" * 10_000
    assert _blob(blobs, out.sha256) == masked
    assert (out.sha256, out.size) == (hashlib.sha256(masked).hexdigest(), len(masked))
    assert SECRET not in out.head + out.tail + (capture.stdout_text() or "")


def test_discard_closes_the_spool_file(tmp_path):
    small, large = OutputCapture(spool_dir=tmp_path), OutputCapture(spool_dir=tmp_path)
    small("stdout", b"hi\n")
    large("stderr", b"z" * 2 * HEAD_BYTES)  # past the head, even with bytes held back by the redactor
    assert len(_open_spools(tmp_path)) == 1
    small.discard()
    large.discard()
    assert _open_spools(tmp_path) == []
    assert list(tmp_path.iterdir()) == []
