#!/usr/bin/env python3
"""Regenerate the real-QEMU multifd packet captures in captures/qemu/.

Runs two local QEMU processes (source and destination, TCG, no disk), migrates
the source's RAM to the destination over tcp:127.0.0.1:PORT with multifd
enabled, and records the loopback traffic with tcpdump.  Ground truth comes
from QEMU itself: the source's and destination's `-trace 'multifd_*'` logs,
the source's final `query-migrate` and the destination's `query-status`.

Python 3.11 standard library only.  Must run as root (tcpdump on lo).  Needs
`qemu-system-x86_64` and `tcpdump` on PATH.

Example:
    python3 captures/qemu/make_qemu_captures.py --name qemu10-nocomp-4ch \
        --channels 4 --compression none --port 4444

Files written beside this script (or to --outdir):
    NAME.pcap                  the capture (pcap, linktype EN10MB on lo)
    NAME.query-migrate.json    source's final query-migrate return value
    NAME.src-trace.log         source trace log
    NAME.dst-trace.log         destination trace log
    NAME.json                  metadata (versions, parameters, command lines,
                               tcpdump counts, RAM-content recipe, checks)

The guest RAM comes from a memory-backend-file filled beforehand with a
deterministic, seeded content (see make_ram_image).  The file itself is not
kept; the recipe (seed, fraction, size) is in NAME.json and its SHA-256 too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

PAGE_SIZE = 4096
DEFAULT_UUID = "6d667363-6f70-4500-8000-000000000001"
QEMU = "qemu-system-x86_64"

# name prefix -> QEMU major.minor it claims
NAME_VERSIONS = {"qemu72": "7.2", "qemu10": "10.0"}


# --------------------------------------------------------------------------
# helpers

def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def qemu_version() -> str:
    out = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                         check=True).stdout
    return out.splitlines()[0].strip()


def check_version(name: str, version_line: str) -> str:
    m = re.match(r"QEMU emulator version (\d+)\.(\d+)\.(\d+)", version_line)
    if not m:
        sys.exit(f"cannot parse QEMU version from {version_line!r}")
    have = f"{m.group(1)}.{m.group(2)}"
    prefix = name.split("-", 1)[0]
    want = NAME_VERSIONS.get(prefix)
    if want is None:
        sys.exit(f"capture name {name!r} must start with one of "
                 f"{sorted(NAME_VERSIONS)} (the QEMU version it claims)")
    if have != want:
        sys.exit(f"refusing: name {name!r} claims QEMU {want} but the "
                 f"installed {QEMU} is {have} ({version_line})")
    return have


def trace_events_available() -> set[str]:
    out = subprocess.run([QEMU, "-trace", "help"], capture_output=True,
                         text=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def make_ram_image(path: str, size: int, nonzero_pct: float, seed: int,
                   zero_first_mib: int = 0) -> dict:
    """Fill `path` with `size` bytes of deterministic guest RAM content.

    Each 4 KiB page is non-zero with probability nonzero_pct/100 (seeded
    random.Random(seed)).  Half of the non-zero pages are pseudo-random bytes
    (incompressible), the other half a 64-byte seeded pattern repeated 64
    times with the page index in its first 8 bytes (very compressible).  The
    first `zero_first_mib` MiB are forced to zero (used for the running
    guest so that the firmware's low memory is clean).
    """
    rng = random.Random(seed)
    npages = size // PAGE_SIZE
    zero = bytes(PAGE_SIZE)
    stats = {"pages": npages, "random_pages": 0, "pattern_pages": 0,
             "zero_pages": 0}
    h = hashlib.sha256()
    skip = zero_first_mib * 1024 * 1024 // PAGE_SIZE
    with open(path, "wb") as f:
        for i in range(npages):
            r = rng.random()
            kind = rng.random()
            if r < nonzero_pct / 100.0 and i >= skip:
                if kind < 0.5:
                    page = rng.randbytes(PAGE_SIZE)
                    stats["random_pages"] += 1
                else:
                    chunk = struct.pack(">Q", i) + rng.randbytes(56)
                    page = chunk * (PAGE_SIZE // 64)
                    stats["pattern_pages"] += 1
            else:
                page = zero
                stats["zero_pages"] += 1
            f.write(page)
            h.update(page)
    stats["sha256"] = h.hexdigest()
    return stats


def make_multiboot_kernel(path: str, start: int, npages: int, stride: int,
                          delay: int) -> dict:
    """Write a tiny flat multiboot (v1, a.out-kludge) kernel.

    It loops forever: for ecx = 0, 1, 2, ...: store ecx into the first dword
    of each of `npages` pages from physical address `start` (step `stride`),
    then spin `delay` times.  This keeps a fixed set of guest pages dirty
    while the guest runs, so a migration has several dirty-page iterations.
    """
    load = 0x100000
    end = start + npages * stride
    code = bytearray()
    code += b"\xfa"                                  # 0  cli
    code += b"\x31\xc9"                              # 1  xor ecx,ecx
    code += b"\xbf" + struct.pack("<I", start)       # 3  outer: mov edi,start
    code += b"\x89\x0f"                              # 8  inner: mov [edi],ecx
    code += b"\x81\xc7" + struct.pack("<I", stride)  # 10 add edi,stride
    code += b"\x81\xff" + struct.pack("<I", end)     # 16 cmp edi,end
    code += b"\x72\xf0"                              # 22 jb inner
    code += b"\x41"                                  # 24 inc ecx
    code += b"\xba" + struct.pack("<I", delay)       # 25 mov edx,delay
    code += b"\x4a"                                  # 30 delay: dec edx
    code += b"\x75\xfd"                              # 31 jnz delay
    code += b"\xeb\xe0"                              # 33 jmp outer
    magic, flags = 0x1BADB002, 0x00010000
    checksum = (-(magic + flags)) & 0xFFFFFFFF
    hdr = struct.pack("<8I", magic, flags, checksum, load, load, 0, 0,
                      load + 32)
    blob = hdr + bytes(code)
    with open(path, "wb") as f:
        f.write(blob)
    return {"load_addr": load, "entry": load + 32, "dirty_start": start,
            "dirty_pages": npages, "stride": stride, "delay_loops": delay,
            "sha256": hashlib.sha256(blob).hexdigest(),
            "bytes_hex": blob.hex()}


class QMP:
    """Minimal QMP client: JSON lines over a unix socket."""

    def __init__(self, path: str, timeout: float = 30.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        s.settimeout(timeout)
        self.sock = s
        self.f = s.makefile("rwb")
        self.events: list[dict] = []
        self.greeting = json.loads(self.f.readline())
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args):
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode() + b"\n")
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise EOFError(f"QMP closed during {name}")
            obj = json.loads(line)
            if "event" in obj:
                self.events.append(obj)
                continue
            if "error" in obj:
                raise RuntimeError(f"QMP {name} {args}: {obj['error']}")
            return obj.get("return")

    def close(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------
# one capture

def qemu_argv(side: str, work: str, args, ram_path: str, trace_log: str,
              events: list[str], version: str, kernel: str | None) -> list[str]:
    size = f"{args.ram_mb}M"
    argv = [QEMU, "-name", f"mfdscope-{side}", "-accel", "tcg",
            "-machine", f"{args.machine},memory-backend=mem",
            "-m", size, "-smp", "1",
            "-object",
            f"memory-backend-file,id=mem,size={size},mem-path={ram_path},"
            "share=on",
            "-nodefaults", "-nographic", "-display", "none",
            "-msg", "timestamp=on",
            "-uuid", args.uuid,
            "-qmp", f"unix:{work}/{side}.qmp,server=on,wait=off",
            "-serial", "none", "-monitor", "none"]
    # every -trace option repeats file=: QEMU keeps the file= of the last
    # -trace option it parsed (an option without file= resets it to stderr)
    for ev in events:
        argv += ["-trace", f"enable={ev},file={trace_log}"]
    if side == "src":
        if not args.running:
            argv.append("-S")
        if kernel:
            argv += ["-kernel", kernel]
    else:
        # keep the destination paused after the migration so that its RAM
        # can be compared with the source's
        argv += ["-S", "-incoming", "defer"]
    return argv


def run_capture(args) -> None:
    if os.geteuid() != 0:
        sys.exit("must run as root (tcpdump on lo)")
    version_line = qemu_version()
    version = check_version(args.name, version_line)
    if args.compression not in ("none", "zlib", "zstd"):
        sys.exit("compression must be none, zlib or zstd")

    outdir = os.path.abspath(args.outdir)
    os.makedirs(outdir, exist_ok=True)
    base = os.path.join(outdir, args.name)
    work = tempfile.mkdtemp(prefix=f"mfdcap-{args.name}-")
    log(f"{version_line}; work dir {work}")

    avail = trace_events_available()
    events = ["multifd_*"]
    for ev in ("migration_transferred_bytes", "migrate_transferred"):
        if ev in avail:
            events.append(ev)
    events += [e for e in args.extra_trace if e]

    src_ram = os.path.join(work, "src.ram")
    dst_ram = os.path.join(work, "dst.ram")
    size = args.ram_mb * 1024 * 1024
    ram_info = make_ram_image(src_ram, size, args.nonzero_pct, args.seed,
                              zero_first_mib=args.zero_first_mib)
    with open(dst_ram, "wb") as f:
        f.truncate(size)
    log(f"RAM image: {ram_info}")

    kernel = None
    kernel_info = None
    if args.running:
        kernel = os.path.join(work, "dirty.mb")
        kernel_info = make_multiboot_kernel(
            kernel, start=args.dirty_start_mib * 1024 * 1024,
            npages=args.dirty_pages, stride=PAGE_SIZE, delay=args.dirty_delay)

    src_trace = os.path.join(work, "src-trace.log")
    dst_trace = os.path.join(work, "dst-trace.log")
    src_argv = qemu_argv("src", work, args, src_ram, src_trace, events,
                         version, kernel)
    dst_argv = qemu_argv("dst", work, args, dst_ram, dst_trace, events,
                         version, None)
    uri = f"tcp:127.0.0.1:{args.port}"
    pcap_tmp = os.path.join(work, "capture.pcap")
    tcpdump_argv = ["tcpdump", "-i", "lo", "-s", "0", "-B", "65536",
                    "-w", pcap_tmp, f"tcp port {args.port}"]

    procs: dict[str, subprocess.Popen] = {}
    meta: dict = {}
    try:
        log("starting destination: " + shlex.join(dst_argv))
        procs["dst"] = subprocess.Popen(
            dst_argv, stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(work, "dst.out"), "wb"),
            stderr=subprocess.STDOUT)
        log("starting source: " + shlex.join(src_argv))
        procs["src"] = subprocess.Popen(
            src_argv, stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(work, "src.out"), "wb"),
            stderr=subprocess.STDOUT)
        dst = QMP(f"{work}/dst.qmp")
        src = QMP(f"{work}/src.qmp")

        params = {"multifd-channels": args.channels,
                  "multifd-compression": args.compression}
        for q in (src, dst):
            q.cmd("migrate-set-capabilities", capabilities=[
                {"capability": "multifd", "state": True}])
            q.cmd("migrate-set-parameters", **params)
        src_params = dict(params)
        if args.max_bandwidth:
            src.cmd("migrate-set-parameters", **{"max-bandwidth":
                                                 args.max_bandwidth})
            src_params["max-bandwidth"] = args.max_bandwidth
        if args.downtime_limit is not None:
            src.cmd("migrate-set-parameters", **{"downtime-limit":
                                                 args.downtime_limit})
            src_params["downtime-limit"] = args.downtime_limit

        log("starting tcpdump: " + shlex.join(tcpdump_argv))
        td = subprocess.Popen(tcpdump_argv, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
        procs["tcpdump"] = td
        first = td.stderr.readline()
        if "listening on" not in first:
            raise RuntimeError(f"tcpdump did not start: {first!r}")
        time.sleep(1.0)

        dst.cmd("migrate-incoming", uri=uri)
        if args.running:
            log(f"guest running for {args.run_before:.1f}s before migrating")
            time.sleep(args.run_before)
        t0 = time.monotonic()
        src.cmd("migrate", uri=uri)
        log(f"migrate {uri} issued")

        bumped = False

        def src_done():
            nonlocal bumped
            r = src.cmd("query-migrate")
            st = r.get("status")
            if st in ("failed", "cancelled"):
                raise RuntimeError(f"source migration {st}: {r}")
            if (args.running and args.bump_after and not bumped
                    and time.monotonic() - t0 > args.bump_after):
                src.cmd("migrate-set-parameters",
                        **{"downtime-limit": 60000})
                bumped = True
                src_params["downtime-limit-raised"] = {
                    "to_ms": 60000,
                    "after_s": round(time.monotonic() - t0, 3),
                    "at_dirty_sync_count":
                        r.get("ram", {}).get("dirty-sync-count")}
                log(f"downtime-limit raised to 60000 ms at "
                    f"dirty-sync-count {r.get('ram', {}).get('dirty-sync-count')}")
            return r if st == "completed" else None

        final = wait_for(src_done, args.timeout, "source completed", 0.2)
        log(f"source completed in {time.monotonic() - t0:.2f}s")

        def dst_done():
            r = dst.cmd("query-migrate")
            st = r.get("status")
            if st == "failed":
                raise RuntimeError(f"destination migration failed: {r}")
            s = dst.cmd("query-status")
            return s if (st == "completed" and s.get("status") != "inmigrate") \
                else None

        dst_status = wait_for(dst_done, args.timeout, "destination done", 0.2)
        dst_migrate = dst.cmd("query-migrate")
        src_status = src.cmd("query-status")
        final = src.cmd("query-migrate")  # final, re-read once more
        log(f"destination status {dst_status}")
        time.sleep(1.0)

        td.send_signal(signal.SIGINT)
        _, td_err = td.communicate(timeout=30)
        td_err = first + td_err
        counts = {}
        for key, pat in (("captured", r"(\d+) packets? captured"),
                         ("received_by_filter",
                          r"(\d+) packets? received by filter"),
                         ("dropped_by_kernel",
                          r"(\d+) packets? dropped by kernel")):
            m = re.search(pat, td_err)
            counts[key] = int(m.group(1)) if m else None
        log(f"tcpdump: {counts}")

        # compare destination RAM with the source's (both paused now)
        def sha(p):
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for blk in iter(lambda: f.read(1 << 20), b""):
                    h.update(blk)
            return h.hexdigest()
        src_sha, dst_sha = sha(src_ram), sha(dst_ram)
        if kernel_info:
            # the guest's loop counter, as left in the first dirtied page
            with open(src_ram, "rb") as f:
                f.seek(kernel_info["dirty_start"])
                kernel_info["final_counter_src"] = struct.unpack(
                    "<I", f.read(4))[0]
            with open(dst_ram, "rb") as f:
                f.seek(kernel_info["dirty_start"])
                kernel_info["final_counter_dst"] = struct.unpack(
                    "<I", f.read(4))[0]
            log(f"guest counter src {kernel_info['final_counter_src']} "
                f"dst {kernel_info['final_counter_dst']}")
        log(f"RAM sha256 src {src_sha[:16]} dst {dst_sha[:16]} "
            f"{'EQUAL' if src_sha == dst_sha else 'DIFFER'}")

        for q in (src, dst):
            try:
                q.cmd("quit")
            except (EOFError, OSError):
                pass
            q.close()
        for side in ("src", "dst"):
            procs[side].wait(timeout=30)

        if counts["dropped_by_kernel"] != 0:
            raise RuntimeError(f"tcpdump dropped packets: {counts}; retry")

        shutil.copyfile(pcap_tmp, base + ".pcap")
        shutil.copyfile(src_trace, base + ".src-trace.log")
        shutil.copyfile(dst_trace, base + ".dst-trace.log")
        with open(base + ".query-migrate.json", "w") as f:
            json.dump(final, f, indent=2, sort_keys=True)
            f.write("\n")
        meta = {
            "name": args.name,
            "qemu_version": version_line,
            "qemu_major_minor": version,
            "channels": args.channels,
            "compression": args.compression,
            "page_size": PAGE_SIZE,
            "packet_len": 320 + 8 * (524288 // PAGE_SIZE),
            "port": args.port,
            "uri": uri,
            "guest_ram_bytes": size,
            "guest_ram_mib": args.ram_mb,
            "uuid": args.uuid,
            "machine": args.machine,
            "guest_running": bool(args.running),
            "source_parameters": src_params,
            "destination_parameters": params,
            "capabilities": {"multifd": True},
            "trace_events": events,
            "ram_image": {"recipe": "make_ram_image() in make_qemu_captures.py",
                          "seed": args.seed, "nonzero_pct": args.nonzero_pct,
                          "zero_first_mib": args.zero_first_mib, **ram_info},
            "guest_kernel": kernel_info,
            "command_lines": {
                "source": shlex.join(src_argv),
                "destination": shlex.join(dst_argv),
                "tcpdump": shlex.join(tcpdump_argv),
                "generator": shlex.join([sys.executable] + sys.argv),
            },
            "qmp": {
                "both": [
                    {"execute": "migrate-set-capabilities", "arguments": {
                        "capabilities": [{"capability": "multifd",
                                          "state": True}]}},
                    {"execute": "migrate-set-parameters", "arguments": params},
                ],
                "destination": [{"execute": "migrate-incoming",
                                 "arguments": {"uri": uri}}],
                "source": [{"execute": "migrate", "arguments": {"uri": uri}}],
            },
            "tcpdump": {**counts, "stderr": td_err.strip().splitlines()},
            "source_final_query_migrate": final,
            "source_final_query_status": src_status,
            "destination_query_status": dst_status,
            "destination_query_migrate": dst_migrate,
            "ram_sha256": {"source": src_sha, "destination": dst_sha,
                           "equal": src_sha == dst_sha},
            "pcap_sha256": sha(base + ".pcap"),
            "pcap_bytes": os.path.getsize(base + ".pcap"),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(base + ".json", "w") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        log(f"wrote {base}.pcap ({meta['pcap_bytes']} bytes) and metadata")
    finally:
        for name, p in procs.items():
            if p.poll() is None:
                log(f"terminating {name} (pid {p.pid})")
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--name", required=True,
                    help="capture name, e.g. qemu10-nocomp-4ch (prefix "
                         "qemu72/qemu10 must match the installed QEMU)")
    ap.add_argument("--channels", type=int, default=4)
    ap.add_argument("--compression", default="none",
                    choices=["none", "zlib", "zstd"])
    ap.add_argument("--port", type=int, default=4444)
    ap.add_argument("--ram-mb", type=int, default=64)
    ap.add_argument("--nonzero-pct", type=float, default=8.0,
                    help="share of non-zero 4 KiB pages in guest RAM (%%)")
    ap.add_argument("--seed", type=int, default=20261)
    ap.add_argument("--zero-first-mib", type=int, default=0)
    ap.add_argument("--uuid", default=DEFAULT_UUID)
    ap.add_argument("--machine", default="pc")
    ap.add_argument("--running", action="store_true",
                    help="run the guest (a tiny multiboot kernel that keeps "
                         "pages dirty) instead of keeping it paused with -S")
    ap.add_argument("--run-before", type=float, default=2.0,
                    help="seconds the guest runs before migrate (--running)")
    ap.add_argument("--dirty-start-mib", type=int, default=8)
    ap.add_argument("--dirty-pages", type=int, default=128)
    ap.add_argument("--dirty-delay", type=int, default=2000000)
    ap.add_argument("--max-bandwidth", type=int, default=0,
                    help="source max-bandwidth in bytes/s (0 = default)")
    ap.add_argument("--downtime-limit", type=int, default=None,
                    help="source downtime-limit in ms")
    ap.add_argument("--bump-after", type=float, default=0.0,
                    help="(--running) raise downtime-limit after this many "
                         "seconds so that the migration converges")
    ap.add_argument("--extra-trace", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--outdir", default=os.path.dirname(
        os.path.abspath(__file__)))
    ap.add_argument("--keep-work", action="store_true")
    args = ap.parse_args(argv)
    run_capture(args)


if __name__ == "__main__":
    main()
