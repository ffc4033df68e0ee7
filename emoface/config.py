"""Typed, frozen parameters loaded once from params.yaml.

The entry points (CLI, flows) call :func:`load_params` and pass the resulting objects down;
library code receives these objects and never opens params.yaml itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from emoface.backends import model_id_pattern
from emoface.emotions import DEFAULT_EMOTIONS, DEFAULT_GENDERS, DEFAULT_RACES
from emoface.errors import ConfigError
from emoface.paths import SET_NAME_PATTERN

Name = Annotated[str, Field(pattern=SET_NAME_PATTERN)]


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
    # importers: larger images are refused before decoding (no decompression bombs); PIL's own
    # hard limit is 2 x 89.5 MP
    max_image_pixels: int = Field(40_000_000, ge=16 * 16, le=178_000_000)

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


class OpenAIParams(_Frozen):
    """An OpenAI-compatible server (vLLM, SGLang, llama.cpp's llama-server, LM Studio).
    ``base_url: null`` means OPENAI_BASE_URL, else http://127.0.0.1:8000/v1. The API key is read
    only from OPENAI_API_KEY (never from here)."""

    base_url: str | None = Field(None, pattern=r"^https?://.+")
    concurrency: int = Field(8, ge=1, le=256)
    timeout_s: float = Field(300.0, gt=0)
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)


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
    openai: OpenAIParams = OpenAIParams()


ModelId = Annotated[str, Field(pattern=model_id_pattern())]  # each backend declares its own
Temperature = Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)]


def _no_duplicates(values: tuple, what: str) -> tuple:
    seen: set = set()
    dupes = [v for v in values if v in seen or seen.add(v)]
    if dupes:
        raise ValueError(f"{what} {dupes[0]!r} is listed twice; list each once")
    return values


class ModelsParams(_Frozen):
    """The study's models (every ablation's default) as backend/model ids."""

    study: tuple[ModelId, ...] = Field(("simulated/gemma3-4b", "simulated/llama3.2-vision-11b"),
                                       min_length=1)
    # real FER classifiers, compared with the VLMs in the baseline tables and in A7
    fer: tuple[Annotated[str, Field(pattern=r"^fer/.+")], ...] = ("fer/mini-xception",)

    @field_validator("study", "fer")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:
        return _no_duplicates(v, "model")


def self_quantized_id(fp16: str, bits: int, group_size: int) -> str:
    """Model id of the self-quantized copy of an ``mlx/`` FP16 model."""
    return f"{fp16}@q{bits}-g{group_size}"


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


class AnalysisParams(_Frozen):
    alpha: float = Field(0.05, gt=0, lt=1)
    bootstrap: int = Field(2000, ge=100)
    permutations: int = Field(1000, ge=99)
    seed: int = 7
    digit_mass_threshold: float = Field(0.5, ge=0, le=1)
    # bootstrap resamples of the secondary per-model tables (A6's extra models, A7)
    secondary_bootstrap: int = Field(500, ge=100)
    # A5: below this mean digit entropy (nats) the distribution is treated as a point mass
    entropy_floor: float = Field(0.05, ge=0)


class ExecutionParams(_Frozen):
    """Where inference batches run. ``dask: null`` = threads in the flow process (the default);
    ``dask: tcp://HOST:8786`` = Ollama and MLX batches on that Dask cluster. Neither changes a
    result, so DVC does not list this section."""

    dask: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://.+")
    worker_timeout_s: float = Field(60.0, gt=0)  # a cluster with no (suitable) worker fails then


class Params(_Frozen):
    """Everything in params.yaml, one section per stage."""

    study: StudyParams = StudyParams()
    stimuli: StimuliParams = StimuliParams()
    real_faces: RealFacesParams = RealFacesParams()
    inference: InferenceParams = InferenceParams()
    models: ModelsParams = ModelsParams()
    # one section per ablation with parameters; the model is built from the ablation registry
    # (emoface.ablations.params_model), whose modules hold each section's model
    ablations: Any = Field(default_factory=lambda: _ablations_model()())
    analysis: AnalysisParams = AnalysisParams()
    execution: ExecutionParams = ExecutionParams()

    @model_validator(mode="after")
    def _distinct_sets(self) -> Params:
        if self.real_faces.name == self.stimuli.set_name:
            raise ValueError(f"real_faces.name {self.real_faces.name!r} is also stimuli.set_name; "
                             "building the real-face set would replace the embedded one")
        return self

    @field_validator("ablations")
    @classmethod
    def _ablations(cls, value: Any) -> Any:
        model = _ablations_model()
        return value if isinstance(value, model) else model.model_validate(value)


def _ablations_model() -> type[BaseModel]:
    from emoface.ablations import params_model  # the registry imports this module

    return params_model()


def __getattr__(name: str) -> Any:  # PEP 562: AblationsParams comes from the ablation registry
    if name == "AblationsParams":
        return _ablations_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _format_validation_error(path: Path, err: ValidationError, prefix: str = "") -> str:
    """One line per invalid key, each naming the file and the key (one line when one error)."""
    lines = []
    for e in err.errors():
        key = ".".join([prefix, *(str(p) for p in e["loc"])] if prefix else
                       [str(p) for p in e["loc"]]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: {key}: unknown key")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {key}: {msg} (got {e.get('input')!r})")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):  # noqa: D102 - PyYAML hook
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(f"key {key!r} appears twice in one section (lines "
                                  f"{seen[key] + 1} and {key_node.start_mark.line + 1}); "
                                  "keep one")
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_params(data: object, *, source: str | Path = "params") -> Params:
    """Validate an already-parsed mapping into :class:`Params` (raises ConfigError)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: top level must be a mapping of sections")
    # YAML lists arrive as lists; strict mode wants tuples for the frozen models.
    data = dict(_lists_to_tuples(data))
    if "ablations" in data:  # validated first so its errors name their keys (ablations.A3...)
        try:
            data["ablations"] = _ablations_model().model_validate(data["ablations"] or {})
        except ValidationError as err:
            raise ConfigError(_format_validation_error(Path(source), err, "ablations")) from None
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(Path(source), err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Unknown keys and wrong types raise ConfigError naming the key."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: parameters file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a parameters file") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte {err.object[err.start]:#04x}"
                          "); save the file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    return parse_params(data, source=path)


def _lists_to_tuples(obj: object) -> object:
    if isinstance(obj, dict):
        return {k: _lists_to_tuples(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return tuple(_lists_to_tuples(v) for v in obj)
    return obj
