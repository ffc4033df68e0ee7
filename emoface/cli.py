"""Command line of the core library (``emoface ...`` or ``python -m emoface``).

The ablation flows have their own entry point, ``flows/ablations.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from emoface.config import load_params
from emoface.errors import ConfigError, EmofaceError
from emoface.paths import DataPaths, check_data_root

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
stimuli_app = typer.Typer(no_args_is_help=True, help="Generate, import and check stimulus sets.")
app.add_typer(stimuli_app, name="stimuli")
store_app = typer.Typer(no_args_is_help=True, help="Inspect and prune stored model outputs.")
app.add_typer(store_app, name="store")
results_app = typer.Typer(no_args_is_help=True,
                          help="Export the stored answers as tidy tables; import answers made "
                               "elsewhere.")
app.add_typer(results_app, name="results")
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
DataOpt = Annotated[Path, typer.Option("--data", help="data folder")]


def _fail(err: EmofaceError) -> None:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _data(data: Path) -> DataPaths:
    """The data folder, refused in one line when it cannot be one (a file, /dev/null, ...)."""
    try:
        return DataPaths(check_data_root(data))
    except EmofaceError as err:
        _fail(err)


def _lock(data: Path):
    """Hold the data folder for this writing command (emoface.runlock); refused in one line.
    Released when the command ends (:func:`_writes_data`), also when run in-process."""
    from emoface.runlock import acquire

    try:
        return acquire(data)
    except EmofaceError as err:
        _fail(err)


def _writes_data(fn):
    """Release the data-folder locks the command took, however it ends."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from emoface.runlock import held_locks

        before = set(held_locks())
        try:
            return fn(*args, **kwargs)
        finally:
            for key, lock in held_locks().items():
                if key not in before:
                    lock.release()
    return wrapper


@stimuli_app.command("generate")
@_writes_data
def generate(params: ParamsOpt = Path("params.yaml"), data: DataOpt = Path("data"),
             name: Annotated[str | None, typer.Option(
                 help="set name to write (default: stimuli.set_name); dvc.yaml passes "
                      "'embedded' so a user's own set selected by stimuli.set_name is never "
                      "overwritten")] = None) -> None:
    """Generate the embedded synthetic stimulus set (images, manifest, norms, latents)."""
    from emoface.stimuli.generate import generate_stimulus_set

    try:
        p = load_params(params)
        out = _data(data).stimulus_set(name or p.stimuli.set_name)
        _lock(data)
        summary = generate_stimulus_set(p.study, p.stimuli, out)
    except EmofaceError as err:
        _fail(err)
    Console().print(
        f"wrote {int(summary['n_stimuli'])} synthetic stimuli ({int(summary['n_identities'])} "
        f"identities, {summary['image_bytes'] / 1e6:.1f} MB) to {out.root} "
        f"in {summary['seconds']:.1f} s"
    )


@stimuli_app.command("import")
@_writes_data
def import_(
    name: Annotated[str, typer.Argument(help="name of the new stimulus set")],
    images: Annotated[Path, typer.Option(help="folder holding the images")],
    csv: Annotated[Path, typer.Option(help="CSV: file, emotion, race, gender, identity")],
    norms: Annotated[Path | None, typer.Option(help="optional human norms CSV")] = None,
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
) -> None:
    """Import your own images + metadata CSV (+ norms CSV) into data/stimuli/NAME/."""
    from emoface.stimuli.importers import CONVERSIONS, import_stimulus_folder

    try:
        p = load_params(params)
        out = _data(data).stimulus_set(name)
        _lock(data)
        manifest = import_stimulus_folder(images, csv, out, p.study, norms_csv=norms,
                                          max_pixels=p.stimuli.max_image_pixels)
    except EmofaceError as err:
        _fail(err)
    Console().print(f"imported {manifest.height} stimuli into {out.root}", highlight=False)
    if (out.root / CONVERSIONS).is_file():
        n = sum(1 for _ in (out.root / CONVERSIONS).open()) - 1
        Console().print(f"{n} image(s) were not 8-bit RGB/grayscale or had an EXIF orientation "
                        "(applied) and are stored as RGB PNG; their original modes and "
                        f"orientations are in {out.root / CONVERSIONS}", highlight=False)


@stimuli_app.command("check")
def check(
    name: Annotated[str, typer.Argument(help="stimulus set name")] = "embedded",
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
) -> None:
    """Validate a stimulus set: schemas, image files and their hashes, norms."""
    from emoface.stimuli.store import load_stimulus_set

    try:
        p = load_params(params)
        s = load_stimulus_set(_data(data).stimulus_set(name), p.study)
    except EmofaceError as err:
        _fail(err)
    norms = "with" if s.norms is not None else "without"
    Console().print(f"{name}: {s.manifest.height} stimuli OK ({norms} norms)")


