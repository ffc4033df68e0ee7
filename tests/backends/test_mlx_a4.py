"""A4 from one set of weights: the FP16 tiny Gemma3 quantized by the project with mlx-vlm's own
conversion (made once, cached by the FP16 digest, recorded in provenance), and both contrasts in
the report on the tiny-model path."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlx_vlm", reason="the mlx extra is not installed")
pytestmark = pytest.mark.mlx

import yaml  # noqa: E402

from emoface.ablations import work_for  # noqa: E402
from emoface.ablations.a4_quantization import A4Params  # noqa: E402
from emoface.backends import make_backend  # noqa: E402
from emoface.backends.mlx.quantize import PROVENANCE, ensure_quantized  # noqa: E402
from emoface.config import InferenceParams, Params  # noqa: E402
from emoface.stimuli.store import load_stimulus_set  # noqa: E402
from tests.conftest import write_small_project_params  # noqa: E402
from tests.flows.test_flow_runs import run_flow  # noqa: E402
from tests.mlx_tiny import build_tiny_gemma3  # noqa: E402


def test_arms_need_an_mlx_fp16_model():
    assert set(A4Params().arms()) == {"qat"}  # simulated FP16: nothing to quantize here
    a4 = A4Params(fp16="mlx/models/g3-fp16", q4="ollama/gemma3:4b")
    assert a4.arms() == {"qat": ("ollama/gemma3:4b", "mlx/models/g3-fp16"),
                         "self": ("mlx/models/g3-fp16@q4-g64", "mlx/models/g3-fp16")}
    assert set(A4Params(fp16="mlx/x", self_quantized=None).arms()) == {"qat"}
    p = Params.model_validate({"ablations": {"A4": {"fp16": "mlx/x", "q4": "mlx/y"}}})
    assert [i.model_id for i in work_for("A4", p, ["mlx/y"])] == ["mlx/y", "mlx/x", "mlx/x@q4-g64"]


def test_quantized_once_per_fp16_digest_and_recorded(tmp_path, small_set, small_params):
    fp16 = build_tiny_gemma3(tmp_path / "g3-fp16")
    root = tmp_path / "data" / "models" / "quantized"
    out = ensure_quantized(fp16, 4, 64, root)
    made = json.loads((out / PROVENANCE).read_text())
    assert made["bits"] == 4 and made["group_size"] == 64 and made["from_digest"].startswith("sha256:")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["quantization"]["bits"] == 4 and cfg["quantization"]["group_size"] == 64
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert ensure_quantized(fp16, 4, 64, root) == out  # cached: not converted again
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(list(root.iterdir())) == 1
    # the backend finds (or makes) it under the data root of the stimulus set it serves
    ss = load_stimulus_set(small_set, small_params.study)
    b = make_backend(f"mlx/{fp16}@q4-g64", InferenceParams(), emotions=small_params.study.emotions,
                     stimulus_set=ss)
    info = b.info
    assert info.model_id == f"mlx/{fp16}@q4-g64"
    assert info.quantization == f"q4 g64 self-quantized from {made['from_digest'][:19]}"
    assert info.extra["quantized_from"]["from_digest"] == made["from_digest"]
    fp = make_backend(f"mlx/{fp16}", InferenceParams(), emotions=small_params.study.emotions)
    assert info.digest != fp.info.digest
    # different FP16 weights -> a different quantized directory
    other = build_tiny_gemma3(tmp_path / "g3-other", seed=5)
    assert ensure_quantized(other, 4, 64, root) != out


@pytest.mark.slow
def test_a4_report_shows_both_contrasts_on_the_tiny_models(tmp_path):
    # seed 4: a tiny model whose answers parse often enough (FP16 and 4-bit) for the A4 statistics
    fp16 = build_tiny_gemma3(tmp_path / "g3-fp16", seed=4)
    # the QAT release's stand-in: another 4-bit model of the same family (group size 32, made
    # outside the data folder, so it is not the self-quantized arm)
    qat = ensure_quantized(fp16, 4, 32, tmp_path / "qat-standin")
    params_file = write_small_project_params(tmp_path / "cfg")
    params = yaml.safe_load(params_file.read_text())
    params["models"]["study"] = [f"mlx/{qat}"]
    params["ablations"]["A4"] = {"fp16": f"mlx/{fp16}", "q4": f"mlx/{qat}"}
    params["inference"]["max_tokens"] = 8
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    data = tmp_path / "data"
    rc, out, err = run_flow(["--only", "A4"], params_file, data, tmp_path)
    assert rc == 0, err[-3000:]
    metrics = json.loads((data / "results" / "A4" / "metrics.json").read_text())
    assert "Quantization alone" in metrics["verdict"]
    assert (data / "results/A4/tables/main.csv").exists()
    assert metrics["self_quantized"]["bits"] == 4 and metrics["self_quantized"]["group_size"] == 64
    report = (data / "results/report.md").read_text()
    assert f"mlx/{qat} vs mlx/{fp16}" in report and f"mlx/{fp16}@q4-g64 vs mlx/{fp16}" in report
    quantized = list((data / "models" / "quantized").iterdir())
    assert len(quantized) == 1
    assert "self-quantized from sha256:" in json.dumps(metrics)
    rc, again, err = run_flow(["--only", "A4"], params_file, data, tmp_path)
    assert rc == 0 and again["calls"] == 0, err[-2000:]
    assert list((data / "models" / "quantized").iterdir()) == quantized
