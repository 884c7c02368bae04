"""How long the tests wait for a child process (Azurite, Dask, PostgreSQL, daemons, servers,
`dagster` subprocesses) to become ready: a deadline sized for a busy 2-core machine (a CI runner
beside other work), never a measurement. A wait polls for readiness and returns as soon as the
child is ready; when it gives up, it reports the child's log. Latency belongs in bench/."""

READY_SECONDS = 300
"""Readiness of one child process (a server accepting connections, workers joined, a run queued)."""
SUBPROCESS_SECONDS = 900
"""One whole `dagster`/CLI subprocess that does real work (materializes assets, trains a tiny model)."""


def run_child(cmd: list[str], timeout: float = SUBPROCESS_SECONDS, **kwargs):
    """``subprocess.run(cmd, capture_output=True, text=True, ...)``; when the child is still running
    at the deadline, an AssertionError that carries the end of its output (its log), not a bare
    TimeoutExpired."""
    import subprocess

    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    except subprocess.TimeoutExpired as e:
        def text(b) -> str:
            return (b.decode(errors="replace") if isinstance(b, bytes) else b or "")[-4000:]

        raise AssertionError(f"{cmd[0]} still running after {timeout:.0f}s; its output:\n{text(e.stdout)}\n"
                             f"{text(e.stderr)}") from None
