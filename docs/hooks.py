"""MkDocs hook: links from a page into the repository (``../src/formerkit/nn/attention.py``)
become links to a generated page that shows that file, so they work on the site as they do on
GitHub; a link to a file that does not exist is left alone, and the strict build reports it.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

SOURCE_DIR = "source"  # generated pages: source/<path in the repository>.md
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
_LANGUAGES = {".py": "python", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".md": "markdown"}


def _repository_target(page_path: str, target: str, docs: Path, root: Path) -> str | None:
    """The repository-relative path ``target`` points to from docs page ``page_path``, when it
    leaves the docs folder and names a file of the repository; else ``None``."""
    if "://" in target or target.startswith(("/", "mailto:")):
        return None
    resolved = (docs / posixpath.dirname(page_path) / target).resolve()
    if resolved.is_relative_to(docs) or not resolved.is_relative_to(root):
        return None
    return resolved.relative_to(root).as_posix() if resolved.is_file() else None


def _source_page(path: str) -> str:
    return f"{SOURCE_DIR}/{path}.md"


def on_files(files: Files, config) -> Files:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    wanted: set[str] = set()
    for file in files.documentation_pages():
        for match in _LINK.finditer(file.content_string):
            path = _repository_target(file.src_uri, match.group(2), docs, root)
            if path is not None:
                wanted.add(path)
    for path in sorted(wanted):
        text = (root / path).read_text(encoding="utf-8")
        language = _LANGUAGES.get(Path(path).suffix, "text")
        fence = "````" if "```" in text else "```"
        content = f"# `{path}`\n\n{fence}{language}\n{text}\n{fence}\n"
        files.append(File.generated(config, _source_page(path), content=content))
    return files


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    if page.file.src_uri.startswith(SOURCE_DIR + "/"):
        return markdown

    def rewrite(match: re.Match) -> str:
        path = _repository_target(page.file.src_uri, match.group(2), docs, root)
        if path is None:
            return match.group(0)
        link = posixpath.relpath(_source_page(path), posixpath.dirname(page.file.src_uri) or ".")
        return f"{match.group(1)}{link}{match.group(4)}"

    return _LINK.sub(rewrite, markdown)
