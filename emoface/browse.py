"""``emoface browse``: a static HTML browser over the current stored answers, one card per
(model, condition, stimulus).

Every (stimulus set, condition, model) folder the store lists (:func:`store_status`) is read
through the store's reader of current batches (:meth:`PredictionStore.read` and
:meth:`~PredictionStore.read_logits`: only the batches ``current.json`` names, each verified);
a folder whose batches are missing, outdated or damaged is left out and named. Per card: the face
image, every turn's question (rebuilt from the versioned prompt templates) and raw answer, the
parsed values and their status, the digit distribution of each rating step as a small bar chart
(inline SVG; the parsed answer and the human mean marked), and the human norms. Filters: model,
condition, intended emotion, race, correct / incorrect, parse status.

The output is static files, opened from disk (no server): ``index.html`` (page, style and script
inline), ``data.js`` (the answers) and ``images/<set>/`` (copies of the stimulus images).
"""

from __future__ import annotations

import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emoface.config import Params
from emoface.errors import DataError, EmofaceError
from emoface.inference.store import PredictionStore, store_status
from emoface.io import atomic_path
from emoface.paths import DataPaths
from emoface.prompts import conversations
from emoface.stimuli.store import StimulusSet, load_stimulus_set

RATING_FIELDS = ("valence", "arousal")


@dataclass
class BrowseResult:
    index: Path
    answers: int = 0
    folders: int = 0
    skipped: list[str] = field(default_factory=list)  # "folder: why"


def _digits(logits: dict[str, np.ndarray]) -> dict[tuple[str, str], tuple[list[int], float]]:
    """(stimulus, rating field) -> (the digit distribution renormalised over 1-9 in thousandths,
    the probability mass the digits held)."""
    out = {}
    fields = logits["field"]
    for i in np.flatnonzero(np.isin(fields, RATING_FIELDS)):
        lp = logits["digit_logprobs"][i].astype(np.float64)
        p = np.where(np.isfinite(lp), np.exp(np.where(np.isfinite(lp), lp, 0.0)), 0.0)
        mass = float(p.sum())
        if mass <= 0:
            continue
        out[(str(logits["stimulus_id"][i]), str(fields[i]))] = (
            [int(round(1000 * x)) for x in p / mass], round(mass, 4))
    return out


def _copy_images(s: StimulusSet, out: Path) -> dict[str, str]:
    """Copy the set's images under ``out/images/<set>/`` (unchanged ones are kept); returns
    stimulus id -> the image's path relative to ``out``."""
    folder = out / "images" / s.paths.root.name
    folder.mkdir(parents=True, exist_ok=True)
    rel = {}
    for sid, file in s.manifest.select("stimulus_id", "file").iter_rows():
        src = s.paths.root / file
        dst = folder / Path(file).name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size:
            shutil.copyfile(src, dst)
        rel[sid] = f"images/{s.paths.root.name}/{dst.name}"
    return rel


def _stimuli(s: StimulusSet, images: dict[str, str]) -> dict[str, list]:
    """stimulus id -> [image, intended emotion, race, gender, identity, norms or None]."""
    norms = {}
    if s.norms is not None:
        cols = [c for c in ("valence_mean", "valence_sd", "arousal_mean", "arousal_sd",
                            "n_raters") if c in s.norms.columns]
        for r in s.norms.select("stimulus_id", *cols).iter_rows(named=True):
            norms[r["stimulus_id"]] = {k: (round(v, 2) if isinstance(v, float) else v)
                                       for k, v in r.items() if k != "stimulus_id"}
    return {r["stimulus_id"]: [images[r["stimulus_id"]], r["emotion"], r["race"], r["gender"],
                               r["identity"], norms.get(r["stimulus_id"])]
            for r in s.manifest.iter_rows(named=True)}


