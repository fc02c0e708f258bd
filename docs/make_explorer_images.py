"""Screenshots of real explorer pages for docs/explorer.md: trains nothing itself, reads the run
directories given on the command line, writes each page and shoots it in headless Chromium
(with the tests' DevTools client) after hovering one token.

    python docs/make_explorer_images.py gpt=runs/gpt itransformer=runs/itransformer har=runs/har
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from browser import Browser, find_chromium  # noqa: E402
from formerkit.viz.explorer_runs import write_directory_page  # noqa: E402

# name -> (explain options, URL fragment, token to hover, viewport height; 0 = the whole page)
SHOTS = {
    "gpt": ({"text": "ROMEO: But soft, what light through yonder"}, "layer=1&head=2",
            '#queries .tok[data-index="30"]', 960),
    "bert": ({"text": "to be or not to [MASK] , that is the question",
              "pair": "whether tis nobler in the mind to suffer"}, "layer=1&head=0",
             '#queries .tok[data-index="6"]', 960),
    "mt": ({"text": "ein mann fährt mit dem fahrrad über eine brücke ."}, "view=cross",
           '#queries .tok[data-index="3"]', 960),
    "copy": ({"text": "c a f e b j d g"}, "view=cross&layer=1&head=0",
             '#queries .tok[data-index="4"]', 740),
    "itransformer": ({"window": 100}, "layer=1&head=0", '#queries .tok[data-index="6"]', 0),
    "patchtst": ({"window": 100}, "view=patches-6", '#queries .tok[data-index="11"]', 900),
    "har": ({"window": 700}, "layer=2&head=1", '#queries .tok[data-index="64"]', 0),
}
MAX_BYTES = 300_000


def shoot(name: str, run: Path, out_dir: Path, browser: Browser) -> Path:
    options, fragment, hover, height = SHOTS[name]
    page = write_directory_page(run, out_dir / f"explorer-{name}.html", **options)
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1280, "height": height or 1000, "deviceScaleFactor": 1,
                  "mobile": False})
    browser.errors.clear()
    browser.open(page, fragment)
    browser.hover(hover)
    if browser.errors:
        raise RuntimeError(f"{name}: the page logged errors: {browser.errors}")
    browser.evaluate("window.scrollTo(0, 0)")
    image = browser.screenshot(out_dir / f"explorer-{name}.png", full_page=not height)
    if image.stat().st_size > MAX_BYTES:  # a 256-colour palette keeps the UI crisp
        from PIL import Image

        Image.open(image).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(
            image, optimize=True)
    return image


def main(argv: list[str]) -> None:
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("Chromium is not installed (apt-get install chromium)")
    out_dir = ROOT / "docs" / "images"
    out_dir.mkdir(parents=True, exist_ok=True)
    with Browser(chromium) as browser:
        for item in argv:
            name, _, run = item.partition("=")
            if name not in SHOTS:
                raise SystemExit(f"unknown shot {name!r}; expected some of {sorted(SHOTS)}")
            image = shoot(name, Path(run), out_dir, browser)
            (out_dir / f"explorer-{name}.html").unlink()
            print(f"{image} ({image.stat().st_size // 1000} KB)")


if __name__ == "__main__":
    main(sys.argv[1:])
