"""fastText's layout: one example per line, ``__label__<name> <text>`` (the label may also end the line)."""

from __future__ import annotations

import re
from pathlib import Path

from reglab.data.text_layouts import Columns, TextFile, TextLayout, label_name, mostly, read_lines
from reglab.errors import DataUnavailableError

PREFIX = "__label__"
LABEL_FIRST = re.compile(r"^__label__(\S+)\s+(.*\S)\s*$")
LABEL_LAST = re.compile(r"^(.*\S)\s+__label__(\S+)\s*$")


class FastText(TextLayout):
    name = "fasttext"
    suffixes = ()

    def sniff(self, lines: list[str], columns: Columns) -> bool:
        return mostly(lines, lambda line: PREFIX in line)

    def read(self, path: Path, columns: Columns) -> TextFile:
        texts, labels, lines = [], [], []
        for number, line in read_lines(path):
            if match := LABEL_FIRST.match(line):
                label, text = match.groups()
            elif match := LABEL_LAST.match(line):
                text, label = match.groups()
            elif line.strip().startswith(PREFIX) and len(line.split()) == 1:
                raise DataUnavailableError(f"{path}:{number}: no text after the label")
            else:
                raise DataUnavailableError(f"{path}:{number}: no label: a fastText line is '__label__<name> <text>'")
            texts.append(text)
            labels.append(label_name(label))
            lines.append(number)
        return TextFile(str(path), texts, labels, lines)
