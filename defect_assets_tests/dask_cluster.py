"""A real Dask cluster for tests and the scale bench: ``dask scheduler`` and ``dask worker``
processes on 127.0.0.1 (one process and one thread each, no nanny, so a killed worker stays dead),
stopped at the end; plus a deliberately slow task, so a test can kill a worker mid-shard."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from defect_assets_tests.helpers.ports import free_port
from defect_assets_tests.waits import READY_SECONDS

DASK_BIN = Path(sys.executable).parent / "dask"
REPO = Path(__file__).resolve().parents[1]


def worker_env(threads_per_worker: int = 1) -> dict:
    """One core per worker: TensorFlow's thread pools sized to the worker, not to the machine."""
    env = dict(os.environ)
    env.update({"TF_CPP_MIN_LOG_LEVEL": "2", "TF_NUM_INTRAOP_THREADS": str(threads_per_worker),
                "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": str(threads_per_worker),
                "OPENBLAS_NUM_THREADS": str(threads_per_worker), "PYTHONPATH": str(REPO),
                "DASK_DISTRIBUTED__WORKER__DAEMON": "False"})
    return env


class LocalDaskCluster:
    """``dask scheduler`` + ``workers`` x ``dask worker`` on 127.0.0.1, in ``workdir``."""

    def __init__(self, workdir: Path, workers: int = 2, threads_per_worker: int = 1):
        self.workdir, self.n_workers, self.threads = Path(workdir), workers, threads_per_worker
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        with open(self.workdir / log, "ab") as out:
            return subprocess.Popen([str(DASK_BIN), *args], cwd=REPO, env=worker_env(self.threads),
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

    def start(self, timeout: float = READY_SECONDS) -> LocalDaskCluster:
        from distributed import Client

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.scheduler = self._spawn(["scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--dashboard-address", ":0", "--no-show"], "scheduler.log")
        for i in range(self.n_workers):
            self.workers.append(self._spawn(["worker", self.address, "--host", "127.0.0.1", "--nworkers", "1",
                                             "--nthreads", str(self.threads), "--no-nanny", "--no-dashboard",
                                             "--name", f"w{i}", "--memory-limit", "0"], f"worker{i}.log"))
        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=f"{timeout}s", set_as_default=False) as client:
            while len(client.scheduler_info(n_workers=-1)["workers"]) < self.n_workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.n_workers} Dask workers did not join in {timeout} s: "
                                       + self.logs())
                time.sleep(0.2)
        return self

    def worker_pids(self) -> dict[str, int]:
        """Worker address -> pid of the process we started."""
        from distributed import Client

        with Client(self.address, set_as_default=False) as client:
            return client.run(os.getpid)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                         for p in sorted(self.workdir.glob("*.log")))

    def stop(self) -> None:
        for proc in [*self.workers, self.scheduler]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers, self.scheduler]:
            if proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(3)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(5)

    def __enter__(self) -> LocalDaskCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


SLOW_SHARD_SECONDS = 0.6


def slow_backbone_task(config: dict, patches: np.ndarray, cache) -> np.ndarray:
    """The engine's backbone task, held back a moment first: long enough to kill its worker mid-shard."""
    from defect_assets.pipeline.engine import backbone_task

    time.sleep(SLOW_SHARD_SECONDS)
    return backbone_task(config, patches, cache)