@stimuli_app.command("real-faces")
@_writes_data
def real_faces(params: ParamsOpt = Path("params.yaml"), data: DataOpt = Path("data")) -> None:
    """Build A7's real-face set as params.yaml's real_faces section says (DVC stage real_faces)."""
    from emoface.stimuli.datasets import build_real_faces

    try:
        p = load_params(params)
        rf = p.real_faces
        out = _data(data).stimulus_set(rf.name)
        m = build_real_faces(p, _data(data))
        _lock(data)
    except EmofaceError as err:
        _fail(err)
    Console().print(f"imported {m.height} {rf.format} images into {out.root} "
                    f"(source: {m['source'][0]})")


@app.command("infer")
@_writes_data
def infer(
    model: Annotated[str, typer.Option(help="model id, backend/model")] = "simulated/gemma3-4b",
    protocol: Annotated[str, typer.Option(help="context_carry | single_shot | text_only")] = (
        "context_carry"),
    temperature: Annotated[float, typer.Option()] = 0.0,
    repeat: Annotated[int, typer.Option()] = 1,
    label_source: Annotated[str | None, typer.Option(help="text_only: baseline | intended")] = None,
    stimulus_set: Annotated[str | None, typer.Option("--set", help="stimulus set name")] = None,
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
) -> None:
    """Run one condition for one model (resumable: only missing batches call the backend)."""
    import json

    from emoface.inference.service import run_condition_for

    try:
        p = load_params(params)
        _lock(data)
        summary = run_condition_for(p, _data(data), model, protocol=protocol,
                                    temperature=temperature, repeat=repeat,
                                    label_source=label_source, stimulus_set=stimulus_set,
                                    progress=sys.stderr.isatty())
    except EmofaceError as err:
        _fail(err)
    print(json.dumps(summary))


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


@store_app.command("status")
def store_status_cmd(
    data: DataOpt = Path("data"),
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    fast: Annotated[bool, typer.Option(help="compare sizes only, no checksums")] = False,
) -> None:
    """Current / missing / damaged / stale batches per condition and model, with sizes.

    Exit status 1 when a damaged batch is found (the next run of the same command redoes it)."""
    import json

    from rich.table import Table

    from emoface.inference.store import store_status

    data = _data(data).root
    folders = store_status(data, checksums=not fast)
    damaged = [d for f in folders for d in f["damaged"]]
    if as_json:
        print(json.dumps(folders, indent=1))
    else:
        t = Table(title=f"stored model outputs under {data}")
        for col in ("set", "condition", "model", "current", "missing", "damaged", "stale"):
            t.add_column(col, justify="left" if col in ("set", "condition", "model") else "right")
        for f in folders:
            planned = f"{f['done']}/{f['batches']} ({_size(f['done_bytes'])})" if f["planned"] \
                else "no plan recorded"
            layers = f.get("layers")
            t.add_row(f["stimulus_set"], f["condition_id"] + (f" [layers: {layers}]" if layers else ""),
                      f["model"], planned, str(f["missing"]), str(len(f["damaged"])),
                      f"{len(f['stale'])} files ({_size(f['stale_bytes'])})" if f["stale"] else "0")
        console = Console(width=max(140, Console().width))
        console.print(t)
        for d in damaged:
            console.print(f"damaged: {d['path']}: {d['detail']}", highlight=False)
        if not folders:
            console.print(f"nothing stored under {data}")
    if damaged:
        raise typer.Exit(1)


@store_app.command("prune")
@_writes_data
def store_prune_cmd(
    data: DataOpt = Path("data"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go; delete nothing")]
    = False,
) -> None:
    """Remove stale batch files (not named by the current plan) and writers' temporary leftovers.

    Current and damaged batches are kept (a damaged one is redone by the next run)."""
    from emoface.inference.batchfiles import prune
    from emoface.inference.store import store_status

    if not dry_run:
        _lock(data)
    total, n = 0, 0
    data = _data(data).root
    for f in store_status(data, checksums=False):
        for p in prune(f, dry_run=True):
            total += p.stat().st_size if p.exists() else 0
            n += 1
            print(("would remove " if dry_run else "removing ") + str(p))
        if not dry_run:
            prune(f, dry_run=False)
    verb = "would free" if dry_run else "freed"
    print(f"{n} stale file(s); {verb} {_size(total)}")


@app.command("power")
def power_cmd(
    ablation: Annotated[str, typer.Option("--ablation", help="ablation with a power simulator")],
    identities: Annotated[int, typer.Option(help="identities in the design (study: 240)")] = 240,
    effect: Annotated[float, typer.Option(help="planted effect size (unit: see the output)")]
    = 0.02,
    replicates: Annotated[int, typer.Option(help="simulated studies per effect size")] = 200,
    curve: Annotated[bool, typer.Option("--curve", help="a table over effect sizes")] = False,
    sizes: Annotated[str | None, typer.Option(
        help="with --curve: a table over these identity counts (comma-separated) at --effect "
             "instead")] = None,
    seed: Annotated[int, typer.Option(help="simulation seed")] = 1,
    json_out: Annotated[Path | None, typer.Option(
        "--json", help="also write the rows as JSON to this file (under data/)")] = None,
) -> None:
    """Power of an ablation's decision rule at a design: simulated studies with the effect
    planted, decided by the project's own analysis code; Monte Carlo (Wilson) 95 % intervals."""
    from emoface.analysis.power import REGISTRY, power, power_curve

    try:
        grid = [int(x) for x in sizes.split(",")] if sizes else None
    except ValueError:
        _fail(ConfigError(f"--sizes {sizes!r}: give identity counts like 20,60,240"))
    try:
        rows = (power_curve(ablation, identities, replicates=replicates, seed=seed, sizes=grid,
                            effect=effect) if curve
                else [power(ablation, identities, effect, replicates=replicates, seed=seed)])
    except EmofaceError as err:
        _fail(err)
    sim = REGISTRY[ablation.upper()]
    print(f"{sim.ablation} power: share of {replicates} simulated studies that say \"supports\""
          f"\neffect = {sim.effect}")
    for r in rows:
        print(f"effect {r['effect']:g}: power {r['power']:.3f} [{r['mc_low']:.3f}, "
              f"{r['mc_high']:.3f}] (Monte Carlo 95 %); {r['design']}")
    if json_out is not None:
        import json

        from emoface.io import atomic_path

        json_out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps({"command": "emoface power", "rows": rows}, indent=1,
                                      default=str) + "\n")


