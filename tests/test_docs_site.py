"""The documentation site: it builds in strict mode, every page's python snippets run, every
public name has a docstring and an entry in the API reference, links into the source exist."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import formerkit

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
_PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")
_ENTRY = re.compile(r"^::: ([\w.]+)\s*$", re.M)

# concepts.md has its own test (tests/test_docs.py: snippets, figures, source links).
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.name != "concepts.md")
SNIPPET_PAGES = [p for p in PAGES if _PYTHON.search(p.read_text())]
# Pages a newcomer learns from: each shows at least one snippet that the test runs.
MUST_RUN = ["getting-started.md", "gpt.md", "llama.md", "bert.md", "translation.md",
            "forecasting.md", "har.md", "blocks.md", "training.md", "interop.md", "design.md"]


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


def _public_names() -> dict[str, str]:
    """name -> defining module for every name of ``formerkit.__all__``."""
    names = dict(formerkit._EXPORTS)
    names["__version__"] = "formerkit"
    assert set(names) == set(formerkit.__all__)
    return names


def _docstring(module: str, name: str) -> str | None:
    """The docstring written in the source (a dataclass's generated ``__doc__`` does not
    count), found statically so that a re-export cannot stand in for it."""
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text())
    for i, node in enumerate(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) \
                and node.name == name:
            return ast.get_docstring(node)
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            following = tree.body[i + 1] if i + 1 < len(tree.body) else None
            if isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant) \
                    and isinstance(following.value.value, str):
                return following.value.value
            return None
    raise AssertionError(f"{name} is not defined at the top level of {module}")


@pytest.mark.parametrize("name", sorted(_public_names()))
def test_public_name_has_a_docstring(name):
    module = _public_names()[name]
    if name != "__version__":  # follow a re-export to the module that defines the name
        module = getattr(importlib.import_module(module), name).__module__
    doc = _docstring(module, name)
    assert doc and len(doc.split()) >= 3, f"formerkit.{name} needs a docstring"


def test_reference_has_an_entry_for_every_public_name():
    entries = {m for page in REFERENCE.glob("*.md") for m in _ENTRY.findall(page.read_text())}
    missing = [name for name, module in _public_names().items()
               if f"{module}.{name}" not in entries]
    assert not missing, f"no ::: entry in docs/reference/ for {missing}"


def test_learning_pages_have_runnable_snippets():
    have = {_page_id(p) for p in SNIPPET_PAGES}
    assert not set(MUST_RUN) - have, set(MUST_RUN) - have


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("page", SNIPPET_PAGES, ids=_page_id)
def test_page_snippets_run_in_order(page, tmp_path, monkeypatch, one_thread):
    """A page's ``python`` blocks run top to bottom in one namespace, as a reader would paste
    them; ``py`` and ``bash`` blocks (real data, downloads, long runs) are shown only."""
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__snippet__"}
    for i, code in enumerate(_PYTHON.findall(page.read_text())):
        exec(compile(code, f"{_page_id(page)} (python block {i + 1})", "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_links_into_the_repository_exist(page):
    for target in _LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        resolved = (page.parent / target).resolve()
        assert resolved.exists(), f"{_page_id(page)} links {target}, which does not exist"


def _load_hooks():
    pytest.importorskip("mkdocs")
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hook_maps_only_existing_repository_files():
    hooks = _load_hooks()
    docs, root = DOCS.resolve(), ROOT.resolve()
    target = hooks._repository_target("results/har.md", "../../src/formerkit/nn/layers.py",
                                      docs, root)
    assert target == "src/formerkit/nn/layers.py"
    # Missing files and pages inside docs are left to mkdocs' own (strict) link validation.
    assert hooks._repository_target("gpt.md", "../src/formerkit/nope.py", docs, root) is None
    assert hooks._repository_target("gpt.md", "training.md", docs, root) is None
    assert hooks._repository_target("gpt.md", "https://example.org/x.py", docs, root) is None


def test_site_builds_strictly(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python"):
        pytest.importorskip(module)
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d",
                             str(site)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    reference = (site / "reference" / "index.html").read_text()
    for name, module in _public_names().items():
        assert f'id="{module}.{name}"' in reference, f"{name} not rendered in the reference"
    # Links into the source became rendered pages of the source.
    concepts = (site / "concepts" / "index.html").read_text()
    assert "source/src/formerkit/nn/attention.py/" in concepts
    assert (site / "source" / "src" / "formerkit" / "nn" / "attention.py" / "index.html").is_file()
