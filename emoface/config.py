"""Typed, frozen parameters loaded once from params.yaml.

The entry points (CLI, flows) call :func:`load_params` and pass the resulting objects down;
library code receives these objects and never opens params.yaml itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emoface.emotions import DEFAULT_EMOTIONS, DEFAULT_GENDERS, DEFAULT_RACES
from emoface.errors import ConfigError

Name = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class StudyParams(_Frozen):
    """What every stage shares: the emotion categories of the study."""

    emotions: tuple[Name, ...] = DEFAULT_EMOTIONS

    @model_validator(mode="after")
    def _unique(self) -> StudyParams:
        if len(set(self.emotions)) != len(self.emotions) or len(self.emotions) < 2:
            raise ValueError("emotions must be at least two distinct names")
        return self


class NormsParams(_Frozen):
    """The synthetic human-norm model (see emoface.stimuli.norms for the equations)."""

    raters_min: int = Field(20, ge=2)
    raters_max: int = Field(40, ge=2)
    rater_noise_sd: float = Field(1.2, gt=0)
    identity_sd: float = Field(0.3, ge=0)

    @model_validator(mode="after")
    def _range(self) -> NormsParams:
        if self.raters_max < self.raters_min:
            raise ValueError("raters_max must be >= raters_min")
        return self


class StimuliParams(_Frozen):
    """The embedded, deterministically generated stimulus set."""

    set_name: Name = "embedded"
    seed: int = 20261130
    races: tuple[Name, ...] = DEFAULT_RACES
    genders: tuple[Name, ...] = DEFAULT_GENDERS
    identities_per_cell: int = Field(60, ge=1)
    image_size: int = Field(128, ge=48, le=1024)
    intensity_min: float = Field(0.35, gt=0, le=1)
    intensity_max: float = Field(1.0, gt=0, le=1)
    norms: NormsParams = NormsParams()

    @model_validator(mode="after")
    def _range(self) -> StimuliParams:
        if self.intensity_max < self.intensity_min:
            raise ValueError("intensity_max must be >= intensity_min")
        return self


class OllamaParams(_Frozen):
    """The Ollama server. ``host: null`` means OLLAMA_HOST, else http://127.0.0.1:11434."""

    host: str | None = None
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)


class SimulatedParams(_Frozen):
    """The simulated backend; latency/capacity make it a stand-in server for benchmarks."""

    latency_s: float = Field(0.0, ge=0)
    capacity: int | None = Field(None, ge=1)


class MlxParams(_Frozen):
    top_k: int = Field(50, ge=1, le=1000)
    # first-turn KV states kept for conversations that share the image and first question
    # (0 = every conversation prefills its own first turn)
    share_first_turn: int = Field(4, ge=0)


class InferenceParams(_Frozen):
    """Generation options (sent explicitly on every request) and batching."""

    seed: int = 1234
    max_tokens: int = Field(64, ge=1)
    num_ctx: int = Field(4096, ge=512)
    top_logprobs: int = Field(20, ge=0, le=20)
    batch_size: int = Field(60, ge=1)
    ollama: OllamaParams = OllamaParams()
    simulated: SimulatedParams = SimulatedParams()
    mlx: MlxParams = MlxParams()


ModelId = Annotated[str, Field(pattern=r"^(simulated|ollama|mlx|fer)/.+")]


class ModelsParams(_Frozen):
    """The study's models (every ablation's default) as backend/model ids."""

    study: tuple[ModelId, ...] = ("simulated/gemma3-4b", "simulated/llama3.2-vision-11b")
    # real FER classifiers, compared with the VLMs in the baseline tables and in A7
    fer: tuple[Annotated[str, Field(pattern=r"^fer/.+")], ...] = ("fer/mini-xception",)


class A1Params(_Frozen):
    label_source: Literal["baseline", "intended"] = "baseline"


