"""Named datasets: a name is a folder of the data directories, never a path."""

from __future__ import annotations

import pytest

from formerkit.data.registry import dataset_file, find_file
from formerkit.data.text import read_text


@pytest.mark.parametrize("name", ["../../../../etc", "/etc", "..", "a/b", "a\\b", ""])
def test_a_dataset_name_that_is_a_path_is_refused(name, tmp_path, monkeypatch):
    monkeypatch.setenv("FORMERKIT_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(ValueError, match="must be a plain name"):
        dataset_file(name, "input.txt")


def test_a_file_name_that_is_a_path_is_refused():
    with pytest.raises(ValueError, match="dataset file '../hostname' must be a plain name"):
        find_file("tinyshakespeare", "../hostname")


def test_own_dataset_folder_and_shipped_data_still_work(tmp_path, monkeypatch):
    (tmp_path / "mytext").mkdir()
    (tmp_path / "mytext" / "input.txt").write_text("hello")
    monkeypatch.setenv("FORMERKIT_DATA_DIR", str(tmp_path))
    assert read_text("mytext") == "hello"
    assert read_text("tinyshakespeare").startswith("First Citizen")
