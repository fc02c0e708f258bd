"""docs/cli-and-api.md stays true: its Python runs, every ``formerkit`` command line it shows
parses with the real parser, and the extras it tells people to install exist in
pyproject.toml."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

from formerkit import cli

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "cli-and-api.md"
TEXT = GUIDE.read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", TEXT, flags=re.S)


def test_python_snippets_run(capsys):
    torch.set_num_threads(1)
    blocks = _blocks("python")
    assert blocks
    for code in blocks:
        exec(compile(code, str(GUIDE), "exec"), {})


def _command_lines() -> list[list[str]]:
    lines = []
    for block in _blocks("bash"):
        for line in block.splitlines():
            line = line.split(" # ")[0].split("  #")[0].strip()
            if "&&" in line:
                line = line.split("&&")[0].strip()
            words = shlex.split(line) if line else []
            if words[:1] == ["formerkit"]:
                lines.append(words[1:])
            elif words[:1] == ["torchrun"] and "formerkit" in words:
                lines.append(words[words.index("formerkit") + 1:])
    return lines


@pytest.mark.parametrize("argv", _command_lines(), ids=lambda a: " ".join(a)[:40])
def test_every_command_line_parses(argv):
    parser = cli.build_parser(with_plots=True, command=argv[0] if argv else None)
    if any(flag in argv for flag in ("--help", "--version")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_known_args(argv)
        assert exit_.value.code == 0
        return
    args, extra = parser.parse_known_args(argv)
    assert not extra or (args.command == "train" and all("=" in e for e in extra)), extra


def test_install_lines_name_existing_extras():
    pyproject = (ROOT / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([a-z]+) = \[", section, flags=re.M))
    named = {e for group in re.findall(r"formerkit\[([a-z,]+)\]", TEXT)
             for e in group.split(",")}
    assert {"bleu", "onnx", "tensorboard"} <= named <= extras


def test_readme_links_the_guide():
    readme = (ROOT / "README.md").read_text()
    assert "docs/cli-and-api.md" in readme
    after = readme.split("<!-- /section:trainer -->", 1)[1].split("\n## ", 1)[0]
    assert "docs/cli-and-api.md" in after  # in the documentation list
