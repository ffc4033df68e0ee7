"""The embedded stimulus set: 1,440 schematic faces generated deterministically, with human norms.

Design (defaults from params.yaml): 6 emotions x 2 race groups (black, korean) x 2 genders x
60 identities per race-gender cell = 240 identities, every identity shown in every emotion.

Each image's expression is ``intensity * prototype(emotion) + jitter`` over the action units of
:mod:`emoface.stimuli.faces`, with ``intensity ~ U(intensity_min, intensity_max)`` per image and
``jitter ~ N(0, 0.07)`` per unit, so images within one emotion really differ.

Synthetic human norms (documented model; :func:`norms_for`):

* Circumplex anchors per emotion ``(V_e, A_e)`` on 1-9 (:data:`ANCHORS`, close to published norms
  for posed basic-emotion faces), and a neutral point ``(5, 3)``.
* True consensus values: ``v* = 5 + intensity (V_e - 5) + u_v + e_v`` and
  ``a* = 3 + intensity (A_e - 3) + u_a + e_a``, with identity effects
  ``u ~ N(0, identity_sd)`` and image effects ``e ~ N(0, 0.15)``.
* ``n ~ U{raters_min..raters_max}`` raters, each answering ``clip(round(x* + N(0, rater_noise_sd)),
  1, 9)``; the norms are the mean and SD (ddof = 1) of those simulated answers.

Everything generated here is marked ``source = synthetic``.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass

import numpy as np
import polars as pl

from emoface.config import StimuliParams, StudyParams
from emoface.errors import ConfigError
from emoface.io import write_csv, write_parquet
from emoface.paths import StimulusSetPaths
from emoface.stimuli.faces import PROTOTYPES, Expression, Identity, draw_face
from emoface.stimuli.store import replace_set, validate_manifest, validate_norms

ANCHORS: dict[str, tuple[float, float]] = {
    "angry": (2.6, 6.8),
    "disgusted": (2.9, 5.6),
    "fearful": (2.8, 7.0),
    "happy": (7.6, 6.0),
    "sad": (2.7, 3.6),
    "surprised": (5.6, 7.2),
}
NEUTRAL = (5.0, 3.0)
JITTER_SD = 0.07
IMAGE_EFFECT_SD = 0.15

# Skin tones (sRGB) per race group: a base and a spread, sampled per identity.
SKIN: dict[str, tuple[tuple[int, int, int], int]] = {
    "black": ((112, 74, 52), 22),
    "korean": ((234, 200, 172), 14),
    "white": ((238, 205, 186), 14),
    "south_asian": ((176, 126, 92), 18),
}
HAIR: dict[str, tuple[int, int, int]] = {
    "black": (28, 22, 20),
    "korean": (22, 20, 22),
    "white": (110, 78, 45),
    "south_asian": (25, 20, 18),
}


@dataclass(frozen=True)
class Stimulus:
    stimulus_id: str
    identity: str
    race: str
    gender: str
    emotion: str
    intensity: float
    expression: Expression


def _check_supported(study: StudyParams, params: StimuliParams) -> None:
    for e in study.emotions:
        if e not in PROTOTYPES:
            raise ConfigError(
                f"study.emotions: the embedded generator has no face prototype for '{e}' "
                f"(known: {', '.join(PROTOTYPES)}); import your own stimuli instead"
            )
    for r in params.races:
        if r not in SKIN:
            raise ConfigError(
                f"stimuli.races: no skin-tone model for '{r}' (known: {', '.join(SKIN)})"
            )


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def _identity(race: str, gender: str, rng: np.random.Generator) -> Identity:
    base, spread = SKIN[race]
    # One shared brightness shift keeps the hue plausible; a little per-channel noise on top.
    shift = rng.normal(0, spread)
    skin = tuple(int(np.clip(c + shift + rng.normal(0, 3), 0, 255)) for c in base)
    hair = tuple(int(np.clip(c + rng.normal(0, 8), 0, 255)) for c in HAIR[race])
    shirt = tuple(int(v) for v in rng.integers(40, 200, size=3))
    female = gender == "female"
    lip = (170, 70, 80) if female else tuple(int(c * 0.78) for c in skin)
    return Identity(
        skin=skin,  # type: ignore[arg-type]
        hair=hair,  # type: ignore[arg-type]
        shirt=shirt,  # type: ignore[arg-type]
        long_hair=female,
        face_width=float(rng.uniform(0.25, 0.29) * (0.96 if female else 1.0)),
        face_height=float(rng.uniform(0.33, 0.37)),
        eye_spacing=float(rng.uniform(0.095, 0.115)),
        eye_size=float(rng.uniform(0.04, 0.05)),
        mouth_width=float(rng.uniform(0.075, 0.095)),
        brow_thickness=float(rng.uniform(0.012, 0.02) * (0.8 if female else 1.0)),
        resting_mouth=float(rng.uniform(-1, 1)),
        lip=lip,  # type: ignore[arg-type]
    )


def plan_stimuli(study: StudyParams, params: StimuliParams) -> tuple[list[Stimulus], dict]:
    """Sample every identity and image latent; returns the stimuli and the identities by id."""
    _check_supported(study, params)
    stimuli: list[Stimulus] = []
    identities: dict[str, Identity] = {}
    for ri, race in enumerate(params.races):
        for gi, gender in enumerate(params.genders):
            for k in range(params.identities_per_cell):
                ident_id = f"{race}_{gender}_{k + 1:03d}"
                identities[ident_id] = _identity(race, gender, _rng(params.seed, 1, ri, gi, k))
                for ei, emotion in enumerate(study.emotions):
                    rng = _rng(params.seed, 2, ri, gi, k, ei)
                    intensity = float(rng.uniform(params.intensity_min, params.intensity_max))
                    proto = PROTOTYPES[emotion].as_array()
                    jitter = rng.normal(0.0, JITTER_SD, size=proto.shape)
                    expr = Expression.from_array(intensity * proto + jitter)
                    stimuli.append(
                        Stimulus(f"{ident_id}_{emotion}", ident_id, race, gender, emotion,
                                 intensity, expr)
                    )
    return stimuli, identities


def norms_for(stimuli: list[Stimulus], params: StimuliParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Synthetic human norms (see the module docstring) and the noise-free consensus values."""
    np_ = params.norms
    ident_rng = _rng(params.seed, 3)
    ident_ids = sorted({s.identity for s in stimuli})
    u = {i: ident_rng.normal(0.0, np_.identity_sd, size=2) for i in ident_ids}
    rows, truth = [], []
    for idx, s in enumerate(stimuli):
        rng = _rng(params.seed, 4, idx)
        v_e, a_e = ANCHORS[s.emotion]
        e = rng.normal(0.0, IMAGE_EFFECT_SD, size=2)
        v_true = NEUTRAL[0] + s.intensity * (v_e - NEUTRAL[0]) + u[s.identity][0] + e[0]
        a_true = NEUTRAL[1] + s.intensity * (a_e - NEUTRAL[1]) + u[s.identity][1] + e[1]
        n = int(rng.integers(np_.raters_min, np_.raters_max + 1))
        answers = np.clip(
            np.rint(np.array([v_true, a_true])[:, None] + rng.normal(0, np_.rater_noise_sd, (2, n))),
            1, 9,
        )
        rows.append((s.stimulus_id, float(answers[0].mean()), float(answers[0].std(ddof=1)),
                     float(answers[1].mean()), float(answers[1].std(ddof=1)), n))
        truth.append((float(np.clip(v_true, 1, 9)), float(np.clip(a_true, 1, 9))))
    norms = pl.DataFrame(
        rows,
        schema=["stimulus_id", "valence_mean", "valence_sd", "arousal_mean", "arousal_sd",
                "n_raters"],
        orient="row",
    )
    truth_df = pl.DataFrame(truth, schema=["true_valence", "true_arousal"], orient="row")
    return norms, truth_df


