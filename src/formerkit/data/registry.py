"""Named datasets: where each file is found, and the public original to download.

A file ``NAME/FILE`` is looked up, in order, in ``$FORMERKIT_DATA_DIR/NAME/FILE`` (a folder laid
out like the project's ``shared/data``), in the small copies shipped inside the package
(``formerkit/datasets/``), and in the download cache (``$FORMERKIT_CACHE_DIR``, default
``~/.cache/formerkit``), which is filled from the public original when ``download=True``.
Every download is checked against its sha256 before it is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

PACKAGE_DATA = Path(__file__).resolve().parent.parent / "datasets"


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    sha256: str
    url: str | None  # None: no single-file public original (see ``how_to_get``)


_GH = "https://raw.githubusercontent.com"
_M30K = f"{_GH}/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw"
_ETT = f"{_GH}/zhouhaoyi/ETDataset/1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small"

FILES: dict[str, dict[str, RemoteFile]] = {
    "tinyshakespeare": {
        "input.txt": RemoteFile(
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            f"{_GH}/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"),
    },
    "ett": {
        "ETTh1.csv": RemoteFile(
            "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066",
            f"{_ETT}/ETTh1.csv"),
        "ETTh2.csv": RemoteFile(
            "a3dc2c597b9218c7ce1cd55eb77b283fd459a1d09d753063f944967dd6b9218b",
            f"{_ETT}/ETTh2.csv"),
        "ETTm1.csv.gz": RemoteFile(
            "73c18304514c26a5cddba02e6538513a0e23b2fbb59752535adbf541c9edc672", None),
        "ETTm2.csv.gz": RemoteFile(
            "5122051efae7be24b40bedc80ee445bd18298552b940084f0dbe329c5157110a", None),
    },
    "multi30k": {
        f"{split}.{lang}.gz": RemoteFile(sha, f"{_M30K}/{split}.{lang}.gz")
        for (split, lang), sha in {
            ("train", "en"): "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
            ("train", "de"): "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
            ("val", "en"): "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
            ("val", "de"): "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
            ("test_2016_flickr", "en"):
                "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
            ("test_2016_flickr", "de"):
                "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
        }.items()
    },
    "sst2": {
        "train.tsv": RemoteFile(
            "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1", None),
        "dev.tsv": RemoteFile(
            "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0", None),
    },
    "har": {
        "uci_har.npz": RemoteFile(
            "d036deeb2e343754b1d4322ee8d99fe262669fbebb6dd09b5214c4c226ad4b43", None),
    },
}

HOW_TO_GET = {
    "sst2": "GLUE SST-2 (https://dl.fbaipublicfiles.com/glue/data/SST-2.zip): put train.tsv "
            "and dev.tsv in $FORMERKIT_DATA_DIR/sst2/",
    "har": "UCI HAR raw inertial windows as uci_har.npz (see the project's data README) in "
           "$FORMERKIT_DATA_DIR/har/",
    "ett": "the ETT-small CSVs from https://github.com/zhouhaoyi/ETDataset in "
           "$FORMERKIT_DATA_DIR/ett/",
}


def data_dir() -> Path | None:
    """``$FORMERKIT_DATA_DIR`` as a path, or ``None`` when unset."""
    value = os.environ.get("FORMERKIT_DATA_DIR")
    return Path(value).expanduser() if value else None


def cache_dir() -> Path:
    return Path(os.environ.get("FORMERKIT_CACHE_DIR", "~/.cache/formerkit")).expanduser()


def check_plain_name(value: str, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one plain file or folder name: a dataset name
    such as ``../../etc`` would otherwise be read as a path outside the data folders."""
    text = str(value)
    if not text or text in (".", "..") or "/" in text or "\\" in text or \
            Path(text).is_absolute() or "\0" in text:
        raise ValueError(f"{what} {text!r} must be a plain name (e.g. 'tinyshakespeare', a "
                         "folder of $FORMERKIT_DATA_DIR), not a path; give a file of your own "
                         "with data.path")


def find_file(name: str, filename: str) -> Path | None:
    """The first existing copy of ``name/filename`` (data dir, package, cache), or ``None``."""
    check_plain_name(name, "dataset name")
    check_plain_name(filename, "dataset file")
    candidates = [PACKAGE_DATA / name / filename, cache_dir() / name / filename]
    root = data_dir()
    if root is not None:
        candidates.insert(0, root / name / filename)
    return next((path for path in candidates if path.is_file()), None)


def dataset_file(name: str, filename: str, *, download: bool = False) -> Path:
    """Path to ``name/filename``, downloading the checksummed original if allowed.

    Raises:
        FileNotFoundError: naming the file, ``FORMERKIT_DATA_DIR`` and where to get it.
    """
    found = find_file(name, filename)
    if found is not None:
        return found
    remote = FILES.get(name, {}).get(filename)
    if download and remote is not None and remote.url is not None:
        return _download(remote, cache_dir() / name / filename)
    where = f"FORMERKIT_DATA_DIR={data_dir()}" if data_dir() else "FORMERKIT_DATA_DIR is not set"
    hint = HOW_TO_GET.get(name, "")
    if remote is not None and remote.url is not None:
        hint = f"pass download=True (data.download=true) to fetch {remote.url}"
    raise FileNotFoundError(f"dataset file {name}/{filename} not found ({where}); "
                            f"{hint or 'put it in $FORMERKIT_DATA_DIR/' + name + '/'}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download(remote: RemoteFile, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        with urllib.request.urlopen(remote.url, timeout=60) as response:  # noqa: S310
            shutil.copyfileobj(response, tmp)
    got = sha256_of(Path(tmp.name))
    if got != remote.sha256:
        os.unlink(tmp.name)
        raise ValueError(f"checksum mismatch for {remote.url}: got {got}, "
                         f"expected {remote.sha256}")
    os.replace(tmp.name, target)
    return target
