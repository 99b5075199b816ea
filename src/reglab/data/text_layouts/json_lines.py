"""JSON lines: one object per line, the text and the label under data.text_column and data.label_column."""

from __future__ import annotations

import json
from pathlib import Path

from reglab.data.text_layouts import Columns, TextFile, TextLayout, label_name, read_lines
from reglab.errors import DataUnavailableError


def parsed(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


class JsonLines(TextLayout):
    name = "jsonl"
    suffixes = (".jsonl", ".ndjson", ".json")

    def sniff(self, lines: list[str], columns: Columns) -> bool:
        return bool(lines) and all(isinstance(parsed(line), dict) for line in lines[:3])

    def read(self, path: Path, columns: Columns) -> TextFile:
        texts, labels, lines = [], [], []
        for number, line in read_lines(path):
            row = parsed(line)
            if not isinstance(row, dict):
                raise DataUnavailableError(f"{path}:{number}: not a JSON object on one line")
            text_key = columns.text_in(row)
            if text_key is None:
                raise DataUnavailableError(f"{path}:{number}: no {columns.missing_text('key')}; "
                                           f"keys {sorted(row)}")
            texts.append(row[text_key])
            labels.append(label_name(row.get(columns.label)))
            lines.append(number)
        return TextFile(str(path), texts, labels, lines)