def render_png(identity: Identity, expr: Expression, size: int) -> bytes:
    buf = io.BytesIO()
    # Fixed encoder settings and no metadata: same inputs -> byte-identical files.
    draw_face(identity, expr, size).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def generate_stimulus_set(
    study: StudyParams, params: StimuliParams, out: StimulusSetPaths
) -> dict[str, float]:
    """Write images, manifest.csv, norms.csv and latents.parquet for the embedded set.

    The whole folder is built aside and swapped in at the end, so a failure leaves any earlier set
    untouched. Returns a small summary (counts, seconds, bytes).
    """
    t0 = time.perf_counter()
    stimuli, identities = plan_stimuli(study, params)
    norms, truth = norms_for(stimuli, params)
    manifest_rows, total_bytes = [], 0
    with replace_set(out) as tmp_root:
        tmp = StimulusSetPaths(tmp_root)
        tmp.images.mkdir(parents=True)
        for s in stimuli:
            data = render_png(identities[s.identity], s.expression, params.image_size)
            rel = f"images/{s.stimulus_id}.png"
            (tmp_root / rel).write_bytes(data)
            total_bytes += len(data)
            manifest_rows.append((s.stimulus_id, rel, hashlib.sha256(data).hexdigest(), s.emotion,
                                  s.race, s.gender, s.identity, "synthetic", params.image_size,
                                  params.image_size))
        manifest = pl.DataFrame(
            manifest_rows,
            schema=["stimulus_id", "file", "sha256", "emotion", "race", "gender", "identity",
                    "source", "width", "height"],
            orient="row",
        )
        manifest = validate_manifest(manifest, study, file=out.manifest)
        norms = validate_norms(norms, manifest, file=out.norms)
        latents = pl.concat(
            [
                pl.DataFrame({
                    "stimulus_id": [s.stimulus_id for s in stimuli],
                    "intensity": [s.intensity for s in stimuli],
                }),
                pl.DataFrame(
                    np.stack([s.expression.as_array() for s in stimuli]),
                    schema=[f"au_{n}" for n in Expression.names()],
                    orient="row",
                ),
                truth,
            ],
            how="horizontal",
        )
        write_csv(manifest, tmp.manifest)
        write_csv(norms, tmp.norms)
        write_parquet(latents, tmp.latents)
    return {
        "n_stimuli": float(len(stimuli)),
        "n_identities": float(len(identities)),
        "seconds": time.perf_counter() - t0,
        "image_bytes": float(total_bytes),
    }
