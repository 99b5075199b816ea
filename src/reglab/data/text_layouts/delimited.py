"""TSV or CSV with a header line naming the columns (GLUE's layout): the text and label columns are
data.text_column and data.label_column. TSVs are read with quoting off, as GLUE writes them: SST-2's sentences
hold `"` characters that a quoting reader would merge rows at. CSVs use standard CSV quoting."""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path

from reglab.data.text_layouts import Columns, TextFile, TextLayout, label_name, read_text
from reglab.errors import DataUnavailableError


class Delimited(TextLayout):
    delimiter = "\t"

    def dialect(self) -> dict:
        quoting = csv.QUOTE_NONE if self.delimiter == "\t" else csv.QUOTE_MINIMAL
        return {"delimiter": self.delimiter, "quoting": quoting}

    def header(self, line: str) -> list[str]:
        return [field.strip() for field in next(csv.reader([line], **self.dialect()), [])]

    def sniff(self, lines: list[str], columns: Columns) -> bool:
        return bool(lines) and columns.text_in(self.header(lines[0])) is not None

    def read(self, path: Path, columns: Columns) -> TextFile:
        csv.field_size_limit(sys.maxsize)
        reader = csv.reader(io.StringIO(read_text(path)), **self.dialect())
        header = next((row for row in reader if any(field.strip() for field in row)), [])
        header = [field.strip() for field in header]
        text_column = columns.text_in(header)
        if text_column is None:
            raise DataUnavailableError(f"{path}:{reader.line_num}: expected a {columns.missing_text()} in the header "
                                       f"line, found {header}")
        text_at = header.index(text_column)
        label_at = header.index(columns.label) if columns.label in header else None
        texts, labels, lines = [], [], []
        for row in reader:
            if not any(field.strip() for field in row):
                continue
            if len(row) != len(header):
                raise DataUnavailableError(f"{path}:{reader.line_num}: {len(row)} fields, but the header has "
                                           f"{len(header)} ({', '.join(header)})")
            texts.append(row[text_at])
            labels.append("" if label_at is None else label_name(row[label_at]))
            lines.append(reader.line_num)
        return TextFile(str(path), texts, labels, lines)


class TSV(Delimited):
    name = "tsv"
    suffixes = (".tsv",)
    delimiter = "\t"


class CSV(Delimited):
    name = "csv"
    suffixes = (".csv",)
    delimiter = ","
