"""Parquet files (the hub's layout), columns data.text_column and data.label_column."""

from __future__ import annotations

from pathlib import Path

from reglab.data.text_layouts import Columns, TextFile, TextLayout, label_name
from reglab.errors import DataUnavailableError


class Parquet(TextLayout):
    name = "parquet"
    suffixes = (".parquet",)
    binary = True

    def sniff(self, lines: list[str], columns: Columns) -> bool:
        return False

    def read(self, path: Path, columns: Columns) -> TextFile:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as err:
            raise DataUnavailableError(f"{path}: cannot read as parquet: {err}") from None
        text_column = columns.text_in(table.column_names)
        if text_column is None:
            raise DataUnavailableError(f"{path}: expected a {columns.missing_text()}, found {table.column_names}")
        texts = table.column(text_column).to_pylist()
        labels = ([label_name(v) for v in table.column(columns.label).to_pylist()]
                  if columns.label in table.column_names else [""] * len(texts))
        return TextFile(str(path), texts, labels, list(range(1, len(texts) + 1)))
