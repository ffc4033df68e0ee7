"""``emoface browse``: the static answer browser, from the store's current batches, checked as
data (questions, raw answers, digits against the stored ones) and in a real headless browser (a
filter changes what is shown; an image and a digit chart render)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emoface.browse import write_browser
from emoface.cli import app
from emoface.config import ModelsParams, Params, StimuliParams
from emoface.inference.store import PredictionStore
from emoface.paths import DataPaths
from emoface.prompts import AROUSAL_QUESTION, TEXT_ONLY_QUESTION
from emoface.stimuli.generate import generate_stimulus_set
from tests.headless import browser, file_url

GEMMA, LLAMA = "simulated/gemma3-4b", "simulated/llama3.2-vision-11b"


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """48 stimuli: baseline for two models, text-only for one, and a single-shot folder whose
    batch was deleted (not usable: the browser must leave it out and say so)."""
    from emoface.inference.service import run_condition_for

    data = DataPaths(tmp_path_factory.mktemp("browse") / "data")
    p = Params(stimuli=StimuliParams(identities_per_cell=2),
               models=ModelsParams(study=(GEMMA, LLAMA)))
    generate_stimulus_set(p.study, p.stimuli, data.stimulus_set("embedded"))
    for m in (GEMMA, LLAMA):
        run_condition_for(p, data, m, protocol="context_carry")
    run_condition_for(p, data, GEMMA, protocol="text_only", label_source="baseline")
    run_condition_for(p, data, LLAMA, protocol="single_shot")
    broken = next((data.root / "predictions" / "embedded").glob("single_shot*/*"))
    (broken / "b0000.parquet").unlink()
    return p, data, broken


def _payload(out: Path) -> dict:
    text = (out / "data.js").read_text()
    return json.loads(text[text.index("=") + 1:].rstrip().rstrip(";"))


def test_browser_data_come_from_the_current_batches(stored, tmp_path):
    p, data, broken = stored
    res = write_browser(p, data, tmp_path / "b")
    assert res.folders == 3 and res.answers == 3 * 48
    assert len(res.skipped) == 1 and broken.relative_to(data.root).as_posix() in res.skipped[0]
    d = _payload(tmp_path / "b")
    folders = {(f["model"], f["condition"]): i for i, f in enumerate(d["folders"])}
    # the study's baseline first
    assert d["folders"][0]["condition"] == "context_carry_t0_r1"
    store = PredictionStore(data.root)
    folder = store.condition_dir("embedded", "context_carry_t0_r1", GEMMA)
    rows = store.read(folder, p.study.emotions).sort("stimulus_id")
    logits = store.read_logits(folder)
    fi = folders[(GEMMA, "context_carry_t0_r1")]
    recs = [r for r in d["records"] if r[0] == fi]
    assert [r[1] for r in recs] == rows["stimulus_id"].to_list()
    r, row = recs[5], rows.row(5, named=True)
    raw = json.loads(row["raw_answers"])
    assert [d["questions"][q] for q, _ in r[7]][2] == AROUSAL_QUESTION
    assert [a for _, a in r[7]] == [t["text"] for t in raw]
    assert r[5] == [row["arousal"], row["arousal_status"]]
    # the digits: exp(log p) renormalised over 1-9, in thousandths
    i = np.flatnonzero((logits["stimulus_id"] == row["stimulus_id"])
                       & (logits["field"] == "arousal"))[0]
    q = np.exp(logits["digit_logprobs"][i])
    q = np.where(np.isfinite(q), q, 0)
    assert r[8]["arousal"][0] == [round(1000 * x) for x in q / q.sum()]
    assert r[8]["arousal"][1] == pytest.approx(q.sum(), abs=1e-4)
    # the image is there, and the norms
    img, intended, race = d["stimuli"]["embedded"][row["stimulus_id"]][:3]
    assert (tmp_path / "b" / img).stat().st_size > 100 and intended == row["stimulus_id"].split(
        "_")[-1]
    assert d["stimuli"]["embedded"][row["stimulus_id"]][5]["n_raters"] > 0
    # text only: the label the model was given, in the question; no emotion asked
    t = next(x for x in d["records"] if x[0] == folders[(GEMMA, "text_only-baseline_t0_r1")])
    assert t[6] is None and t[9] and d["questions"][t[7][0][0]] == \
        TEXT_ONLY_QUESTION["arousal"].format(label=t[9])


def test_cli_browse_and_nothing_stored(stored, tmp_path):
    p, data, _ = stored
    runner = CliRunner()
    ok = runner.invoke(app, ["browse", "--data", str(data.root), "--out", str(tmp_path / "o")])
    assert ok.exit_code == 0 and "wrote 144 answers from 3 model x condition folder(s)" in \
        ok.output
    empty = runner.invoke(app, ["browse", "--data", str(tmp_path / "none")])
    assert empty.exit_code == 2 and "nothing to browse" in empty.output
    assert "Traceback" not in empty.output


def test_browser_filters_and_renders_in_headless_chromium(stored, tmp_path):
    p, data, _ = stored
    write_browser(p, data, tmp_path / "b")
    with browser() as b:
        b.get(file_url(tmp_path / "b" / "index.html"))
        b.wait("return document.querySelectorAll('article.card').length > 0")
        assert b.js("return document.getElementById('count').textContent") \
            == "144 of 144 answers"
        assert b.js("return document.querySelectorAll('article.card').length") == 24
        # an image renders (decoded, real pixels) and a digit chart draws bars
        assert b.wait("var i = document.querySelector('article.card img');"
                      "return i.complete && i.naturalWidth > 0 && i.naturalWidth")
        bars = b.js("return Array.from(document.querySelectorAll("
                    "'article.card svg.digit-chart')[0].querySelectorAll('rect.bar'))"
                    ".map(r => r.getBBox().height)")
        assert len(bars) == 9 and max(bars) > 10
        # a filter changes what is shown
        b.select("#f-model", LLAMA)
        assert b.js("return document.getElementById('count').textContent") == "48 of 144 answers"
        models = b.js("return Array.from(document.querySelectorAll('article.card'))"
                      ".map(c => c.dataset.model)")
        assert models and set(models) == {LLAMA}
        b.select("#f-correct", "incorrect")
        shown = b.js("return Array.from(document.querySelectorAll('article.card'))"
                     ".map(c => [c.dataset.model, c.dataset.correct])")
        n = int(b.js("return document.getElementById('count').textContent").split()[0])
        assert 0 < n < 48 and {tuple(x) for x in shown} == {(LLAMA, "incorrect")}
        b.select("#f-model", "")
        b.select("#f-correct", "not asked")  # text only: no emotion question
        assert b.js("return document.getElementById('count').textContent") == "48 of 144 answers"
