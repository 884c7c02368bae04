"""docs/settings.md holds exactly the tables generated from the settings classes, every setting
there has a doc line, and no module reads one of our variables past the classes."""

from __future__ import annotations

import re
from pathlib import Path

from defect_assets import settings_doc
from defect_assets.storage.settings import env_name

PACKAGE = Path(__file__).resolve().parents[1] / "defect_assets"
# the modules that read variables: the settings classes' own
SETTINGS_MODULES = {"storage/settings.py", "ml/settings.py"}
# variables that are not ours (read here on purpose; see "Read elsewhere" in docs/settings.md)
FOREIGN = {"DAGSTER_HOME", "KERAS_HOME"}
ENV_ACCESS = re.compile(r"os\.environ|getenv|environ\.get|environ\[")
WRITE = re.compile(r"os\.environ\[[^\]]+\]\s*=[^=]|os\.environ\.setdefault\(")


def generated_part(text: str) -> str:
    start = text.index(settings_doc.BEGIN) + len(settings_doc.BEGIN)
    return text[start:text.index(settings_doc.END)].strip("\n")


def test_the_doc_holds_exactly_the_generated_tables():
    text = settings_doc.DOC.read_text()
    assert generated_part(text) == settings_doc.tables(), "stale: run python -m defect_assets.settings_doc"
    assert settings_doc.render(text) == text


def test_every_variable_has_one_line_of_doc_and_appears_once_per_class():
    text = settings_doc.DOC.read_text()
    for cls in settings_doc.CLASSES:
        names = [env_name(cls, f) for f in cls.model_fields if env_name(cls, f)]
        assert len(names) == len(set(names)), cls.__name__
        for field, info in cls.model_fields.items():
            if env_name(cls, field):
                assert (info.description or "").strip(), f"{cls.__name__}.{field} has no doc line"
                assert f"| `{env_name(cls, field)}` |" in text


def test_a_new_variable_without_its_row_is_caught():
    """The check sees a stale doc: one row fewer than the classes give."""
    text = settings_doc.DOC.read_text()
    stale = "\n".join(line for line in text.splitlines() if "DEFECT_ASSETS_MAX_WINDOWS" not in line) + "\n"
    assert generated_part(stale) != settings_doc.tables()
    assert "DEFECT_ASSETS_MAX_WINDOWS" in settings_doc.render(stale)


def direct_reads(root: Path, skip: set[str]) -> list[str]:
    """Lines outside the settings modules that read the environment, other than a foreign variable
    or a write (the CLI hands --data-dir to the runs it starts through the environment)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel in skip:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ENV_ACCESS.search(line) and not WRITE.search(line) and not any(v in line for v in FOREIGN):
                found.append(f"{rel}:{n}: {line.strip()}")
    return found


def test_no_module_reads_our_variables_past_the_settings_classes():
    assert direct_reads(PACKAGE, SETTINGS_MODULES) == []
    # and no DEFECT_ASSETS_ variable is named as text next to an environment access
    for path in PACKAGE.rglob("*.py"):
        for line in path.read_text().splitlines():
            assert not (ENV_ACCESS.search(line) and "DEFECT_ASSETS_" in line), f"{path}: {line}"


def test_the_scan_catches_a_direct_read(tmp_path):
    (tmp_path / "x.py").write_text('import os\nLIMIT = int(os.environ.get("DEFECT_ASSETS_LIMIT", "3"))\n'
                                   'HOME = os.environ.get("DAGSTER_HOME")\nos.environ["A"] = "1"\n'
                                   'def f(environ):\n    return environ.get(NAME_ENV)\n')
    assert [r.split(":")[1] for r in direct_reads(tmp_path, set())] == ["2", "6"]