@results_app.command("export")
def results_export_cmd(
    out: Annotated[Path, typer.Option("--out", help="folder to write the tables and codebook to")],
    only: Annotated[str | None, typer.Option(
        help="comma-separated ablation ids (A5, baseline), condition ids or model ids")] = None,
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
) -> None:
    """The current answers, tidy: answers + digits (CSV and Parquet) and codebook.md."""
    from emoface.results.export import export

    try:
        s = export(load_params(params), _data(data), out, only=only)
    except EmofaceError as err:
        _fail(err)
    for line in s.skipped:
        err_console.print(f"skipped (not complete): {line}", highlight=False, soft_wrap=True)
    Console().print(f"wrote {s.answers:,} answers and {s.digit_rows:,} digit rows from "
                    f"{len(s.folders)} (condition, model) folder(s) to {out}: "
                    + ", ".join(p.name for p in s.files), highlight=False, soft_wrap=True)


@results_app.command("import")
@_writes_data
def results_import_cmd(
    predictions: Annotated[Path, typer.Option(help="the answers: JSONL, CSV or Parquet")],
    map_file: Annotated[Path, typer.Option("--map", help="the mapping file (YAML)")],
    logits: Annotated[str | None, typer.Option(
        help="NPZ files: a folder or a glob (quote it), as the mapping's logits section says")]
    = None,
    model_id: Annotated[str | None, typer.Option(
        "--model-id", help="backend/model the answers come from (else the mapping's model field)")]
    = None,
    condition: Annotated[str | None, typer.Option(
        help="condition id, e.g. context_carry_t0_r1 (default: that, the baseline)")] = None,
    stimulus_set: Annotated[str | None, typer.Option("--set", help="stimulus set name")] = None,
    allow_missing: Annotated[bool, typer.Option(
        "--allow-missing", help="import the rows that match an image; count the others")] = False,
    replace: Annotated[bool, typer.Option(
        "--replace", help="replace answers this pipeline stored for the same condition/model")]
    = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and count; write nothing")]
    = False,
    params: ParamsOpt = Path("params.yaml"),
    data: DataOpt = Path("data"),
) -> None:
    """Bring answers made elsewhere into the store; the analyses then run on them, no model calls."""
    from emoface.results.importing import run_import

    try:
        p = load_params(params)
        if not dry_run:
            _lock(data)  # it writes the store, as a run does
        rep = run_import(p, _data(data), predictions=predictions, mapping_file=map_file,
                         logits=logits, model_id=model_id, condition=condition,
                         stimulus_set=stimulus_set, allow_missing=allow_missing, dry_run=dry_run,
                         replace=replace)
    except EmofaceError as err:
        _fail(err)
    for line in rep.lines(p.analysis.digit_mass_threshold):
        print(line)
    print(("imported into " + ", ".join(rep.folders)) if rep.written
          else "dry run: nothing written")


@app.command("browse")
def browse_cmd(
    data: DataOpt = Path("data"),
    out: Annotated[Path | None, typer.Option(
        "--out", help="folder to write (default: DATA/browse)")] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Write a static HTML browser over the current stored answers (open OUT/index.html; no
    server): per stimulus the image, every question and raw answer, the parsed values, the digit
    distribution of each rating step and the human norms; filters by model, condition, emotion,
    race, correct/incorrect and parse status."""
    from emoface.browse import write_browser

    try:
        p = load_params(params)
        res = write_browser(p, DataPaths(data), out or data / "browse")
    except EmofaceError as err:
        _fail(err)
    Console().print(f"wrote {res.answers} answers from {res.folders} model x condition folder(s)"
                    f" to {res.index}", highlight=False, soft_wrap=True)
    for s in res.skipped:
        Console(stderr=True).print(f"left out: {s}", highlight=False, soft_wrap=True)


def main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(app())
