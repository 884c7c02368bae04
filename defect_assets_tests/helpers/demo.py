"""The main job's closing hints, checked as a person would use them: every path absolute and
there, the Dagster instance and data folder the job used, one port in an address and its command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from defect_assets.storage.env import DATA_DIR_ENV


def check_closing_hints(out: str, home: Path, data_dir: Path) -> str:
    """Asserts what the demo's output ``out`` tells a person to run and open; returns the Dagster
    UI's address it names."""
    ui = re.search(r"^Dagster UI \(.*\): (http://127\.0\.0\.1:(\d+)), once started with:\n    (.+)$", out, re.M)
    assert ui, out[-3000:]
    words = shlex.split(ui.group(3))
    # not `./run dev`: this job ran on its own instance and data folder, so the command says which
    assert words[:2] == [f"DAGSTER_HOME={home.resolve()}", f"{DATA_DIR_ENV}={data_dir.resolve()}"], words
    dagster, workspace = Path(words[2]), Path(words[5])
    assert dagster.is_absolute() and dagster.is_file() and dagster.name == "dagster", words
    assert words[3:5] == ["dev", "-w"] and workspace.is_absolute() and workspace.is_file(), words
    assert workspace.name == "workspace.yaml" and words[6:] == ["-p", ui.group(2)], words

    example = re.search(r"^Example: (\S+) score (.+) --url (\S+)$", out, re.M)
    assert example, out[-3000:]
    assert Path(example.group(1)).is_absolute() and Path(example.group(1)).is_file(), example.group(0)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in shlex.split(example.group(2)))
    # the client table's mark is explained wherever it appears, and its columns always
    assert ("\n* = a defect" in out) == ("defect *" in out)
    assert "\np(defect): the model's defect probability" in out
    assert "./run" not in out and " .venv/bin" not in out  # no hint relative to a folder the user may not be in
    return ui.group(1)
