"""The documentation's examples run, and the risk page names every reason code.

Every fenced ```python block in ``docs/*.md`` is executed on its own, in a fresh namespace, the way
a reader would paste it; the blocks assert their own results.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mats import _core, codes

DOCS = Path(__file__).resolve().parent.parent / "docs"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    out = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append((f"{page.name}:{line}", m.group(1)))
    return out


BLOCKS = _blocks()


def test_docs_have_examples() -> None:
    pages = {name.split(":")[0] for name, _ in BLOCKS}
    assert {"allocation.md", "risk.md"} <= pages


@pytest.mark.parametrize(("where", "source"), BLOCKS, ids=[w for w, _ in BLOCKS])
def test_example_runs(where: str, source: str) -> None:
    # padded so that a traceback points at the line in the page
    line = int(where.rsplit(":", 1)[1])
    code = compile("\n" * line + source, str(DOCS / where.split(":")[0]), "exec")
    exec(code, {"__name__": f"docs_example_{where}"})


def test_risk_page_names_every_reason_code() -> None:
    text = (DOCS / "risk.md").read_text(encoding="utf-8")
    missing = [c for c in _core.reason_codes() if f"`{c}`" not in text]
    assert not missing, f"docs/risk.md does not describe {missing}"


def test_reason_codes_agree_between_core_and_python() -> None:
    python_codes = {v for k, v in vars(codes).items() if k.isupper() and isinstance(v, str)}
    assert python_codes == set(_core.reason_codes())
