"""Driving a live run: start the source, refresh the view, stop, print the summary.

Exit status (``mfdscope live`` and ``mfdscope proxy``):

* 0 - stopped normally: Ctrl-C / SIGTERM, ``--duration``, ``--until-idle``, or the
  source ended by itself without error.  Drops and holes are reported, not fatal.
* 1 - the run ended on an error or could not keep everything: the capture source died,
  the proxy's destination refused a connection, writing ``--write`` failed (the file
  keeps its whole records and the analysis went on to the end).
* 2 - nothing ran: bad usage, tcpdump missing or refused, cannot listen, QMP socket
  unusable.

Every abnormal end is one line on stderr (``PROG: error: ...``); the final summary is
printed in every case.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
import time

from .qmp import QmpClient
from .report import Reporter
from .session import LiveSession, SourceError


class RunResult:
    def __init__(self, status: int, final: dict, capture):
        self.status, self.final, self.capture = status, final, capture


def run(source, session: LiveSession, *, prog: str, interval: float = 1.0,
        duration: float | None = None, until_idle: float | None = None,
        json_lines: bool = False, qmp: QmpClient | None = None,
        qemu_version: str | None = None, output=None, out=None, err=None) -> RunResult:
    """Run ``source`` into ``session`` until a stop condition; see the module doc."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        source.start(session)
    except SourceError as exc:
        print(f"{prog}: error: {exc}", file=err, flush=True)
        if output is not None:
            output.close()
        return RunResult(2, {}, None)
    print(f"{prog}: {source.describe()}" + ("" if json_lines else "; Ctrl-C stops"),
          file=err, flush=True)
    reporter = Reporter(source.name, qemu_version=qemu_version, started=session.started)
    restore = _install_signals(session)
    t_start = time.monotonic()
    last_qmp = None
    live = None
    try:
        if not json_lines:
            from rich.console import Console
            from rich.live import Live
            console = Console(file=out)
            live = Live(console=console, auto_refresh=False, transient=False)
            live.start()
        next_tick = t_start + interval
        while True:
            now = time.monotonic()
            deadline = next_tick
            if duration is not None:
                deadline = min(deadline, t_start + duration)
            idle = source.idle_since() if until_idle is not None else None
            if idle is not None:
                deadline = min(deadline, idle + until_idle)
            session.stop_requested.wait(max(0.0, deadline - now))
            now = time.monotonic()
            if duration is not None and now >= t_start + duration:
                session.request_stop("duration")
            idle = source.idle_since() if until_idle is not None else None
            if idle is not None and now >= idle + until_idle:
                session.request_stop("idle")
            if session.stop_requested.is_set():
                break
            if now >= next_tick:
                next_tick += interval * max(1, int((now - next_tick) // interval) + 1)
                if qmp is not None:
                    last_qmp = qmp.sample()
                _emit(reporter.report(session.snapshot(), source_stats=source.stats(),
                                      qmp=last_qmp), live, out, json_lines)
        source.stop()
        source.join()
        session.finish()
        if output is not None:
            output.close()
            if output.error:
                session.errors.append(output.error)
        if qmp is not None:
            last_qmp = qmp.sample()
            qmp.close()
        cap = session.snapshot()
        final = reporter.report(cap, source_stats=source.stats(), qmp=last_qmp, final=True)
        final.update(stop_reason=session.stop_reason, errors=list(session.errors),
                     summary=cap.summary())
        if output is not None:
            final["capture_file"] = {"path": output.path, "bytes": output.bytes_written,
                                     "error": output.error}
        _emit(final, live, out, json_lines)
    finally:
        if live is not None:
            live.stop()
        restore()
    if not json_lines:
        _print_final(final, out)
    for e in session.errors:
        print(f"{prog}: error: {e}", file=err, flush=True)
    reason = {"interrupted": "stopped by signal", "duration": "stopped after --duration",
              "idle": "stopped after --until-idle", "source": "the source ended"
              }.get(session.stop_reason or "", session.stop_reason)
    if not session.errors:
        print(f"{prog}: {reason}; {_one_line(final)}", file=err, flush=True)
    return RunResult(1 if session.errors else 0, final, cap)


def _emit(rep: dict, live, out, json_lines: bool) -> None:
    if json_lines:
        out.write(json.dumps(rep, default=str) + "\n")
        out.flush()
    else:
        from .view import render
        live.update(render(rep), refresh=True)


def _one_line(final: dict) -> str:
    tot = final["totals"]
    drops = final.get("drops")
    return (f"{tot['multifd_channels']} multifd channels, {tot['multifd_tcp_bytes']:,} bytes, "
            f"multifd_bytes {final['multifd_bytes']['value']:,} "
            f"(QEMU {final['multifd_bytes']['qemu_version']}), "
            f"drops {'-' if drops is None else drops}, holes {tot['holes']}")


def _print_final(final: dict, out) -> None:
    acc = final.get("accounting", {})
    out.write("\nsummary: " + _one_line(final) + "\n")
    for line in (acc.get("explanation") or "").split("\n"):
        if line:
            out.write(f"  {line}\n")
    if final.get("capture_file"):
        cf = final["capture_file"]
        out.write(f"capture file: {cf['path']} ({cf['bytes']:,} bytes"
                  + (", INCOMPLETE" if cf["error"] else "") + ")\n")
    out.flush()


def _install_signals(session: LiveSession):
    """SIGINT / SIGTERM ask the run to stop (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        session.request_stop("interrupted")

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def restore():
        for s, h in old.items():
            signal.signal(s, h)
    return restore