def collect(params: Params, data: DataPaths, out: Path) -> tuple[dict, BrowseResult]:
    """Everything the page shows, read from the store's current batches."""
    emotions = params.study.emotions
    store = PredictionStore(data.root)
    result = BrowseResult(out / "index.html")
    sets: dict[str, StimulusSet] = {}
    stimuli: dict[str, dict] = {}
    questions: dict[str, int] = {}
    folders, records = [], []
    study_set = params.stimuli.set_name
    listed = [st for st in store_status(data.root, checksums=False) if st["kind"] == "predictions"]
    # the study's set and the baseline first, then the other conditions; classifiers (FER) last
    listed.sort(key=lambda st: (st["stimulus_set"] != study_set,
                                st["condition_id"] != "context_carry_t0_r1", st["condition_id"],
                                st["model"].startswith("fer"), st["model"]))
    for st in listed:
        folder = Path(st["folder"])
        rel = folder.relative_to(data.root).as_posix()
        if not st["planned"]:
            result.skipped.append(f"{rel}: no plan recorded (current.json)")
            continue
        try:
            df = store.read(folder, emotions)
            logits = store.read_logits(folder)
            name = st["stimulus_set"]
            if name not in sets:
                sets[name] = load_stimulus_set(data.stimulus_set(name), params.study)
                stimuli[name] = _stimuli(sets[name], _copy_images(sets[name], out))
        except EmofaceError as err:
            result.skipped.append(f"{rel}: {err}")
            continue
        digits = _digits(logits)
        first = df.row(0, named=True)
        fi = len(folders)
        folders.append({"set": name, "condition": first["condition_id"],
                        "model": first["model_id"], "protocol": first["protocol"],
                        "simulated": bool(df["simulated"].any()), "folder": rel})
        for r in df.sort("stimulus_id").iter_rows(named=True):
            sid = r["stimulus_id"]
            if sid not in stimuli[name]:
                continue  # validated rows always name a manifest stimulus; be safe anyway
            turns = [t for conv in conversations(r["protocol"], emotions, label=r["label_given"])
                     for t in conv]
            raw = json.loads(r["raw_answers"])
            qa = []
            for i, answer in enumerate(raw):
                q = turns[i].text if i < len(turns) else f"({answer.get('field', '?')})"
                qa.append([questions.setdefault(q, len(questions)), answer.get("text", "")])
            intended = stimuli[name][sid][1]
            correct = (None if r["emotion_status"] == "not_asked"
                       else bool(r["emotion"] == intended
                                 and r["emotion_status"] in ("ok", "normalised")))
            records.append([
                fi, sid, r["emotion"], r["emotion_status"],
                [r["valence"], r["valence_status"]], [r["arousal"], r["arousal_status"]],
                correct, qa, {f: digits[(sid, f)] for f in RATING_FIELDS if (sid, f) in digits},
                r["label_given"]])
        result.folders += 1
    if not folders:
        why = "; ".join(result.skipped[:3]) or "no predictions stored"
        raise DataError(f"nothing to browse under {data.root}: {why}; run the ablations first "
                        "(python flows/ablations.py ...)", file=data.root / "predictions")
    result.answers = len(records)
    return {"folders": folders, "stimuli": stimuli, "questions": list(questions),
            "records": records, "emotions": list(emotions)}, result


def write_browser(params: Params, data: DataPaths, out: Path) -> BrowseResult:
    """Write the browser under ``out`` (index.html, data.js, images/); returns what it holds."""
    out.mkdir(parents=True, exist_ok=True)
    payload, result = collect(params, data, out)
    with atomic_path(out / "data.js") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write("window.EMOFACE = ")
        json.dump(payload, fh, ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                  default=_json_default)
        fh.write(";\n")
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(PAGE.replace("__SKIPPED__", _skipped_html(result.skipped)),
                       encoding="utf-8")
    return result


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON: {type(obj).__name__}")


def _skipped_html(skipped: list[str]) -> str:
    if not skipped:
        return ""
    items = "".join(f"<li>{html.escape(s)}</li>" for s in skipped)
    return f'<details class="skipped"><summary>{len(skipped)} folder(s) left out</summary>' \
           f"<ul>{items}</ul></details>"


