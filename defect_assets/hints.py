"""The commands and addresses the CLI prints for a person to type or open next, spelled for where
they are: absolute paths of the executables of the environment actually running, the real
DAGSTER_HOME and data folder, and the ports actually used. ``./run dev`` is printed only where it
does exactly the same (the checkout's own virtual environment, ``.dagster_home`` and ``data/``)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DAGSTER_UI_PORT = 3000
"""`dagster dev`'s own default port."""
CHECKOUT = Path(__file__).resolve().parents[1]
"""The source checkout the package runs from (an editable install): where `run` and `workspace.yaml` are."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def executable(name: str) -> str | None:
    """The absolute path of the console script ``name`` of the environment running now: the one
    beside the running interpreter (a virtual environment's ``bin/``), else the one on PATH."""
    # not resolved: a virtual environment's python is a symlink to the base interpreter
    beside = Path(sys.executable).absolute().parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    return str(Path(found).absolute()) if found else None


def cli_command(data_dir: Path | None = None) -> str:
    """How to run ``defect-assets`` again from anywhere: the script that is running (or the one of
    this environment), else ``python -m defect_assets.cli``; with ``--data-dir`` unless the data
    folder is the default of the current directory."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "defect-assets" and argv0.is_file():
        words = [str(argv0.absolute())]
    else:
        found = executable("defect-assets")
        words = [found] if found else [str(Path(sys.executable).absolute()), "-m", "defect_assets.cli"]
    if data_dir is not None and Path(data_dir).resolve() != (Path.cwd() / "data").resolve():
        words += ["--data-dir", str(Path(data_dir).resolve())]
    return shlex.join(words)


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_or_other(port: int) -> int:
    """``port`` when nothing listens on it on 127.0.0.1, else a free one."""
    if _free(port):
        return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serves_run(url: str, run_id: str) -> bool:
    """Whether a Dagster UI answers at ``url`` and knows run ``run_id``: run ids are unique, so a UI
    that knows one of this instance's runs is on this instance."""
    query = json.dumps({"query": f"{{ runOrError(runId: {json.dumps(run_id)}) {{ __typename }} }}"}).encode()
    req = urllib.request.Request(url.rstrip("/") + "/graphql", data=query, headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for 127.0.0.1
    try:
        with opener.open(req, timeout=3) as resp:
            doc = json.load(resp)
    except (OSError, ValueError):
        return False
    return ((doc.get("data") or {}).get("runOrError") or {}).get("__typename") == "Run"


@dataclass(frozen=True)
class DagsterUI:
    """Where the Dagster UI on this instance is (or will be), and the command that starts it."""

    url: str
    command: str | None
    """The shell line that starts it at ``url``; None when it already answers there, or when
    ``url`` was configured (DEFECT_ASSETS_DAGSTER_UI_URL) for a UI somewhere else."""
    running: bool = False

    def run_url(self, run_id: str) -> str:
        return f"{self.url}/runs/{run_id}"

    def how(self) -> str:
        """How to reach it, in a few words after its address."""
        if self.running:
            return "(already running on this instance)"
        if self.command is None:
            return "(DEFECT_ASSETS_DAGSTER_UI_URL)"
        return f"(start it with: {self.command})"


def dev_command(dagster_home: Path, data_dir: Path, port: int) -> str:
    """The shell line that starts `dagster dev` on this instance and data folder, on ``port``:
    ``./run dev`` where that is the same thing, else every setting spelled out."""
    home, data = Path(dagster_home).resolve(), Path(data_dir).resolve()
    venv_bin = CHECKOUT / ".venv" / "bin"
    if ((CHECKOUT / "run").is_file() and home == CHECKOUT / ".dagster_home" and data == CHECKOUT / "data"
            and Path(sys.executable).absolute().parent == venv_bin):
        run = "./run" if Path.cwd().resolve() == CHECKOUT else str(CHECKOUT / "run")  # run cds to the checkout
        return f"{shlex.quote(run)} dev -p {port}"
    dagster = executable("dagster")
    words = [dagster] if dagster else [str(Path(sys.executable).absolute()), "-m", "dagster"]
    workspace = CHECKOUT / "workspace.yaml"
    target = ["-w", str(workspace)] if workspace.is_file() else ["-m", "defect_assets.definitions"]
    from defect_assets.storage.env import DATA_DIR_ENV

    return shlex.join([f"DAGSTER_HOME={home}", f"{DATA_DIR_ENV}={data}", *words, "dev", *target, "-p", str(port)])


_CHOSEN: dict[tuple[Path, Path], DagsterUI] = {}


def dagster_ui(dagster_home: Path, data_dir: Path, known_run: str | None = None) -> DagsterUI:
    """The Dagster UI for this instance and data folder: the one already answering on port 3000
    when it knows ``known_run`` (a run of this instance), else port 3000 if free, else another free
    port; a configured DEFECT_ASSETS_DAGSTER_UI_URL wins. One answer per process, so every hint and
    the service's navigation bar name the same address."""
    key = (Path(dagster_home).resolve(), Path(data_dir).resolve())
    if key not in _CHOSEN:
        _CHOSEN[key] = _find_ui(*key, known_run)
    return _CHOSEN[key]


def _find_ui(dagster_home: Path, data_dir: Path, known_run: str | None) -> DagsterUI:
    from defect_assets.serving.settings import ServiceSettings

    configured = (ServiceSettings.field_value("dagster_ui_url") or "").rstrip("/")
    if configured:
        parts = urllib.parse.urlsplit(configured)
        local = parts.hostname in LOOPBACK and parts.port is not None
        if local and known_run and serves_run(configured, known_run):
            return DagsterUI(configured, None, running=True)
        return DagsterUI(configured, dev_command(dagster_home, data_dir, parts.port) if local else None)
    default = f"http://127.0.0.1:{DAGSTER_UI_PORT}"
    if known_run and not _free(DAGSTER_UI_PORT) and serves_run(default, known_run):
        return DagsterUI(default, None, running=True)
    port = free_or_other(DAGSTER_UI_PORT)
    return DagsterUI(f"http://127.0.0.1:{port}", dev_command(dagster_home, data_dir, port))
