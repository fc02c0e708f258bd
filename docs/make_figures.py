"""Draw ``docs/figures/*.png`` by running every python snippet of ``docs/concepts.md``.

The concept guide's figures are whatever its snippets draw, so the text and the pictures
cannot drift apart. Usage: ``python docs/make_figures.py`` (about a minute on a laptop CPU).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
GUIDE = DOCS / "concepts.md"
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_FIGURE = re.compile(r"!\[[^\]]*\]\((figures/[^)]+)\)")


def snippets(path: Path = GUIDE) -> list[tuple[str, str, list[str]]]:
    """(section title, code, figures shown in the section) for every python block."""
    out = []
    for section in re.split(r"^## ", path.read_text(), flags=re.M)[1:]:
        title = section.splitlines()[0].strip()
        figures = _FIGURE.findall(section)
        for code in _BLOCK.findall(section):
            out.append((title, code, figures))
    return out


def run_snippet(code: str, directory: Path, name: str = "<snippet>") -> None:
    """Run ``code`` in a fresh namespace with ``directory`` as working directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    previous = Path.cwd()
    os.chdir(directory)
    try:
        exec(compile(code, name, "exec"), {"__name__": "__snippet__"})
    finally:
        os.chdir(previous)
        plt.close("all")


def main() -> int:
    (DOCS / "figures").mkdir(exist_ok=True)
    for title, code, figures in snippets():
        start = time.perf_counter()
        run_snippet(code, DOCS, name=title)
        print(f"{time.perf_counter() - start:5.1f}s  {title}: {', '.join(figures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
