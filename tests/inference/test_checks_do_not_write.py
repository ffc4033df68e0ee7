"""A check never writes: asking "is there anything to do?" (the inference part of a no-change
re-run's check, and the dry run) leaves the data folder byte for byte as it was, even when the
answer is "yes" because the plan changed (new batch keys are recorded only by a run)."""

from __future__ import annotations

from emoface.ablations import baseline_items
from emoface.uptodate import inference_is_current

MODEL = "simulated/gemma3-4b"


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_uptodate_check_writes_nothing(simulated_store):
    p, data = simulated_store
    items = baseline_items(p, [MODEL])
    before = snapshot(data.root)
    assert inference_is_current(items, p, data)
    # other batches (a changed batch size gives other keys): something to do, nothing written
    changed = p.model_copy(update={"inference": p.inference.model_copy(update={"batch_size": 7})})
    assert not inference_is_current(items, changed, data)
    assert snapshot(data.root) == before


def test_dry_run_writes_nothing(simulated_store, tmp_path, capsys):
    import yaml

    from flows.ablations import main

    p, data = simulated_store
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(
        {"stimuli": {"identities_per_cell": 2}, "models": {"study": [MODEL], "fer": []},
         "inference": {"batch_size": 7}}))
    before = snapshot(data.root)
    assert main(["--dry-run", "--only", "A5", "--models", MODEL, "--params", str(params),
                 "--data", str(data.root), "--json"]) == 0
    assert '"calls_remaining"' in capsys.readouterr().out
    assert snapshot(data.root) == before
