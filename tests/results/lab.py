"""Turn an export into "a lab's own files": other field names, probabilities instead of
log-probabilities, one NPZ per stimulus with token ids and a vocab file, and mapping files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

# the mapping exactly as issue 21 writes it, with the two additions the round trip needs:
# token ids + a vocab (instead of token strings), and out_of_range: keep (a model that answered
# "10" is kept as the parser keeps it natively)
VLM_MAP = """\
predictions:
  format: jsonl
  stimulus: {field: img, match: file_name}   # or match: stimulus_id | sha256
  label: pred_label
  valence: val
  arousal: aro
  raw: response                              # optional
  out_of_range: keep
logits:
  per: stimulus            # one NPZ per stimulus, named after the image file's stem
  token_ids: ids           # array [steps, k] of token ids ...
  vocab: vocab.json        # ... and what they are
  values: probs            # array [steps, k]
  values_are: probabilities
  step_names: fields       # array [steps] naming each step: valence | arousal | other
"""

# a classifier gives a label only: no valence/arousal (stored as not asked, as natively)
CLASSIFIER_MAP = """\
predictions:
  format: csv
  stimulus: {field: image_sha, match: sha256}
  label: top_class
"""

OTHER_TOKENS = ["The", "I", "neutral"]


def model_dir(model_id: str) -> str:
    return model_id.replace("/", "_").replace(":", "_")


def write_lab_files(export: Path, out: Path) -> dict[str, dict]:
    """Per model of the export's baseline: the files to import and how (paths)."""
    answers = pl.read_parquet(export / "answers.parquet").filter(
        pl.col("condition_id") == "context_carry_t0_r1")
    digits = pl.read_parquet(export / "digits.parquet").filter(
        pl.col("condition_id") == "context_carry_t0_r1")
    out.mkdir(parents=True, exist_ok=True)
    vocab = [str(d) for d in range(1, 10)] + OTHER_TOKENS
    (out / "vocab.json").write_text(json.dumps({i: t for i, t in enumerate(vocab)}))
    (out / "vlm-map.yaml").write_text(VLM_MAP)
    (out / "classifier-map.yaml").write_text(CLASSIFIER_MAP)
    plans = {}
    for model in answers["model_id"].unique().sort():
        rows = answers.filter(pl.col("model_id") == model)
        folder = out / model_dir(model)
        folder.mkdir()
        if model.startswith("fer/"):
            pl.DataFrame({"image_sha": rows["stimulus_sha256"].str.to_uppercase(),
                          "top_class": rows["raw_emotion"]}).write_csv(folder / "labels.csv")
            plans[model] = {"predictions": folder / "labels.csv",
                            "map": out / "classifier-map.yaml", "logits": None}
            continue
        with open(folder / "predictions.jsonl", "w") as fh:
            for r in rows.iter_rows(named=True):
                fh.write(json.dumps({"img": Path(r["stimulus_file"]).name,
                                     "pred_label": r["raw_emotion"], "val": r["raw_valence"],
                                     "aro": r["raw_arousal"],
                                     "response": " / ".join(str(r[f"raw_{f}"]) for f in
                                                            ("emotion", "valence", "arousal"))})
                         + "\n")
        npz_dir = folder / "logits"
        npz_dir.mkdir()
        d = digits.filter(pl.col("model_id") == model)
        for r in rows.iter_rows(named=True):
            steps = d.filter(pl.col("stimulus_id") == r["stimulus_id"])
            names, ids, probs = ["other"], [[10, 9, 11]], [[0.5, 0.25, 0.125]]
            for field in ("valence", "arousal"):
                s = steps.filter((pl.col("field") == field)
                                 & pl.col("logprob").is_not_null()).sort("digit")
                if s.height == 0:
                    continue  # no rating step in the answer: the lab's file has none either
                names.append(field)
                # probabilities (float64, as any lab's script computes them), largest first, as
                # a top-k list
                p = np.exp(s["logprob"].to_numpy())
                order = np.argsort(-p, kind="stable")
                ids.append((s["digit"].to_numpy()[order] - 1).tolist())
                probs.append(p[order].tolist())
            k = max(len(x) for x in ids)
            id_arr = np.full((len(ids), k), -1, np.int64)
            p_arr = np.full((len(ids), k), np.nan)
            for i, (a, b) in enumerate(zip(ids, probs, strict=True)):
                id_arr[i, :len(a)] = a
                p_arr[i, :len(b)] = b
            stem = Path(r["stimulus_file"]).stem
            np.savez(npz_dir / f"{stem}.npz", ids=id_arr, probs=p_arr, fields=np.array(names))
        plans[model] = {"predictions": folder / "predictions.jsonl", "map": out / "vlm-map.yaml",
                        "logits": str(npz_dir / "*.npz")}
    return plans
