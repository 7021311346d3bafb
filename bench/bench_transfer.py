"""gmi-fsm's SMB transfer path vs the Samba CLI (`smbclient`), same file, same server,
same run; and the PowerShell Remoting path's bytes/s through the SIMULATOR.

One real Samba server on 127.0.0.1 (tests/support/samba.py: its own configuration,
private password database, a free port), one file of random bytes (2 GiB by default).

  (a) gmi-fsm: ``orchestrator.hyperv.transfer.upload_file`` with the spec's SMB options,
      against the SIMULATOR whose host folder D:\\GMI is the share's folder (the scripts
      around the transfer: the share's path, the digest of the destination, the commit
      that hashes the part file and renames it). Timed: ``send_s``, from opening the
      channel (the SMB login) to the server confirming the last byte; also the whole call,
      which adds the local sha256 and the host's sha256 of what arrived.
  (b) ``smbclient -c 'put FILE NAME'`` with the same protection, timed from start to exit
      (process start and login included).

Protection: ``encrypt`` (gmi-fsm's default, ``host.smb_encrypt: true``) and ``sign``
(``smb_encrypt: false``); gmi-fsm always signs, as SMB 3.1.1 wants. smbclient's own
default (no signing against this server) is measured once, for information. Then the
reverse once: ``download_folder`` vs ``smbclient -c 'get'`` (encrypted).

The PSRP path is measured through the SIMULATOR (it interprets the real scripts in this
process, so this is the cost of gmi-fsm's side: reading, hashing, base64, the pieces per
call, and the simulated host decoding and writing; a real WinRM host adds HTTP, TLS and
its own XML and base64 work).

Each (a)/(b) pair alternates its order; the destination is removed between runs. Goal:
(a) at least 0.8 x (b)'s throughput.
Usage: python bench/bench_transfer.py [GiB] [ROUNDS] [PSRP_MiB]  (defaults 2, 2, 256)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from orchestrator.hyperv.simulator import HyperVSimulator  # noqa: E402
from orchestrator.hyperv.smb import SmbLogin  # noqa: E402
from orchestrator.hyperv.transfer import (  # noqa: E402
    TransferOptions,
    download_folder,
    sha256_file,
    upload_file,
)
from tests.support.samba import samba_unavailable_reason, start_samba  # noqa: E402

MiB = 1 << 20


def _random_file(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(64 * MiB, left)
            fh.write(os.urandom(n))
            left -= n


def _quiet(stream: str, data: bytes) -> None:
    return None


def main() -> None:
    gib = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    psrp_mib = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    reason = samba_unavailable_reason()
    if reason:
        sys.exit(f"bench_transfer: {reason}")
    size = int(gib * (1 << 30))
    work = Path(tempfile.mkdtemp(prefix="gmi-bench-transfer-"))
    samba = start_samba(work / "samba")
    try:
        print(f"Samba {samba.host}:{samba.port}, share {samba.share} = {samba.share_dir}", flush=True)
        src = work / "big.bin"
        _random_file(src, size)
        sim = HyperVSimulator(work / "sim.json")
        sim.mount("D:\\GMI", samba.share_dir)
        sim.add_smb_share(samba.share, "D:\\GMI")
        remote, there = "D:\\GMI\\bench\\big.bin", samba.share_dir / "bench" / "big.bin"

        def login(encrypt: bool) -> SmbLogin:
            return SmbLogin(
                samba.host, samba.share, samba.port, samba.user, samba.password, "ntlm", encrypt=encrypt
            )

        def clear() -> None:
            shutil.rmtree(samba.share_dir / "bench", ignore_errors=True)
            (samba.share_dir / "bench").mkdir()

        def gmi_put(encrypt: bool) -> dict[str, float]:
            clear()
            opts = TransferOptions(call_timeout_s=3600, smb=login(encrypt))
            t0 = time.monotonic()
            done = asyncio.run(upload_file(sim, src, remote, options=opts, sink=_quiet))
            whole = time.monotonic() - t0
            assert done.channel == "smb" and there.stat().st_size == size
            return {"send_s": done.send_s, "whole_s": whole, "hash_s": done.hash_s, "commit_s": done.commit_s}

        def cli_put(protection: str) -> float:
            clear()
            t0 = time.monotonic()
            out = samba.smbclient(f'put "{src}" bench\\big.bin', protection=protection)
            took = time.monotonic() - t0
            if out.returncode != 0 or there.stat().st_size != size:
                raise SystemExit(f"smbclient put failed: {out.stdout}{out.stderr}")
            return took

        results: dict[str, object] = {"bytes": size, "rounds": rounds, "load_before": os.getloadavg()}
        for protection, encrypt, n in (("encrypt", True, rounds), ("sign", False, rounds)):
            ratios, gmi_s, cli_s, whole_s = [], [], [], []
            for r in range(n):
                if r % 2 == 0:
                    a = gmi_put(encrypt)
                    b = cli_put(protection)
                else:
                    b = cli_put(protection)
                    a = gmi_put(encrypt)
                gmi_s.append(a["send_s"])
                whole_s.append(a["whole_s"])
                cli_s.append(b)
                ratios.append(b / a["send_s"])
                print(
                    f"  put {protection:7} round {r + 1}: gmi-fsm {size / MiB / a['send_s']:7.1f} MiB/s "
                    f"(whole call with both sha256: {size / MiB / a['whole_s']:6.1f} MiB/s), "
                    f"smbclient {size / MiB / b:7.1f} MiB/s, ratio {b / a['send_s']:.2f}",
                    flush=True,
                )
            results[f"put_{protection}"] = {
                "gmi_mib_s": [round(size / MiB / s, 1) for s in gmi_s],
                "gmi_whole_mib_s": [round(size / MiB / s, 1) for s in whole_s],
                "smbclient_mib_s": [round(size / MiB / s, 1) for s in cli_s],
                "ratios": [round(x, 3) for x in ratios],
                "ratio_median": round(statistics.median(ratios), 3),
                "ratio_of_totals": round(sum(cli_s) / sum(gmi_s), 3),
            }
        default_s = cli_put("off")
        results["smbclient_unsigned_mib_s"] = round(size / MiB / default_s, 1)
        print(f"  put smbclient without signing (its default here): {size / MiB / default_s:.1f} MiB/s")

        # The reverse: the file on the share, fetched here.
        clear()
        shutil.copyfile(src, there)
        dest = work / "fetched"
        t0 = time.monotonic()
        got = asyncio.run(
            download_folder(
                sim, "D:\\GMI\\bench", dest, options=TransferOptions(3600, smb=login(True)), sink=_quiet
            )
        )
        whole = time.monotonic() - t0
        (f,) = got
        shutil.rmtree(dest)
        t0 = time.monotonic()
        out = samba.smbclient(f'get bench\\big.bin "{work / "cli-got.bin"}"', protection="encrypt")
        cli_get = time.monotonic() - t0
        if out.returncode != 0:
            raise SystemExit(f"smbclient get failed: {out.stdout}{out.stderr}")
        # gmi-fsm hashes what arrives as it arrives; smbclient does not: the same work is
        # its get plus a sha256 of the file it wrote.
        t0 = time.monotonic()
        sha256_file(work / "cli-got.bin")
        cli_hash = time.monotonic() - t0
        (work / "cli-got.bin").unlink()
        results["get_encrypt"] = {
            "gmi_mib_s": round(size / MiB / f.send_s, 1),
            "gmi_whole_mib_s": round(size / MiB / whole, 1),
            "smbclient_mib_s": round(size / MiB / cli_get, 1),
            "smbclient_then_sha256_mib_s": round(size / MiB / (cli_get + cli_hash), 1),
            "ratio": round(cli_get / f.send_s, 3),
            "ratio_same_work": round((cli_get + cli_hash) / f.send_s, 3),
        }
        print(
            f"  get encrypt: gmi-fsm {size / MiB / f.send_s:.1f} MiB/s hashed as it arrives (whole call with "
            f"the host's sha256: {size / MiB / whole:.1f}), smbclient {size / MiB / cli_get:.1f} MiB/s "
            f"(then sha256: {size / MiB / (cli_get + cli_hash):.1f}), ratio {cli_get / f.send_s:.2f} "
            f"(same work: {(cli_get + cli_hash) / f.send_s:.2f})"
        )
        clear()

        # PowerShell Remoting pieces, through the SIMULATOR.
        small = work / "psrp.bin"
        _random_file(small, psrp_mib * MiB)
        opts = TransferOptions(call_timeout_s=3600)
        done = asyncio.run(upload_file(sim, small, "D:\\GMI\\bench\\psrp.bin", options=opts, sink=_quiet))
        fetched = asyncio.run(
            download_folder(sim, "D:\\GMI\\bench", work / "psrp-got", options=opts, sink=_quiet)
        )
        results["psrp_simulated"] = {
            "bytes": psrp_mib * MiB,
            "put_mib_s": round(psrp_mib / done.send_s, 1),
            "get_mib_s": round(psrp_mib / fetched[0].send_s, 1),
        }
        print(
            f"  PSRP pieces through the SIMULATOR ({psrp_mib} MiB): put {psrp_mib / done.send_s:.1f} MiB/s, "
            f"get {psrp_mib / fetched[0].send_s:.1f} MiB/s"
        )
        results["load_after"] = os.getloadavg()
        enc = results["put_encrypt"]
        assert isinstance(enc, dict)
        print(
            f"SMB put, encrypted: gmi-fsm / smbclient throughput = {enc['ratio_median']} (median of "
            f"{rounds} pairs; goal >= 0.8)"
        )
        print(json.dumps(results))
    finally:
        samba.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