PAGE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>emoface: stored answers</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b}
header{position:sticky;top:0;background:#f5f6f8;border-bottom:1px solid #ddd;padding:.6em 1em;z-index:2}
h1{font-size:1.2em;margin:0 0 .4em}
.filters{display:flex;flex-wrap:wrap;gap:.6em;align-items:end}
.filters label{display:flex;flex-direction:column;font-size:12px;color:#444}
.filters select{font-size:13px;max-width:22em}
#count{margin-left:auto;font-size:13px}
.pager button{font-size:13px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(420px,1fr));gap:12px;padding:12px}
.card{border:1px solid #d9d9d9;border-radius:6px;padding:10px;background:#fff}
.card .top{display:flex;gap:10px}
.card img{width:128px;height:128px;object-fit:contain;background:#eee;border-radius:4px;flex:none}
.meta{font-size:12.5px}.meta b{font-size:13px}
.sim{background:#fff0c2;color:#7a5600;border-radius:3px;padding:0 4px;font-size:11px}
.ok{color:#176e2b}.bad{color:#a11}.muted{color:#777}
ol.turns{padding-left:1.3em;margin:.5em 0}
ol.turns li{margin-bottom:.35em}
.q{color:#555;font-size:12px}.a{font-family:ui-monospace,Menlo,monospace;font-size:12.5px;
white-space:pre-wrap;background:#f6f6f6;padding:2px 4px;border-radius:3px}
table.parsed{border-collapse:collapse;font-size:12.5px;margin:.3em 0}
table.parsed td,table.parsed th{border:1px solid #e0e0e0;padding:1px 6px;text-align:left}
.charts{display:flex;gap:10px;flex-wrap:wrap}
.charts figure{margin:0}.charts figcaption{font-size:11.5px;color:#444;max-width:200px}
svg.digit-chart rect.bar{fill:#6b8fc7}svg.digit-chart rect.bar.answer{fill:#d9822b}
svg.digit-chart line.human{stroke:#2a2a2a;stroke-dasharray:3 2}
svg.digit-chart text{font-size:9px;fill:#555}
.skipped{font-size:12px;margin-top:.3em}
</style></head><body>
<header>
<h1>emoface: stored answers <span class="muted" id="source"></span></h1>
<div class="filters">
<label>model<select id="f-model"></select></label>
<label>condition<select id="f-condition"></select></label>
<label>intended emotion<select id="f-emotion"></select></label>
<label>race<select id="f-race"></select></label>
<label>answer<select id="f-correct"></select></label>
<label>parse status<select id="f-status"></select></label>
<span class="pager"><button id="prev">&larr;</button> <span id="page"></span>
<button id="next">&rarr;</button></span>
<span id="count"></span>
</div>
__SKIPPED__
</header>
<main id="cards"></main>
<script src="data.js"></script>
<script>
(function () {
  var D = window.EMOFACE, PAGE = 24, page = 0, shown = [];
  var F = D.folders, S = D.stimuli, Q = D.questions;
  // a record: [folder, stimulus, emotion, emotion status, [valence, status], [arousal, status],
  //            correct, [[question, raw answer], ...], {field: [digits, mass]}, label given]
  function esc(s) {
    return String(s === null || s === undefined ? '' : s).replace(/[&<>"]/g, function (c) {
      return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c];
    });
  }
  function stim(r) { return S[F[r[0]].set][r[1]]; }
  function statuses(r) { return [r[3], r[4][1], r[5][1]]; }
  function correctness(r) { return r[6] === null ? 'not asked' : (r[6] ? 'correct' : 'incorrect'); }
  var keys = {
    'f-model': function (r) { return F[r[0]].model; },
    'f-condition': function (r) { return F[r[0]].condition + ' [' + F[r[0]].set + ']'; },
    'f-emotion': function (r) { return stim(r)[1]; },
    'f-race': function (r) { return stim(r)[2]; },
    'f-correct': correctness
  };
  function fill(id, values) {
    var sel = document.getElementById(id);
    sel.innerHTML = '<option value="">all</option>' + values.map(function (v) {
      return '<option value="' + esc(v) + '">' + esc(v) + '</option>';
    }).join('');
    sel.addEventListener('change', function () { page = 0; apply(); });
  }
  function distinct(fn) {
    var seen = {};
    D.records.forEach(function (r) { seen[fn(r)] = true; });
    return Object.keys(seen).sort();
  }
  Object.keys(keys).forEach(function (id) { fill(id, distinct(keys[id])); });
  var st = {};
  D.records.forEach(function (r) { statuses(r).forEach(function (s) { st[s] = true; }); });
  fill('f-status', Object.keys(st).sort());
  function apply() {
    var want = {};
    Object.keys(keys).concat(['f-status']).forEach(function (id) {
      want[id] = document.getElementById(id).value;
    });
    shown = D.records.filter(function (r) {
      for (var id in keys) { if (want[id] && keys[id](r) !== want[id]) return false; }
      return !want['f-status'] || statuses(r).indexOf(want['f-status']) >= 0;
    });
    render();
  }
  function chart(field, dist, answer, norms) {
    var p = dist[0], w = 18, h = 50, bars = '', labels = '';
    var top = Math.max.apply(null, p) || 1;
    for (var k = 0; k < 9; k++) {
      var bh = Math.round(h * p[k] / top), x = 4 + k * w;
      bars += '<rect class="bar' + (answer === k + 1 ? ' answer' : '') + '" x="' + x +
        '" y="' + (h - bh + 4) + '" width="' + (w - 3) + '" height="' + bh + '">' +
        '<title>' + (k + 1) + ': ' + (p[k] / 10).toFixed(1) + ' %</title></rect>';
      labels += '<text x="' + (x + (w - 3) / 2) + '" y="' + (h + 15) +
        '" text-anchor="middle">' + (k + 1) + '</text>';
    }
    var human = '';
    if (norms && norms[field + '_mean'] !== undefined) {
      var hx = 4 + (norms[field + '_mean'] - 1) * w + (w - 3) / 2;
      human = '<line class="human" x1="' + hx + '" x2="' + hx + '" y1="0" y2="' + (h + 4) + '"/>';
    }
    var mean = 0;
    for (var j = 0; j < 9; j++) { mean += (j + 1) * p[j] / 1000; }
    return '<figure><svg class="digit-chart" data-field="' + field + '" width="' + (9 * w + 8) +
      '" height="' + (h + 20) + '" role="img" aria-label="' + field + ' digit distribution">' +
      bars + labels + human + '</svg><figcaption>' + field + ': digit mass ' +
      dist[1].toFixed(3) + ', E = ' + mean.toFixed(2) +
      (human ? '; dashed: human mean' : '') + '</figcaption></figure>';
  }
  function value(v, status) {
    var cls = status === 'ok' || status === 'normalised' ? 'ok' : (status === 'not_asked' ? 'muted' : 'bad');
    return esc(v === null ? '–' : v) + ' <span class="' + cls + '">(' + esc(status) + ')</span>';
  }
  function card(r) {
    var f = F[r[0]], s = stim(r), n = s[5], c = correctness(r);
    var turns = r[7].map(function (t) {
      return '<li><div class="q">' + esc(Q[t[0]]) + '</div><div class="a">' + esc(t[1]) + '</div></li>';
    }).join('');
    var charts = Object.keys(r[8]).map(function (fld) {
      return chart(fld, r[8][fld], fld === 'valence' ? r[4][0] : r[5][0], n);
    }).join('');
    var norms = n ? 'humans: valence ' + n.valence_mean + ' (SD ' + n.valence_sd + '), arousal ' +
      n.arousal_mean + ' (SD ' + n.arousal_sd + ')' + (n.n_raters ? ', ' + n.n_raters + ' raters' : '')
      : 'no human norms for this set';
    return '<article class="card" data-model="' + esc(f.model) + '" data-correct="' + c +
      '" data-emotion="' + esc(s[1]) + '" data-race="' + esc(s[2]) + '">' +
      '<div class="top"><img src="' + esc(s[0]) + '" alt="' + esc(r[1]) + '" loading="lazy">' +
      '<div class="meta"><b>' + esc(r[1]) + '</b><br>intended: ' + esc(s[1]) + ' · ' + esc(s[2]) +
      ' · ' + esc(s[3]) + '<br>' + esc(f.model) + (f.simulated ? ' <span class="sim">SIMULATED</span>' : '') +
      '<br>' + esc(f.condition) + ' [' + esc(f.set) + ']' +
      (r[9] ? '<br>label given: ' + esc(r[9]) : '') +
      (f.protocol === 'text_only' ?
        '<br><span class="muted">the image was not shown (text only)</span>' : '') +
      '<br><span class="' + (c === 'correct' ? 'ok' : c === 'incorrect' ? 'bad' : 'muted') + '">' + c +
      '</span><br><span class="norms">' + esc(norms) + '</span></div></div>' +
      '<ol class="turns">' + turns + '</ol>' +
      '<table class="parsed"><tr><th>emotion</th><th>valence</th><th>arousal</th></tr><tr><td>' +
      value(r[2], r[3]) + '</td><td>' + value(r[4][0], r[4][1]) + '</td><td>' +
      value(r[5][0], r[5][1]) + '</td></tr></table>' +
      '<div class="charts">' + charts + '</div></article>';
  }
  function render() {
    var pages = Math.max(1, Math.ceil(shown.length / PAGE));
    page = Math.min(page, pages - 1);
    document.getElementById('cards').innerHTML =
      shown.slice(page * PAGE, (page + 1) * PAGE).map(card).join('');
    document.getElementById('count').textContent =
      shown.length + ' of ' + D.records.length + ' answers';
    document.getElementById('page').textContent = 'page ' + (page + 1) + ' of ' + pages;
  }
  document.getElementById('prev').addEventListener('click', function () {
    if (page > 0) { page--; render(); }
  });
  document.getElementById('next').addEventListener('click', function () { page++; render(); });
  document.getElementById('source').textContent = '(' + D.folders.length +
    ' model x condition folders)';
  apply();
})();
</script></body></html>
"""
