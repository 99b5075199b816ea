"""scripts/docs_check.py finds every number it re-measures where the docs state it (no training here: the
script itself is run by `make docs-check`)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def docs_check():
    spec = importlib.util.spec_from_file_location("docs_check", ROOT / "scripts" / "docs_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_checked_number_is_found_in_the_docs():
    check = docs_check()
    demo = check.markdown_rows((ROOT / "docs" / "usage.md").read_text(), "| Regularizer | n | Test acc. (%)")
    assert set(demo) == {"none", "l1", "l2", "weight_decay", "elasticnet", "dropout"}
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"\$ python train.py data=digits reg=elasticnet trainer.max_epochs=2\n(?:.*\n)*?done in [\d.]+ s: "
                     r"test/acc=\S+", readme)
    bench = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in check.ERROR_ROWS:
        assert re.search(rf"\| time to error, an? {name} \(`[^`]*`\) \| ([\d.]+) \|", bench), name
    assert check.PROX_CLAIM.search((ROOT / "docs" / "configuration.md").read_text())
    assert "docs-check:" in (ROOT / "Makefile").read_text()
