"""One example per line, the label first, then a space or a tab, then the text: the layout of the preprocessed
sentence-classification benchmarks (``1 a gripping , funny film .``; files such as ``rt-polarity.all`` or
``stsa.binary.train``). A file is this layout when its first line and most of the next start with an integer label;
then every line must."""

from __future__ import annotations

import re
from pathlib import Path

from reglab.data.text_layouts import Columns, TextFile, TextLayout, label_name, mostly, read_lines
from reglab.errors import DataUnavailableError

LINE = re.compile(r"^\s*([+-]?\d+)[ \t]+(.*\S)\s*$")


class LabelFirst(TextLayout):
    name = "label-first"
    suffixes = ()

    def sniff(self, lines: list[str], columns: Columns) -> bool:
        return mostly(lines, LINE.match)

    def read(self, path: Path, columns: Columns) -> TextFile:
        texts, labels, lines = [], [], []
        for number, line in read_lines(path):
            match = LINE.match(line)
            if match is None:
                raise DataUnavailableError(f"{path}:{number}: no label: each line is '<integer label> <text>' "
                                           f"(got {line[:60]!r})")
            labels.append(label_name(match.group(1)))
            texts.append(match.group(2))
            lines.append(number)
        return TextFile(str(path), texts, labels, lines)