class A3Params(_Frozen):
    temperatures: tuple[float, ...] = (0.0, 0.3, 0.7, 1.0)
    repeats: int = Field(3, ge=1)


class SelfQuantizedParams(_Frozen):
    """A4's second arm: the FP16 weights quantized by the project (mlx-vlm's conversion)."""

    bits: int = Field(4, ge=2, le=8)
    group_size: Literal[32, 64, 128] = 64


def self_quantized_id(fp16: str, bits: int, group_size: int) -> str:
    """Model id of the self-quantized copy of an ``mlx/`` FP16 model."""
    return f"{fp16}@q{bits}-g{group_size}"


class A4Params(_Frozen):
    fp16: ModelId = "simulated/gemma3-4b-fp16"
    q4: ModelId = "simulated/gemma3-4b"   # the 4-bit QAT release (differs in training too)
    # FP16 vs the same weights quantized here (quantization alone); needs fp16 = mlx/<directory>
    self_quantized: SelfQuantizedParams | None = SelfQuantizedParams()

    def arms(self) -> dict[str, tuple[str, str]]:
        """Contrast name -> (quantized model id, FP16 model id): ``qat`` always, ``self`` when the
        FP16 model is an mlx directory the project can quantize."""
        arms = {"qat": (self.q4, self.fp16)}
        sq = self.self_quantized
        if sq is not None and self.fp16.startswith("mlx/"):
            arms["self"] = (self_quantized_id(self.fp16, sq.bits, sq.group_size), self.fp16)
        return arms


class A6Params(_Frozen):
    models: tuple[ModelId, ...] = ("simulated/qwen2-vl-7b", "simulated/kimi-vl",
                                   "simulated/smolvlm2")


class RealFacesParams(_Frozen):
    """The real-face set of A7 (data/stimuli/<name>/). ``source: demo`` renders a synthetic
    FER-2013-format CSV first so everything runs offline; ``source: file`` imports ``path``."""

    name: Name = "fer2013_demo"
    format: Literal["fer2013", "affectnet"] = "fer2013"
    source: Literal["demo", "file"] = "demo"
    path: str = "data/raw/fer2013.csv"
    annotations: str | None = None
    usage: str | None = None  # FER-2013 only: keep rows of one Usage (e.g. PublicTest)
    per_emotion: int = Field(40, ge=1)
    seed: int = 3


class A9Params(_Frozen):
    model: ModelId = "simulated/gemma3-4b"


class AblationsParams(_Frozen):
    A1: A1Params = A1Params()
    A3: A3Params = A3Params()
    A4: A4Params = A4Params()
    A6: A6Params = A6Params()
    A9: A9Params = A9Params()


class AnalysisParams(_Frozen):
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap: int = Field(2000, ge=100)
    permutations: int = Field(1000, ge=99)
    seed: int = 7
    digit_mass_threshold: float = Field(0.5, ge=0, le=1)


class Params(_Frozen):
    """Everything in params.yaml, one section per stage."""

    study: StudyParams = StudyParams()
    stimuli: StimuliParams = StimuliParams()
    real_faces: RealFacesParams = RealFacesParams()
    inference: InferenceParams = InferenceParams()
    models: ModelsParams = ModelsParams()
    ablations: AblationsParams = AblationsParams()
    analysis: AnalysisParams = AnalysisParams()


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid parameters"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key")
        else:
            lines.append(f"  {key}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def parse_params(data: object, *, source: str | Path = "params") -> Params:
    """Validate an already-parsed mapping into :class:`Params` (raises ConfigError)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    # YAML lists arrive as lists; strict mode wants tuples for the frozen models.
    try:
        return Params.model_validate(_lists_to_tuples(data))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(Path(source), err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Unknown keys and wrong types raise ConfigError naming the key."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_params(data, source=path)


def _lists_to_tuples(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _lists_to_tuples(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return tuple(_lists_to_tuples(v) for v in obj)
    return obj
