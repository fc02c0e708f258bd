"""The explorer page in a real browser: headless Chromium loads each page from a file, the
script runs without console errors or network requests, the rendered DOM draws the expected
layers, heads and tokens, and real mouse hovers light up the model's own attention weights.
Skipped where no Chromium is installed (``apt-get install chromium``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from browser import Browser, find_chromium
from explorer_models import series, tiny_series_model, tiny_text_model
from formerkit.viz.explorer import WEIGHT_LEVELS, explain, render_html

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed")
TOLERANCE = 0.5 / WEIGHT_LEVELS + 2e-6  # page values are printed with 6 decimals


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM) as instance:
        yield instance


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """name -> (path, explanation) of one page per family."""
    folder = tmp_path_factory.mktemp("pages")
    made = {
        "gpt": explain(tiny_text_model("gpt"), text="the cat sat on the mat"),
        "seq2seq": explain(tiny_text_model("transformer"), text="the cat sat on the mat",
                           max_new_tokens=6),
        "har": explain(tiny_series_model("har"), series=series(steps=30), true_label=2),
        "patchtst": explain(tiny_series_model("patchtst"), series=series()),
        "itransformer": explain(tiny_series_model("itransformer"), series=series(),
                                columns=["a", "b", "c"]),
    }
    out = {}
    for name, explanation in made.items():
        path = folder / f"{name}.html"
        path.write_text(render_html(explanation))
        out[name] = (path, explanation)
    return out


def load(browser, path, fragment: str = "") -> None:
    browser.errors.clear()
    browser.requests.clear()
    browser.open(path, fragment)
    assert browser.evaluate("document.body.dataset.ready") == "true", browser.errors
    assert browser.errors == []
    assert all(url.startswith(("file://", "about:")) for url in browser.requests), \
        browser.requests


def lit_weights(browser, strip: str) -> list[float]:
    return browser.evaluate(f"Array.from(document.querySelectorAll('#{strip} .tok'))"
                            ".map(t => Number(t.dataset.w))")


def counts(browser) -> dict:
    return browser.evaluate("""({
        queries: document.querySelectorAll('#queries .tok').length,
        keys: document.querySelectorAll('#keys .tok').length,
        maps: document.querySelectorAll('#overview canvas.map').length,
        layers: document.querySelectorAll('#layer option').length,
        heads: document.querySelectorAll('#head option').length,
        tabs: document.querySelectorAll('#views button').length,
        curves: document.querySelectorAll('#series svg[data-curve]').length,
    })""")


def test_gpt_page_draws_every_layer_head_and_token(browser, pages):
    path, explanation = pages["gpt"]
    load(browser, path)
    layers, heads, n_queries, n_keys = explanation.views[0].shape
    assert counts(browser) == {"queries": n_queries, "keys": n_keys, "maps": layers * heads,
                               "layers": layers, "heads": heads + 1, "tabs": 1, "curves": 0}
    labels = browser.evaluate("Array.from(document.querySelectorAll('#queries .tok'))"
                              ".map(t => t.textContent)")
    assert labels == explanation.views[0].queries.labels
    # every overview map is painted with its own pixels (not blank)
    assert browser.evaluate("Array.from(document.querySelectorAll('#overview canvas.map'))"
                            ".every(c => c.width > 0 && c.toDataURL().length > 100)")


def test_hovering_a_query_lights_the_keys_it_reads(browser, pages):
    path, explanation = pages["gpt"]
    load(browser, path)
    weights = torch.stack(explanation.views[0].weights)  # (L, H, T, T)
    seen = []
    for query in (2, 5):
        browser.hover(f'#queries .tok[data-index="{query}"]')
        row = lit_weights(browser, "keys")
        np.testing.assert_allclose(row, weights[0, 0, query].numpy(), atol=TOLERANCE)
        assert browser.evaluate("document.querySelector('#queries .tok.focus').dataset.index") \
            == str(query)
        seen.append(row)
    assert seen[0] != seen[1], "hovering another token must change what is highlighted"
    # causal model: the keys after the query get nothing
    assert all(w == 0 for w in seen[1][6:])
    info = browser.evaluate("document.getElementById('focus-info').textContent")
    assert "looks most at" in info
    panel = browser.evaluate("document.querySelector('.panel[data-kind=per_position]')"
                             ".dataset.position")
    assert panel == "5", "the next-token panel follows the hovered token"


def test_hovering_a_key_lights_the_queries_that_read_it(browser, pages):
    path, explanation = pages["gpt"]
    load(browser, path)
    browser.hover('#keys .tok[data-index="1"]')
    column = lit_weights(browser, "queries")
    weights = torch.stack(explanation.views[0].weights)
    np.testing.assert_allclose(column, weights[0, 0, :, 1].numpy(), atol=TOLERANCE)
    assert column[0] == 0  # the first token cannot see token 1


def test_clicking_an_overview_map_opens_that_layer_and_head(browser, pages):
    path, explanation = pages["gpt"]
    load(browser, path)
    browser.hover('#queries .tok[data-index="4"]')
    browser.click('#overview canvas.map[data-layer="1"][data-head="2"]')
    assert browser.evaluate("[document.getElementById('layer').value,"
                            " document.getElementById('head').value]") == ["1", "2"]
    assert browser.evaluate("document.querySelectorAll('#overview canvas.map.selected')"
                            ".length") == 1
    weights = torch.stack(explanation.views[0].weights)
    np.testing.assert_allclose(lit_weights(browser, "keys"), weights[1, 2, 4].numpy(),
                               atol=TOLERANCE)
    browser.evaluate("(() => { const s = document.getElementById('head'); s.value = '-1';"
                     " s.dispatchEvent(new Event('change')); })()")
    np.testing.assert_allclose(lit_weights(browser, "keys"),
                               weights[1, :, 4].mean(0).numpy(), atol=TOLERANCE)


def test_seq2seq_page_switches_between_cross_decoder_and_encoder(browser, pages):
    path, explanation = pages["seq2seq"]
    load(browser, path)
    assert counts(browser)["tabs"] == 3
    for index, view in enumerate(explanation.views):
        browser.click(f'#views button[data-view="{index}"]')
        got = counts(browser)
        assert (got["queries"], got["keys"]) == view.shape[2:], view.name
        assert got["maps"] == view.shape[0] * view.shape[1]
    browser.click('#views button[data-view="0"]')  # cross: target rows, source columns
    browser.hover('#queries .tok[data-index="1"]')
    cross = torch.stack(explanation.views[0].weights)
    np.testing.assert_allclose(lit_weights(browser, "keys"), cross[0, 0, 1].numpy(),
                               atol=TOLERANCE)


def test_deep_link_opens_a_view_layer_head_and_token(browser, pages):
    path, explanation = pages["seq2seq"]
    load(browser, path, "view=decoder&layer=1&head=3&query=2")
    state = browser.evaluate("JSON.stringify(window.formerkitExplorer.state)")
    state = json.loads(state)
    assert (state["view"], state["layer"], state["head"]) == (1, 1, 3)
    assert state["focus"] == {"side": "query", "index": 2}
    decoder = torch.stack(explanation.views[1].weights)
    np.testing.assert_allclose(lit_weights(browser, "keys"), decoder[1, 3, 2].numpy(),
                               atol=TOLERANCE)
    load(browser, path, "view=nope&layer=99&head=x&key=-5")  # bad values: clamped, no errors
    state = json.loads(browser.evaluate("JSON.stringify(window.formerkitExplorer.state)"))
    assert (state["view"], state["layer"], state["head"]) == (0, 1, 0)
    assert state["focus"] == {"side": "key", "index": 0}


def test_har_page_shades_the_series_by_attention(browser, pages):
    path, explanation = pages["har"]
    load(browser, path)
    got = counts(browser)
    assert (got["queries"], got["keys"], got["curves"]) == (30, 30, 3)
    assert browser.evaluate("document.querySelectorAll('#series svg.bands rect').length") == 30
    browser.hover('#queries .tok[data-index="10"]')
    opacity = browser.evaluate("Array.from(document.querySelectorAll("
                               "'#series svg[data-curve=\"0\"] .shade rect[fill=\"#2563eb\"]'))"
                               ".map(r => Number(r.getAttribute('fill-opacity')))")
    row = torch.stack(explanation.views[0].weights)[0, 0, 10].numpy()
    np.testing.assert_allclose(opacity, 0.75 * row / row.max(), atol=2e-3)
    first = browser.evaluate("document.querySelector('.panel[data-kind=per_position]')"
                             ".dataset.position")
    assert first == "10"


def test_patchtst_page_shows_one_curve_per_variate_view(browser, pages):
    path, explanation = pages["patchtst"]
    load(browser, path)
    assert counts(browser)["tabs"] == 3
    browser.click('#views button[data-view="2"]')
    got = counts(browser)
    n_patches = explanation.views[2].shape[2]
    assert (got["queries"], got["curves"]) == (n_patches, 1)
    assert browser.evaluate("document.querySelector('#series svg').dataset.curve") == "2"


def test_itransformer_hover_shades_each_variate_curve_by_its_weight(browser, pages):
    path, explanation = pages["itransformer"]
    load(browser, path)
    assert counts(browser)["curves"] == 3
    browser.hover('#queries .tok[data-index="2"]')
    row = torch.stack(explanation.views[0].weights)[0, 0, 2].numpy()
    for curve in range(3):
        opacity = browser.evaluate(f"Array.from(document.querySelectorAll('#series svg"
                                   f"[data-curve=\"{curve}\"] .shade rect[fill=\"#2563eb\"]'))"
                                   ".map(r => Number(r.getAttribute('fill-opacity')))")
        assert len(opacity) == 32  # the variate token covers the whole lookback
        np.testing.assert_allclose(opacity, 0.75 * row[curve] / row.max(), atol=2e-3)
    forecast = browser.evaluate("document.querySelectorAll('#series polyline"
                                "[stroke=\"#dc2626\"]').length")
    assert forecast == 3
