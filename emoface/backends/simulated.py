"""The simulated VLM rater: the embedded default backend and the ground truth of the analyses.

It never looks at pixels: it recognises an image by its content hash and reads the generator's
latents for it (expression action units, intensity, the noise-free human consensus). Every row it
produces is stamped ``simulated``. Numbers computed from it describe this model, not a real VLM.

Generative model (one profile per simulated model; knobs in :class:`SimProfile`):

1. **Emotion.** Evidence per category ``z_e = beta * cos(AU, prototype_e) + n_e`` with fixed
   per-(model, image) noise ``n_e ~ N(0, emotion_noise_sd)``; for faces of ``anger_bias_race``,
   ``z_angry += anger_bias`` (over-attribution of anger, A8). T = 0 answers the argmax; T > 0 samples
   ``softmax(z / T)``.
2. **Perceived valence/arousal.** ``x_p = x* + m`` with ``x*`` the consensus value and fixed noise
   ``m ~ N(0, perception_noise_sd)``.
3. **Label anchoring.** Each label has a language-prior anchor ``x_L`` (:data:`LABEL_PRIOR`). The
   continuous rating is ``mu = a x_L + (1 - a) x_p`` with ``a = anchoring_context`` under
   context-carry and ``a = anchoring_single`` in single-shot (A2). Text-only prompts have no image:
   ``mu = x_L + t`` with ``t`` fixed per (model, label, field), so identical prompts get identical
   answers and label-only arousal is pure language prior (A1). For ``anger_bias_race`` faces valence
   shifts by ``race_valence_shift``.
4. **Digit distribution (dark knowledge, A5).** Over the digits k = 1..9,
   ``l_k = -(k - mu)^2 / (2 w^2) + c [k = round(x_L)]``: the collapse bonus ``c`` pins the argmax to
   the label's anchor digit while the expectation ``sum k p_k`` still follows ``mu`` inside a
   category. 4-bit models use ``c = collapse``; FP16 variants use the weaker bonus
   ``c (1 - fp16_restore)``, restoring part of the spread (A4: 4-bit sharpens the output).
   ``digit_mass`` of the probability sits on digit tokens, split 90/10 between "7" and " 7".
   T = 0 answers the argmax; T > 0 samples ``softmax(l / T)`` (A3).
   ``arm_noise_sd`` (default 0: off) adds to ``mu`` a noise drawn independently for each arm
   of a comparison (prompt mode, quantization, temperature and sampling seed) and image: the
   calibration's nulls use it so that two arms differ by independent noise of equal variance
   (and, across the repeats of one temperature, it is per-repeat retest noise).
   ``sd_link`` (default 0: off) widens the distribution with the humans' disagreement about the
   image: ``w = max(digit_width + sd_link (s_h - 1.2), 0.05)`` with ``s_h`` the image's human SD
   for the field (from the norms; 1.2 = :data:`HUMAN_SD_CENTRE`), a real link between the
   model's digit SD and the human SD beyond what both means imply.
5. **Hidden states (A9).** Layer ``j`` of ``L``: ``h = s_j P z + noise`` with ``z`` the standardised
   (consensus valence, arousal, action units), ``P`` a fixed random projection and signal
   ``s_j = hidden_signal (j + 1) / L`` growing with depth; the last-token pooling adds the label.
6. **Answer text.** Mostly bare ("7", "Angry"), sometimes a sentence or markdown; with probability
   ``odd_answer_rate`` a refusal, a number word or an out-of-range "10" (exercises the parser).

Model ids: ``simulated/<profile>[-fp16][?knob=value&...]``, e.g. ``simulated/gemma3-4b``,
``simulated/gemma3-4b-fp16``, ``simulated/gemma3-4b?anger_bias=0``. The digest hashes the
effective profile and :data:`SIMULATOR_VERSION`, so changed knobs are new work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl

import numpy as np
import polars as pl

from emoface.backends.base import (
    Backend,
    GenerationOptions,
    ModelInfo,
    PermanentBackendError,
    StimulusInput,
    TokenStep,
    TurnResult,
)
from emoface.stimuli.faces import PROTOTYPES, Expression
from emoface.stimuli.generate import ANCHORS, NEUTRAL

SIMULATOR_VERSION = "sim-1"
IMAGE_TOKENS = 256

# The language prior: what each label "means" for valence/arousal to the simulated model.
LABEL_PRIOR: dict[str, tuple[float, float]] = {
    "angry": (2.5, 7.0), "disgusted": (2.6, 5.5), "fearful": (2.7, 7.0),
    "happy": (8.0, 6.0), "sad": (2.3, 3.0), "surprised": (6.0, 8.0),
}


@dataclass(frozen=True)
class SimProfile:
    """Knobs of one simulated model (see the module docstring for what each one drives)."""

    emotion_beta: float = 4.0
    emotion_noise_sd: float = 0.9
    anger_bias: float = 0.0
    anger_bias_race: str = "black"
    perception_noise_sd: float = 0.6
    anchoring_context: float = 0.6
    anchoring_single: float = 0.3
    text_noise_sd: float = 0.3
    race_valence_shift: float = 0.0
    digit_width: float = 0.9
    collapse: float = 1.0
    fp16_restore: float = 0.3
    digit_mass: float = 0.95
    odd_answer_rate: float = 0.01
    hidden_layers: int = 8
    hidden_dim: int = 48
    hidden_signal: float = 1.0
    arm_noise_sd: float = 0.0
    sd_link: float = 0.0


# knobs added after SIMULATOR_VERSION sim-1: left out of the digest at their default, so the
# digests (and the stored answers) of every existing model stay what they were
_NEW_KNOBS = {"arm_noise_sd": 0.0, "sd_link": 0.0}
# the human SD at which ``sd_link`` leaves the digit width as it is (the synthetic norms' rater
# noise SD, emoface.config.NormsParams): a centring constant, it changes no correlation
HUMAN_SD_CENTRE = 1.2


PROFILES: dict[str, SimProfile] = {
    "gemma3-4b": SimProfile(anger_bias=0.8),
    "llama3.2-vision-11b": SimProfile(emotion_beta=3.5, anger_bias=1.0, anchoring_context=0.7,
                                      collapse=1.2, perception_noise_sd=0.7),
    "qwen2-vl-7b": SimProfile(emotion_beta=4.5, anger_bias=0.4, anchoring_context=0.5,
                              collapse=0.8),
    "kimi-vl": SimProfile(emotion_beta=4.2, anger_bias=0.5, anchoring_context=0.45, collapse=0.7),
    "smolvlm2": SimProfile(emotion_beta=3.0, emotion_noise_sd=1.1, anger_bias=0.6,
                           anchoring_context=0.8, collapse=1.4, odd_answer_rate=0.04),
}


@dataclass(frozen=True)
class SimStimulus:
    emotion: str
    race: str
    aus: np.ndarray
    true_valence: float
    true_arousal: float
    human_sd: tuple[float, float] | None = None  # the norms' (valence, arousal) SD, if any


def _h(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def world_from_tables(manifest: pl.DataFrame, latents: pl.DataFrame | None,
                      norms: pl.DataFrame | None) -> dict[str, SimStimulus]:
    """What the simulator 'knows' about each image, keyed by content hash.

    Synthetic sets carry generator latents. For imported sets (no latents) the simulator assumes the
    intended emotion's prototype at intensity 0.7 and the human norms (or the circumplex anchors).
    """
    au_cols = [f"au_{n}" for n in Expression.names()]
    lat = {r["stimulus_id"]: r for r in latents.iter_rows(named=True)} if latents is not None else {}
    nrm = {r["stimulus_id"]: r for r in norms.iter_rows(named=True)} if norms is not None else {}
    world = {}
    for r in manifest.iter_rows(named=True):
        sid, emotion = r["stimulus_id"], r["emotion"]
        if sid in lat:
            lr = lat[sid]
            aus = np.array([lr[c] for c in au_cols])
            tv, ta = lr["true_valence"], lr["true_arousal"]
        else:
            aus = 0.7 * PROTOTYPES[emotion].as_array() if emotion in PROTOTYPES else np.zeros(13)
            v_e, a_e = ANCHORS.get(emotion, NEUTRAL)
            tv = nrm[sid]["valence_mean"] if sid in nrm else NEUTRAL[0] + 0.7 * (v_e - NEUTRAL[0])
            ta = nrm[sid]["arousal_mean"] if sid in nrm else NEUTRAL[1] + 0.7 * (a_e - NEUTRAL[1])
        hsd = ((float(nrm[sid]["valence_sd"]), float(nrm[sid]["arousal_sd"])) if sid in nrm
               else None)
        world[r["sha256"]] = SimStimulus(emotion, r["race"], aus, float(tv), float(ta), hsd)
    return world


def parse_model_name(name: str) -> tuple[str, str, SimProfile]:
    """``gemma3-4b-fp16?anger_bias=0`` -> (profile name, quantization, effective profile)."""
    base, _, query = name.partition("?")
    quant = "q4"
    if base.endswith("-fp16"):
        base, quant = base[: -len("-fp16")], "fp16"
    if base not in PROFILES:
        raise PermanentBackendError(
            f"simulated/{name}: unknown simulated model '{base}' (known: {', '.join(PROFILES)})"
        )
    profile = PROFILES[base]
    overrides = {}
    fields = {f.name: f.type for f in dataclasses.fields(SimProfile)}
    for key, value in parse_qsl(query, strict_parsing=bool(query)):
        if key not in fields:
            raise PermanentBackendError(f"simulated/{name}: unknown knob '{key}'")
        kind = {"int": int, "str": str}.get(str(fields[key]), float)
        overrides[key] = kind(value)
    return base, quant, dataclasses.replace(profile, **overrides)


class SimulatedBackend(Backend):
    """A documented generative model of a VLM rater (see the module docstring)."""

    def __init__(self, name: str, world: dict[str, SimStimulus], *, emotions: Sequence[str],
                 latency_s: float = 0.0, capacity: int | None = None) -> None:
        self.name = name
        self.base, self.quantization, self.profile = parse_model_name(name)
        self.world = world
        self.emotions = tuple(emotions)
        self.latency_s = latency_s
        self.max_concurrency = capacity or 8
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        knobs = {k: v for k, v in dataclasses.asdict(self.profile).items()
                 if not (k in _NEW_KNOBS and v == _NEW_KNOBS[k])}
        profile_json = json.dumps(knobs, sort_keys=True)
        self._digest = hashlib.sha256(
            f"{SIMULATOR_VERSION}|{self.base}|{self.quantization}|{profile_json}".encode()
        ).hexdigest()
        self._proj = np.random.default_rng(_h("proj", self.base)).normal(
            size=(self.profile.hidden_dim, 15)) / np.sqrt(15)
        self._label_proj = np.random.default_rng(_h("label", self.base)).normal(
            size=(self.profile.hidden_dim, len(self.emotions)))

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            model_id=f"simulated/{self.name}", backend="simulated", model=self.name,
            digest=f"sha256:{self._digest}", backend_version=SIMULATOR_VERSION,
            quantization=self.quantization, simulated=True,
            extra={"profile": {k: v for k, v in dataclasses.asdict(self.profile).items()
                               if not (k in _NEW_KNOBS and v == _NEW_KNOBS[k])}},
        )

    # --- the generative model -------------------------------------------------------------
    def _stim(self, stimulus: StimulusInput) -> SimStimulus:
        try:
            return self.world[stimulus.sha256]
        except KeyError:
            raise PermanentBackendError(
                f"simulated: no latents for {stimulus.stimulus_id} ({stimulus.image_path}); the "
                "simulated backend only rates images of a stimulus set it was built from"
            ) from None

    def _fixed_rng(self, *key: object) -> np.random.Generator:
        # Keyed on the base model only: the FP16 and 4-bit variants perceive each image alike, so
        # A4 compares outputs that differ by quantization alone.
        return np.random.default_rng(_h(self.base, *key))

    def emotion_evidence(self, stimulus: StimulusInput) -> np.ndarray:
        s, p = self._stim(stimulus), self.profile
        protos = np.stack([PROTOTYPES[e].as_array() for e in self.emotions])
        norm = np.linalg.norm(s.aus) * np.linalg.norm(protos, axis=1)
        cos = np.where(norm > 0, protos @ s.aus / np.maximum(norm, 1e-12), 0.0)
        z = p.emotion_beta * cos + self._fixed_rng("emo", stimulus.sha256).normal(
            0, p.emotion_noise_sd, len(self.emotions))
        if s.race == p.anger_bias_race and "angry" in self.emotions:
            z[self.emotions.index("angry")] += p.anger_bias
        return z

    def _choose(self, logits: np.ndarray, options: GenerationOptions, *key: object) -> int:
        if options.temperature <= 0:
            return int(np.argmax(logits))
        rng = np.random.default_rng(_h(self.base, self.quantization, options.seed, *key))
        x = logits / options.temperature
        prob = np.exp(x - x.max())
        return int(rng.choice(len(logits), p=prob / prob.sum()))

    def digit_logits(self, stimulus: StimulusInput | None, field: str, label: str,
                     mode: str, arm: tuple = ()) -> np.ndarray:
        """l_k over k = 1..9 for one rating (mode: context_carry | single_shot | text_only;
        ``arm``: the sampling options that, with the mode, key ``arm_noise_sd``)."""
        p = self.profile
        fi = 0 if field == "valence" else 1
        anchor = LABEL_PRIOR.get(label, NEUTRAL)[fi]
        if mode == "text_only" or stimulus is None:
            mu = anchor + self._fixed_rng("text", label, field).normal(0, p.text_noise_sd)
        else:
            s = self._stim(stimulus)
            truth = (s.true_valence, s.true_arousal)[fi]
            perceived = truth + self._fixed_rng("perc", stimulus.sha256, field).normal(
                0, p.perception_noise_sd)
            a = p.anchoring_context if mode == "context_carry" else p.anchoring_single
            mu = a * anchor + (1 - a) * perceived
            if field == "valence" and s.race == p.anger_bias_race:
                mu += p.race_valence_shift
            if p.arm_noise_sd > 0:
                mu += np.random.default_rng(_h(self.base, self.quantization, mode, *arm, "arm",
                                               stimulus.sha256, field)).normal(
                    0, p.arm_noise_sd)
        c, w = p.collapse, p.digit_width
        if p.sd_link and stimulus is not None and mode != "text_only":
            hsd = self._stim(stimulus).human_sd
            if hsd is None:
                raise PermanentBackendError(
                    f"simulated/{self.name}: sd_link needs the human SDs of "
                    f"{stimulus.stimulus_id} (a stimulus set with norms)")
            w = max(w + p.sd_link * (hsd[fi] - HUMAN_SD_CENTRE), 0.05)
        if self.quantization == "fp16":
            c = c * (1 - p.fp16_restore)
        k = np.arange(1, 10)
        return -((k - mu) ** 2) / (2 * w**2) + c * (k == int(np.clip(round(anchor), 1, 9)))

    # --- text and token steps -------------------------------------------------------------
    def _odd(self, *key: object) -> bool:
        return self._fixed_rng("odd", *key).random() < self.profile.odd_answer_rate

    def _rating_turn(self, stimulus, field, label, mode, options, key) -> TurnResult:
        logits = self.digit_logits(stimulus, field, label, mode,
                                   (options.temperature, options.seed))
        choice = self._choose(logits, options, field, *key) + 1
        logp = logits - np.logaddexp.reduce(logits)
        digit_lp = np.log(self.profile.digit_mass) + logp
        top = []
        for d in range(9):
            top.append((d + 1, str(d + 1), float(digit_lp[d] + np.log(0.9))))
            top.append((d + 11, f" {d + 1}", float(digit_lp[d] + np.log(0.1))))
        rest = np.log(1 - self.profile.digit_mass)
        top += [(30, "I", rest + np.log(0.5)), (31, "The", rest + np.log(0.3)),
                (32, "10", rest + np.log(0.2))]
        top.sort(key=lambda t: -t[2])
        top = top[: options.top_logprobs]
        digit_step = TokenStep(str(choice), float(digit_lp[choice - 1]), tuple(top),
                               tuple(float(x) for x in digit_lp))
        style = self._fixed_rng("style", field, *key).random()
        if self._odd(field, *key):
            kind = self._fixed_rng("oddkind", field, *key).integers(3)
            text = ("I can't determine that from an image.", ["one", "two", "three", "four",
                    "five", "six", "seven", "eight", "nine"][choice - 1], "10")[kind]
            steps: tuple[TokenStep, ...] = (TokenStep(text, -0.1),)
        elif style < 0.85:
            text, steps = str(choice), (digit_step,)
        elif style < 0.95:
            text = f"I would rate the {field} as {choice}."
            steps = (TokenStep("I", -0.05), TokenStep(" would", -0.01), digit_step,
                     TokenStep(".", -0.01))
        else:
            text, steps = f"{choice}/9", (digit_step, TokenStep("/", -0.2), TokenStep("9", -0.01))
        return TurnResult(text=text, steps=steps, completion_tokens=len(steps))

    def _emotion_turn(self, stimulus, options, key) -> tuple[TurnResult, str]:
        z = self.emotion_evidence(stimulus)
        label = self.emotions[self._choose(z, options, "emotion", *key)]
        logp = z - np.logaddexp.reduce(z)
        top = tuple(sorted(((100 + i, e, float(logp[i])) for i, e in enumerate(self.emotions)),
                           key=lambda t: -t[2]))[: options.top_logprobs]
        style = self._fixed_rng("style", "emotion", *key).random()
        if self._odd("emotion", *key):
            text = "I can't determine emotions from images."
        elif style < 0.85:
            text = label.capitalize()
        elif style < 0.95:
            text = f"The facial expression is {label}."
        else:
            text = f"**{label.capitalize()}**"
        step = TokenStep(label, float(logp[self.emotions.index(label)]), top)
        return TurnResult(text=text, steps=(step,), completion_tokens=1), label

    def _json_turn(self, stimulus, options, key) -> TurnResult:
        z = self.emotion_evidence(stimulus)
        label = self.emotions[self._choose(z, options, "emotion", *key)]
        vals = {}
        for field in ("valence", "arousal"):
            lg = self.digit_logits(stimulus, field, label, "single_shot",
                                   (options.temperature, options.seed))
            vals[field] = self._choose(lg, options, field, *key) + 1
        text = json.dumps({"emotion": label, "valence": vals["valence"], "arousal": vals["arousal"]})
        if self._odd("json", *key):
            text = f"Here is my answer: {text}"
        return TurnResult(text=text, completion_tokens=12)

    def converse(self, stimulus, turns, options, *, json_schema=None) -> list[TurnResult]:
        key = (stimulus.sha256 if stimulus else "text",)
        label: str | None = None
        results: list[TurnResult] = []
        context = 0
        for turn in turns:
            t0 = time.perf_counter()
            self._wait()
            if turn.field == "emotion":
                res, label = self._emotion_turn(stimulus, options, key)
            elif turn.field == "json":
                res = self._json_turn(stimulus, options, key)
            else:
                lab = turn.label or label
                if lab is None:  # a rating turn with no label before it: use the model's own
                    lab = self.emotions[int(np.argmax(self.emotion_evidence(stimulus)))]
                mode = "text_only" if stimulus is None else (
                    "context_carry" if label is not None else "single_shot")
                res = self._rating_turn(stimulus, turn.field, lab, mode, options,
                                        key + ((lab,) if stimulus is None else ()))
            prompt = context + len(turn.text.split()) + (IMAGE_TOKENS if turn.with_image else 0)
            results.append(dataclasses.replace(
                res, latency_s=time.perf_counter() - t0, prompt_tokens=prompt, cached_tokens=context))
            context = prompt + res.completion_tokens
        return results

    def _wait(self) -> None:
        """Stand-in server: hold one of ``capacity`` slots for ``latency_s`` per call."""
        if self.latency_s <= 0:
            return
        if self._slots is None:
            time.sleep(self.latency_s)
            return
        with self._slots:
            time.sleep(self.latency_s)

    def hidden_states(self, stimulus: StimulusInput, prompt: str) -> dict[str, np.ndarray]:
        s, p = self._stim(stimulus), self.profile
        z = np.concatenate([[(s.true_valence - 4.4) / 1.4, (s.true_arousal - 5.0) / 1.1],
                            (s.aus - 0.2) / 0.3])
        label = int(np.argmax(self.emotion_evidence(stimulus)))
        onehot = np.eye(len(self.emotions))[label]
        pools, lasts = [], []
        for j in range(p.hidden_layers):
            sig = p.hidden_signal * (j + 1) / p.hidden_layers
            noise = self._fixed_rng("hidden", stimulus.sha256, j).normal(size=(2, p.hidden_dim))
            pools.append(sig * self._proj @ z + noise[0])
            lasts.append(0.5 * sig * self._proj @ z + sig * self._label_proj @ onehot + noise[1])
        return {"image_pool": np.stack(pools).astype(np.float32),
                "last_token": np.stack(lasts).astype(np.float32)}


def build(model: str, inference, *, emotions, stimulus_set=None) -> SimulatedBackend:
    """Registry hook: the simulated rater over ``stimulus_set`` (it needs the set's latents)."""
    if stimulus_set is None:
        raise PermanentBackendError("simulated backend needs the stimulus set it rates")
    latents = (pl.read_parquet(stimulus_set.paths.latents)
               if stimulus_set.paths.latents.exists() else None)
    world = world_from_tables(stimulus_set.manifest, latents, stimulus_set.norms)
    sim = inference.simulated
    return SimulatedBackend(model, world, emotions=emotions, latency_s=sim.latency_s,
                            capacity=sim.capacity)
