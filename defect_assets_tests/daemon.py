"""A real dagster-daemon for tests: started on a workspace in a temporary folder, every process it
spawns remembered so all of them are stopped at the end, and a wait that shows the daemon's
log when it times out."""

import contextlib
import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

DAGSTER_BIN = Path(sys.executable).parent / "dagster"


def _descendants(pid: int) -> set[int]:
    """Child processes (code server, run workers) of a process we started, from /proc."""
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        for task in glob.glob(f"/proc/{p}/task/*/children"):
            with contextlib.suppress(OSError), open(task) as f:
                kids = {int(k) for k in f.read().split()}
            todo += list(kids - out)
            out |= kids
    return out


def _stop(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to one process we started (checked to still be a dagster process)."""
    with contextlib.suppress(OSError):
        if b"dagster" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return  # gone, and the pid reused by someone else
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


class Daemon:
    """dagster-daemon run on a workspace; remembers every process it spawned, to stop them all."""

    def __init__(self, workdir: Path, env: dict):
        self.workdir, self.env, self.proc, self.spawned = workdir, env, None, set()

    def start(self) -> None:
        log = open(self.workdir / "daemon.log", "ab")  # noqa: SIM115 (the child writes to it)
        self.proc = subprocess.Popen([str(DAGSTER_BIN.parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                     cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def watch(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.spawned |= _descendants(self.proc.pid)

    def kill(self) -> None:
        """A crash: SIGKILL to the daemon alone (its code server and runs live on)."""
        self.watch()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop_all(self) -> None:
        self.watch()
        if self.proc and self.proc.poll() is None:
            _stop(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for pid in sorted(self.spawned):
            _stop(pid, grace=2.0)


def wait_for(what: str, condition, daemon: Daemon, timeout: float) -> float:
    start = time.monotonic()
    while True:
        daemon.watch()
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            tail = (daemon.workdir / "daemon.log").read_text(errors="replace")[-4000:]
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; daemon log:\n{tail}")
        time.sleep(0.5)


