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
from emoface.errors import EmofaceError
from emoface.paths import DataPaths

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
stimuli_app = typer.Typer(no_args_is_help=True, help="Generate, import and check stimulus sets.")
app.add_typer(stimuli_app, name="stimuli")
err_console = Console(stderr=True)

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read")]
DataOpt = Annotated[Path, typer.Option("--data", help="data folder")]


def _fail(err: EmofaceError) -> None:
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@stimuli_app.command("generate")
def generate(params: ParamsOpt = Path("params.yaml"), data: DataOpt = Path("data")) -> None:
    """Generate the embedded synthetic stimulus set (images, manifest, norms, latents)."""
    from emoface.stimuli.generate import generate_stimulus_set

    try:
        p = load_params(params)
        out = DataPaths(data).stimulus_set(p.stimuli.set_name)
        summary = generate_stimulus_set(p.study, p.stimuli, out)
    except EmofaceError as err:
        _fail(err)
    Console().print(
        f"wrote {int(summary['n_stimuli'])} synthetic stimuli ({int(summary['n_identities'])} "
        f"identities, {summary['image_bytes'] / 1e6:.1f} MB) to {out.root} "
        f"in {summary['seconds']:.1f} s"
    )


@stimuli_app.command("import")
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
        out = DataPaths(data).stimulus_set(name)
        manifest = import_stimulus_folder(images, csv, out, p.study, norms_csv=norms,
                                          max_pixels=p.stimuli.max_image_pixels)
    except EmofaceError as err:
        _fail(err)
    Console().print(f"imported {manifest.height} stimuli into {out.root}", highlight=False)
    if (out.root / CONVERSIONS).is_file():
        n = sum(1 for _ in (out.root / CONVERSIONS).open()) - 1
        Console().print(f"{n} image(s) were not 8-bit RGB/grayscale and are stored as RGB PNG; "
                        f"their original modes are in {out.root / CONVERSIONS}", highlight=False)


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
        s = load_stimulus_set(DataPaths(data).stimulus_set(name), p.study)
    except EmofaceError as err:
        _fail(err)
    norms = "with" if s.norms is not None else "without"
    Console().print(f"{name}: {s.manifest.height} stimuli OK ({norms} norms)")


@stimuli_app.command("real-faces")
def real_faces(params: ParamsOpt = Path("params.yaml"), data: DataOpt = Path("data")) -> None:
    """Build A7's real-face set as params.yaml's real_faces section says (DVC stage real_faces)."""
    from emoface.stimuli.datasets import build_real_faces

    try:
        p = load_params(params)
        rf = p.real_faces
        out = DataPaths(data).stimulus_set(rf.name)
        m = build_real_faces(p, DataPaths(data))
    except EmofaceError as err:
        _fail(err)
    Console().print(f"imported {m.height} {rf.format} images into {out.root} "
                    f"(source: {m['source'][0]})")


@app.command("infer")
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
        summary = run_condition_for(p, DataPaths(data), model, protocol=protocol,
                                    temperature=temperature, repeat=repeat,
                                    label_source=label_source, stimulus_set=stimulus_set,
                                    progress=sys.stderr.isatty())
    except EmofaceError as err:
        _fail(err)
    print(json.dumps(summary))


def main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(app())
