"""`dvc plots show` works offline: .dvc/config's plots.html_template names .dvc/plots-html/index.html,
which inlines vega, vega-lite and vega-embed (scripts/dvc_plots_html.py), so the page DVC writes
loads no script from a CDN; in a headless browser with every network request refused, every plot
of dvc.yaml (each template the project uses, on stand-in data) still renders."""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.headless import browser, file_url
from tests.test_dvc_pipeline import copy_dvc_setup, run

NO_NETWORK = ["--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=http://127.0.0.1:9",
              "--proxy-bypass-list=<-loopback>"]


def test_the_template_is_set_and_holds_the_vendored_builds():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / ".dvc" / "config")
    template = REPO / ".dvc" / cfg["plots"]["html_template"]  # relative to .dvc, as DVC reads it
    assert template == REPO / ".dvc" / "plots-html" / "index.html"
    page = template.read_text(encoding="utf8")
    # DVC fills {scripts} with its CDN <script src=...> tags: the template has no such slot
    assert "{plot_divs}" in page and "{scripts}" not in page and "<script src=" not in page
    check = subprocess.run([sys.executable, "scripts/dvc_plots_html.py", "--check"], cwd=REPO,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr  # inlined builds = vendor.json's sha256, licences
    vendor = json.loads((template.parent / "vendor.json").read_text())
    assert set(vendor) == {"vega", "vega-lite", "vega-embed"}
    assert {v["license"] for v in vendor.values()} == {"BSD-3-Clause"}


def _template(name: str) -> dict:
    path = REPO / ".dvc" / "plots" / f"{name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from dvc_render.vega_templates import get_template

    return get_template(name).content  # one of DVC's own (bar_horizontal)


def _value(kind: str, i: int) -> object:
    return float(i % 4 + 1) / 2 if kind == "quantitative" else f"level {i % 3}"


def _stand_in(props: dict) -> list[dict]:
    """Rows with the plot's x and y (typed as its template encodes them) and the long-format
    columns the project's templates group by (model_id, field, pooling)."""
    enc = _template(props["template"])["encoding"]
    rows = []
    for i in range(12):
        rows.append({props["x"]: _value(enc["x"].get("type", "quantitative"), i),
                     props["y"]: _value(enc["y"].get("type", "quantitative"), i + 1),
                     "model_id": f"model-{i % 2}", "field": ("valence", "arousal")[i // 6],
                     "pooling": ("image_pool", "last_token")[i % 2]})
    return rows


def _plots() -> list[tuple[str, dict]]:
    return [next(iter(entry.items())) for entry in
            yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["analyses"]["plots"]]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """`dvc plots show` (plain: the template comes from .dvc/config) in a git+DVC repository
    with the project's .dvc files and every plot of dvc.yaml on stand-in data."""
    tmp = tmp_path_factory.mktemp("plots")
    repo = tmp / "project"
    repo.mkdir()
    run(["git", "init", "-q", "-b", "main"], repo, tmp)
    run(["dvc", "init", "-q"], repo, tmp)
    copy_dvc_setup(repo)
    top = []
    for path, props in _plots():
        rows = _stand_in(props)
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(",".join(rows[0]) + "\n" + "\n".join(
            ",".join(str(v) for v in r.values()) for r in rows) + "\n")
        top.append({path: props})
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"plots": top}, sort_keys=False))
    run(["dvc", "plots", "show"], repo, tmp)
    return repo / "dvc_plots" / "index.html"


@pytest.mark.integration
def test_plots_show_page_loads_no_script_from_the_network(page):
    html = page.read_text(encoding="utf8")
    assert html.count("vegaEmbed(") == len(_plots())
    assert "<script src=" not in html and "cdn.jsdelivr" not in html
    assert "<link " not in html  # no stylesheet from elsewhere either


@pytest.mark.integration
def test_plots_show_renders_every_plot_with_the_network_refused(page):
    n = len(_plots())
    with browser(extra_args=NO_NETWORK) as b:
        b.get(file_url(page))
        assert b.js("return typeof vegaEmbed") == "function"
        rendered = b.wait(f"var m = document.querySelectorAll('.vega-embed .marks');"
                          f"return m.length === {n} ? m.length : 0;")
        assert rendered == n
        # nothing was fetched from a network (all of it is in the page)
        fetched = b.js("return performance.getEntriesByType('resource').map(e => e.name)"
                       ".filter(u => /^https?:/.test(u))")
        assert fetched == []
        # each plot drew: a canvas with a size, and no vega error text on the page
        sizes = b.js("return Array.from(document.querySelectorAll('.vega-embed .marks'))"
                     ".map(c => c.width * c.height)")
        assert all(s > 0 for s in sizes)
        assert b.js("return document.body.innerText.indexOf('Error') < 0")


def test_without_the_template_the_page_would_need_the_network():
    # what the template replaces: DVC's own page loads vega from a CDN (so the check above means
    # something); read from DVC itself, not written here
    from dvc_render.vega import VegaRenderer

    assert "https://cdn.jsdelivr.net/npm/vega@" in VegaRenderer.SCRIPTS
    vendor = json.loads((REPO / ".dvc" / "plots-html" / "vendor.json").read_text())
    for name, meta in vendor.items():  # the same versions DVC's page loads
        assert f"/npm/{name}@{meta['version']}\"" in VegaRenderer.SCRIPTS
