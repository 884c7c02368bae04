"""How a label file is recognised in a batch: the file-recognition part of the table of label
formats. It lives here because ``storage/batches.py`` checks file names and storage imports no
other layer; ``pipeline/label_files.py`` pairs every entry with its parser (``LABEL_FORMATS``),
and ``pipeline.label_files.register_label_format`` adds a format to both at once.

A format claims a file by its name (``file_names``, compared in lower case), by how its name ends
(``suffixes``) and, when the bytes are at hand (ingestion, normalization), by ``sniff(data)``.
The first format of the table that claims a file is its format; a file none claims is not a
label file (ingestion rejects it with the names of the formats)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LabelFileFormat:
    name: str
    yields: str
    """What its rows are: 'image labels', 'points' or 'boxes' (rows of the normalized label table)."""
    file_names: tuple[str, ...] = ()
    suffixes: tuple[str, ...] = ()
    sniff: Callable[[bytes], bool] | None = None
    """A test of the file's bytes, applied (after the name) when they are at hand."""

    def __post_init__(self):
        if not (self.file_names or self.suffixes or self.sniff):
            raise ValueError(f"label format {self.name!r} recognises no file (give file_names, suffixes or sniff)")

    def claims(self, path: str, data: bytes | None = None) -> bool:
        """By the name, then (when ``data`` is given) by the bytes; a format recognised by its bytes
        alone claims nothing without them."""
        name = path.rsplit("/", 1)[-1].lower()
        if self.file_names or self.suffixes:
            if not (name in self.file_names or name.endswith(self.suffixes)):
                return False
        elif data is None:
            return False
        return data is None or self.sniff is None or bool(self.sniff(data))

    def describe(self) -> str:
        shown = [*self.file_names, *(f"*{s}" for s in self.suffixes)] or ["sniffed"]
        what = " / ".join(shown)
        return f"{self.name} ({what}: {self.yields})" if what != self.name else f"{self.name} ({self.yields})"


LABEL_FILE_FORMATS: dict[str, LabelFileFormat] = {}
"""Name -> recognition, in the order formats are tried."""


def register_label_file_format(fmt: LabelFileFormat) -> LabelFileFormat:
    if fmt.name in LABEL_FILE_FORMATS:
        raise ValueError(f"label format {fmt.name!r} is already registered")
    LABEL_FILE_FORMATS[fmt.name] = fmt
    return fmt


def unregister_label_file_format(name: str) -> None:
    LABEL_FILE_FORMATS.pop(name, None)


def label_file_format(path: str, data: bytes | None = None) -> LabelFileFormat | None:
    """The first format that claims ``path`` (and its bytes, when given), or None."""
    return next((f for f in LABEL_FILE_FORMATS.values() if f.claims(path, data)), None)


def known_label_formats() -> str:
    """The formats, for a message: 'labels.csv (image labels), points.csv (points), ...'."""
    return ", ".join(f.describe() for f in LABEL_FILE_FORMATS.values())


for _builtin in (LabelFileFormat("labels.csv", "image labels", file_names=("labels.csv",)),
                 LabelFileFormat("points.csv", "points", file_names=("points.csv",)),
                 LabelFileFormat("voc_xml", "boxes", suffixes=(".xml",))):  # LabelImg Pascal VOC
    register_label_file_format(_builtin)
