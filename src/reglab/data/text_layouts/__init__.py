"""Text file layouts: one small class per file in this package, found by ``layout_of`` without a registry.

A layout says which file suffixes it owns and how to recognise its first lines (``sniff``), and reads a file into
a ``TextFile``: one text and one label name per row, with the line each row came from (errors name file and line).
A file whose suffix no layout owns (``qc.train.all``, ``stsa.binary.dev``) is sniffed. Adding a layout is one new
module here holding a ``TextLayout`` subclass (docs/extending.md)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

from reglab.errors import DataUnavailableError

SNIFF_LINES = 20  # how many non-empty lines a layout sees to recognise a file


def mostly(lines: list[str], test) -> bool:
    """The first line and most of the sniffed lines pass ``test``: a layout is recognised even when a bad line
    sits among the first few, and reading then names that line."""
    return bool(lines) and bool(test(lines[0])) and sum(bool(test(line)) for line in lines) >= 0.8 * len(lines)


@dataclass
class TextFile:
    """The rows of one file (or hub split) as read: texts, label names ('' where a row has none) and each row's
    line (or row number), for errors that name a file and line."""

    where: str
    texts: list
    labels: list[str]
    lines: list[int]


# What data sets call their text field. With data.text_column one of these (the default, text), a file that
# names its text otherwise (GLUE's SST-2: sentence) is read as it ships, without a data.text_column override.
TEXT_COLUMN_NAMES = ("text", "sentence", "review", "content", "document", "comment", "tweet", "body")


@dataclass(frozen=True)
class Columns:
    """Which field holds the text and which the label, where a layout has named fields (data.text_column, ...)."""

    text: str = "text"
    label: str = "label"

    def text_in(self, fields) -> str | None:
        """The field of ``fields`` that holds the text: data.text_column where the file has it; else, when that
        is one of the usual names (TEXT_COLUMN_NAMES), the first of those the file has; else None."""
        fields = list(fields)
        if self.text in fields:
            return self.text
        if self.text in TEXT_COLUMN_NAMES:
            return next((name for name in TEXT_COLUMN_NAMES if name in fields), None)
        return None

    def missing_text(self, field: str = "column") -> str:
        """What a file without its text field lacks, for messages: "'text' column (data.text_column) or ..."."""
        others = [name for name in TEXT_COLUMN_NAMES if name != self.text]
        named = f"{self.text!r} {field} (data.text_column)"
        return named if self.text not in TEXT_COLUMN_NAMES else f"{named} or one of {', '.join(others)}"


class TextLayout:
    """One way a text classification file is laid out. Subclasses set ``name`` and ``suffixes`` and implement
    ``sniff`` and ``read``."""

    name = "layout"
    suffixes: tuple[str, ...] = ()  # file suffixes this layout owns, lower case, with the dot
    binary = False  # True: never sniffed from text lines (parquet)

    def sniff(self, lines: list[str], columns: Columns) -> bool:
        """Whether these first non-empty lines of a file look like this layout."""
        raise NotImplementedError

    def read(self, path: Path, columns: Columns) -> TextFile:
        raise NotImplementedError


def label_name(value) -> str:
    """A label as the label set holds it: 1, 1.0, '1' and ' 1 ' are all '1'; names stay as written."""
    if value is None:
        return ""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def read_text(path: Path) -> str:
    """A file's text: UTF-8, or Latin-1 where it is not UTF-8 (several classic benchmarks, such as the movie-review
    polarity files, ship in Latin-1)."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) for every non-empty line."""
    return [(number, line.rstrip("\r")) for number, line in enumerate(read_text(path).split("\n"), 1)
            if line.strip()]


def first_lines(path: Path) -> list[str]:
    """The first non-empty lines of a file, for sniffing; [] for a binary file."""
    with open(path, "rb") as handle:
        head = handle.read(64 * 1024)
    if b"\0" in head:
        return []
    text = head.decode("utf-8-sig", errors="replace") if head else ""
    lines = [line.rstrip("\r") for line in text.split("\n")[:-1] if line.strip()]  # the last may be cut off
    if not lines and text.strip():
        lines = [text.strip()]
    return lines[:SNIFF_LINES]


def all_layouts() -> list[TextLayout]:
    """One instance of every TextLayout subclass defined in this package's modules that names itself (a shared base
    such as Delimited names no layout), in module-name order."""
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
        importlib.import_module(f"{__name__}.{module}")
    found, seen = [], set()
    stack = list(TextLayout.__subclasses__())
    while stack:
        cls = stack.pop(0)
        if cls not in seen and cls.__module__.startswith(__name__ + ".") and "name" in vars(cls):
            seen.add(cls)
            found.append(cls())
        stack.extend(cls.__subclasses__())
    return sorted(found, key=lambda layout: (type(layout).__module__, layout.name))


def layout_of(path: Path, columns: Columns) -> TextLayout:
    """The layout that owns the file's suffix and accepts its first lines; else the first layout whose sniff accepts
    them; else the suffix's layout (whose reading names the problem); else a one-line error naming the file and its
    first line."""
    layouts = all_layouts()
    lines = first_lines(path)
    if not lines and not any(path.suffix.lower() in layout.suffixes and layout.binary for layout in layouts):
        raise DataUnavailableError(f"{path}: the file is empty")
    owners = [layout for layout in layouts if path.suffix.lower() in layout.suffixes]
    for layout in owners:
        if layout.binary or layout.sniff(lines, columns):
            return layout
    sniffed = [layout for layout in layouts if not layout.binary and layout.sniff(lines, columns)]
    if sniffed:
        return sniffed[0]
    if owners:  # its suffix's layout, though the lines disagree: reading it names what is wrong, and where
        return owners[0]
    shown = lines[0] if len(lines[0]) <= 80 else lines[0][:77] + "..."
    known = ", ".join(f"{layout.name}" for layout in layouts)
    raise DataUnavailableError(f"{path}:1: unknown text layout (first line {shown!r}); known layouts: {known} "
                               f"(text column {columns.text!r}, label column {columns.label!r})")
