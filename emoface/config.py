"""Typed, frozen parameters loaded once from params.yaml.

The entry points (CLI, flows) call :func:`load_params` and pass the resulting objects down;
library code receives these objects and never opens params.yaml itself.
"""

from __future__ import annotations

import ipaddress
import re
import types
import typing
import urllib.parse
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from emoface.emotions import DEFAULT_EMOTIONS, DEFAULT_GENDERS, DEFAULT_RACES
from emoface.errors import ConfigError
from emoface.paths import SET_NAME_MAX, SET_NAME_PATTERN

Name = Annotated[str, Field(pattern=SET_NAME_PATTERN, max_length=SET_NAME_MAX)]

# Every number has a range, checked when params.yaml is loaded (docs/params.md lists them; a test
# keeps that table and these models equal and refuses a number without both bounds).
#: seeds: what every seeded library (numpy, Ollama's int32 option) takes
Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]
#: a duration: finite, and short enough that a sleep or deadline never overflows a timestamp
Seconds = Annotated[float, Field(gt=0, le=3600, allow_inf_nan=False)]
#: resamples of a bootstrap or permutation null: enough for a CI, few enough to finish
Resamples = Annotated[int, Field(ge=100, le=100_000)]
#: bytes a params file may hold, and YAML nodes it may expand to (aliases counted each time they
#: are used): params.yaml is about 5 kB and 150 nodes, so both caps leave ample room and refuse
#: an alias bomb in milliseconds
MAX_PARAMS_BYTES = 1 << 20
MAX_YAML_NODES = 100_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class StudyParams(_Frozen):
    """What every stage shares: the emotion categories of the study."""

    emotions: tuple[Name, ...] = Field(DEFAULT_EMOTIONS, max_length=32)

    @model_validator(mode="after")
    def _unique(self) -> StudyParams:
        if len(set(self.emotions)) != len(self.emotions) or len(self.emotions) < 2:
            raise ValueError("emotions must be at least two distinct names")
        return self


class NormsParams(_Frozen):
    """The synthetic human-norm model (see emoface.stimuli.norms for the equations)."""

    raters_min: int = Field(20, ge=2, le=10_000)
    raters_max: int = Field(40, ge=2, le=10_000)
    rater_noise_sd: float = Field(1.2, gt=0, le=10, allow_inf_nan=False)
    identity_sd: float = Field(0.3, ge=0, le=10, allow_inf_nan=False)

    @model_validator(mode="after")
    def _range(self) -> NormsParams:
        if self.raters_max < self.raters_min:
            raise ValueError("raters_max must be >= raters_min")
        return self


class StimuliParams(_Frozen):
    """The embedded, deterministically generated stimulus set."""

    set_name: Name = "embedded"
    seed: Seed = 20261130
    races: tuple[Name, ...] = Field(DEFAULT_RACES, min_length=1, max_length=16)
    genders: tuple[Name, ...] = Field(DEFAULT_GENDERS, min_length=1, max_length=16)
    identities_per_cell: int = Field(60, ge=1, le=1000)
    image_size: int = Field(128, ge=48, le=1024)
    intensity_min: float = Field(0.35, gt=0, le=1, allow_inf_nan=False)
    intensity_max: float = Field(1.0, gt=0, le=1, allow_inf_nan=False)
    norms: NormsParams = NormsParams()
    # importers: larger images are refused before decoding (no decompression bombs); PIL's own
    # hard limit is 2 x 89.5 MP
    max_image_pixels: int = Field(40_000_000, ge=16 * 16, le=178_000_000)

    @model_validator(mode="after")
    def _range(self) -> StimuliParams:
        if self.intensity_max < self.intensity_min:
            raise ValueError("intensity_max must be >= intensity_min")
        return self


_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_-]{1,63})*\.?$")
_URL_PATH = re.compile(r"^[A-Za-z0-9._~/-]*$")
OLLAMA_DEFAULT_PORT = 11434


def normalize_host(value: str) -> str:
    """An Ollama server address as ``scheme://host:port[/path]``.

    ``host[:port]`` without a scheme (how ``OLLAMA_HOST`` is often set) is read as ``http://``
    and, without a port, port 11434 (as the Ollama client reads it); ``http(s)://host`` without a
    port gets 80/443. A host name, an IPv4 address or a bracketed IPv6 address; anything else
    (another scheme, an empty host, a port outside 1-65535, spaces, a query) raises ValueError.
    """
    text = value.strip()
    if not text:
        raise ValueError("empty: give host:port (e.g. localhost:11434) or null for $OLLAMA_HOST")
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"scheme {scheme!r} is not http or https; give e.g. "
                             "http://localhost:11434")
    else:
        scheme, rest = "http", text
    if any(c.isspace() or not c.isprintable() for c in rest) or "\\" in rest:
        raise ValueError("holds a space, backslash or control character")
    split = urllib.parse.urlsplit(f"{scheme}://{rest}")
    if split.query or split.fragment or "@" in split.netloc:
        raise ValueError("holds a query, fragment or user name; give scheme://host:port")
    try:
        port = split.port
    except ValueError:
        raise ValueError("the port is not a number from 1 to 65535") from None
    host = split.hostname or ""
    if ":" in host:
        try:
            host = f"[{ipaddress.IPv6Address(host).compressed}]"
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise ValueError(f"no valid host name in {text!r}; give e.g. localhost:11434")
    if port == 0:
        raise ValueError("the port is not a number from 1 to 65535")
    if port is None:
        port = OLLAMA_DEFAULT_PORT if not sep else 443 if scheme == "https" else 80
    path = split.path.strip("/")
    if not _URL_PATH.fullmatch(path):
        raise ValueError(f"the path {split.path!r} holds characters a URL path cannot")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


class OllamaParams(_Frozen):
    """The Ollama server. ``host: null`` means OLLAMA_HOST, else http://127.0.0.1:11434."""

    host: Annotated[str, AfterValidator(lambda v: normalize_host(v))] | None = None
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: Seconds = 300.0
    retries: int = Field(4, ge=0, le=20)
    # the first retry waits about backoff_s, later ones up to 30 x backoff_s
    backoff_s: float = Field(1.0, ge=0, le=60, allow_inf_nan=False)


class SimulatedParams(_Frozen):
    """The simulated backend; latency/capacity make it a stand-in server for benchmarks."""

    latency_s: float = Field(0.0, ge=0, le=60, allow_inf_nan=False)
    capacity: int | None = Field(None, ge=1, le=1024)


class MlxParams(_Frozen):
    top_k: int = Field(50, ge=1, le=1000)
    # first-turn KV states kept for conversations that share the image and first question
    # (0 = every conversation prefills its own first turn)
    share_first_turn: int = Field(4, ge=0, le=64)


class OpenAIParams(_Frozen):
    """An OpenAI-compatible server (vLLM, SGLang, llama.cpp's llama-server, LM Studio).
    ``base_url: null`` means OPENAI_BASE_URL, else http://127.0.0.1:8000/v1. The API key is read
    only from OPENAI_API_KEY (never from here)."""

    base_url: str | None = Field(None, pattern=r"^https?://\S+$", max_length=2048)
    concurrency: int = Field(8, ge=1, le=256)
    timeout_s: Seconds = 300.0
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0, le=60, allow_inf_nan=False)


class InferenceParams(_Frozen):
    """Generation options (sent explicitly on every request) and batching."""

    seed: Seed = 1234
    max_tokens: int = Field(64, ge=1, le=4096)
    num_ctx: int = Field(4096, ge=512, le=131_072)
    top_logprobs: int = Field(20, ge=0, le=20)
    batch_size: int = Field(60, ge=1, le=10_000)
    ollama: OllamaParams = OllamaParams()
    simulated: SimulatedParams = SimulatedParams()
    mlx: MlxParams = MlxParams()
    openai: OpenAIParams = OpenAIParams()


MODEL_ID_MAX = 256


def check_model_id(model_id: str) -> str:
    """A model id exactly as a run takes it: ``backend/model`` with a known backend (the list is
    the backend registry's, :func:`emoface.backends.split_model_id`), at most 256 characters."""
    from emoface.backends import split_model_id  # the backends import this module

    if len(model_id) > MODEL_ID_MAX:
        raise ValueError(f"model id of {len(model_id)} characters: at most {MODEL_ID_MAX}")
    try:
        split_model_id(model_id)
    except ConfigError as err:
        raise ValueError(str(err)) from None
    return model_id


# the run's own parse of the id (ModelRef.parse: each backend declares its id pattern in the
# registry, emoface.backends.model_id_pattern() is the union), with a message that lists them
ModelId = Annotated[str, AfterValidator(check_model_id)]
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
                                       min_length=1, max_length=32)
    # real FER classifiers, compared with the VLMs in the baseline tables and in A7
    fer: tuple[Annotated[ModelId, Field(pattern=r"^fer/.+")], ...] = Field(
        ("fer/mini-xception",), max_length=8)

    @field_validator("study", "fer")
    @classmethod
    def _unique(cls, v: tuple) -> tuple:
        return _no_duplicates(v, "model")


def parse_model_ids(text: str, *, flag: str = "--models") -> list[str]:
    """Comma-separated model ids from the command line, each checked as params.yaml's are
    (:func:`check_model_id`); an empty id (``,``, a trailing comma) or a repeated one is refused."""
    ids = [m.strip() for m in text.split(",")]
    if not text.strip() or any(not m for m in ids):
        raise ConfigError(f"{flag} {text!r}: an empty model id (a stray comma?); give backend/model "
                          "ids separated by commas, e.g. ollama/gemma3:4b,ollama/llava:7b")
    try:
        for m in ids:
            check_model_id(m)
        _no_duplicates(tuple(ids), "model")
    except ValueError as err:
        raise ConfigError(f"{flag}: {err}") from None
    return ids


def self_quantized_id(fp16: str, bits: int, group_size: int) -> str:
    """Model id of the self-quantized copy of an ``mlx/`` FP16 model."""
    return f"{fp16}@q{bits}-g{group_size}"


class RealFacesParams(_Frozen):
    """The real-face set of A7 (data/stimuli/<name>/). ``source: demo`` renders a synthetic
    FER-2013-format CSV first so everything runs offline; ``source: file`` imports ``path``."""

    name: Name = "fer2013_demo"
    format: Literal["fer2013", "affectnet"] = "fer2013"
    source: Literal["demo", "file"] = "demo"
    path: str = Field("data/raw/fer2013.csv", min_length=1, max_length=4096)
    annotations: str | None = Field(None, min_length=1, max_length=4096)
    # FER-2013 only: keep rows of one Usage (e.g. PublicTest)
    usage: str | None = Field(None, min_length=1, max_length=64)
    per_emotion: int = Field(40, ge=1, le=100_000)
    seed: Seed = 3


class AnalysisParams(_Frozen):
    alpha: float = Field(0.05, gt=0, lt=1, allow_inf_nan=False)
    bootstrap: Resamples = 2000
    permutations: int = Field(1000, ge=99, le=100_000)
    seed: Seed = 7
    digit_mass_threshold: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    # bootstrap resamples of the secondary per-model tables (A6's extra models, A7)
    secondary_bootstrap: Resamples = 500
    # A5: below this mean digit entropy (nats) the distribution is treated as a point mass;
    # ln 9 = 2.197 is the entropy of nine equal digits
    entropy_floor: float = Field(0.05, ge=0, le=2.2, allow_inf_nan=False)


class ExecutionParams(_Frozen):
    """Where inference batches run. ``dask: null`` = threads in the flow process (the default);
    ``dask: tcp://HOST:8786`` = Ollama and MLX batches on that Dask cluster. Neither changes a
    result, so DVC does not list this section."""

    dask: str | None = Field(None, pattern=r"^(tcp|tls|inproc|ucx)://[^\s]+$", max_length=1024)
    worker_timeout_s: Seconds = 60.0  # a cluster with no (suitable) worker fails then


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


def _bounds(metadata: list) -> tuple[str, str]:
    """Interval ends ("[0", "60]") from pydantic/annotated-types constraints ("" when none)."""
    lo = hi = ""
    for m in metadata:
        for attr, text in (("ge", "[{}"), ("gt", "({}")):
            if getattr(m, attr, None) is not None:
                lo = text.format(getattr(m, attr))
        for attr, text in (("le", "{}]"), ("lt", "{})")):
            if getattr(m, attr, None) is not None:
                hi = text.format(getattr(m, attr))
    return lo, hi


def _numbers(model: type[BaseModel], prefix: str) -> list[tuple[str, str, str, str, object]]:
    rows = []
    for name, f in model.model_fields.items():
        key, ann, default = f"{prefix}{name}", f.annotation, f.default
        if ann is Any and name == "ablations":
            rows += _numbers(_ablations_model(), f"{key}.")
            continue
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
            ann = args[0]  # X | None
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += _numbers(ann, f"{key}.")
            continue
        metadata = list(f.metadata)
        if typing.get_origin(ann) is tuple:  # tuple[Annotated[float, Field(...)], ...]
            inner = typing.get_args(ann)[0]
            key, ann = f"{key}[]", typing.get_args(inner)[0] if typing.get_args(inner) else inner
            metadata = [m for x in typing.get_args(inner)[1:]
                        for m in (getattr(x, "metadata", None) or [x])]
        if ann in (int, float):
            lo, hi = _bounds(metadata)
            rows.append((key, ann.__name__, lo, hi, default))
    return rows


def param_ranges() -> list[tuple[str, str, str, str, object]]:
    """Every number in params.yaml: (key, int|float, lower end, upper end, default), the ends in
    interval notation ("[0", "60]"; "" = unbounded, which a test refuses)."""
    return _numbers(Params, "")


def ranges_table() -> str:
    """The markdown table of :func:`param_ranges` that docs/params.md holds."""
    lines = ["| key | type | range | default |", "|---|---|---|---|"]
    for key, kind, lo, hi, default in param_ranges():
        shown = ("`null`" if default is None else f"`{list(default)}`"
                 if isinstance(default, tuple) else f"`{default}`")
        lines.append(f"| `{key}` | {kind} | {lo or '(-inf'}, {hi or 'inf)'} | {shown} |")
    return "\n".join(lines) + "\n"


_RANGE_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                 "finite_number", "too_long", "too_short", "string_too_long"}


def _format_validation_error(path: Path, err: ValidationError, prefix: str = "") -> str:
    """One line per invalid key, each naming the file and the key (one line when one error)."""
    lines = []
    errors = err.errors()
    locs = [tuple(e["loc"]) for e in errors]
    for e in errors:
        loc = tuple(e["loc"])
        if e["type"] == "too_short" and any(x[:len(loc)] == loc and x != loc for x in locs):
            continue  # a list emptied by its items' own errors: those name the key already
        key = ".".join([prefix, *(str(p) for p in e["loc"])] if prefix else
                       [str(p) for p in e["loc"]]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"{path}: {key}: unknown key")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            got = repr(e.get("input"))
            got = got if len(got) <= 80 else f"{got[:60]}... ({len(got)} characters)"
            hint = " (ranges: docs/params.md)" if e["type"] in _RANGE_ERRORS else ""
            lines.append(f"{path}: {key}: {msg} (got {got}){hint}")
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


def _read_params_bytes(path: Path) -> bytes:
    """The file's bytes: a regular file of at most MAX_PARAMS_BYTES (a FIFO, a device such as
    /dev/zero or a huge file is refused before it is read, so nothing blocks or fills memory)."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder, not a parameters file")
        if not path.exists():
            raise ConfigError(f"{path}: parameters file not found")
        if not path.is_file():
            raise ConfigError(f"{path}: not a regular file (a pipe or device); give a YAML file")
        if path.stat().st_size > MAX_PARAMS_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a parameters file holds at "
                              f"most {MAX_PARAMS_BYTES:,}")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_PARAMS_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror})") from None
    if len(raw) > MAX_PARAMS_BYTES:
        raise ConfigError(f"{path}: more than {MAX_PARAMS_BYTES:,} bytes; a parameters file holds "
                          f"at most {MAX_PARAMS_BYTES:,}")
    return raw


def _expanded_nodes(root: yaml.Node) -> int:
    """Nodes the document expands to when every alias is replaced by what it names (counted
    without expanding: each distinct node once, memoized). Stops counting past MAX_YAML_NODES;
    an alias inside the node it names (a cycle) raises ConfigError."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            line = node.start_mark.line + 1
            raise ConfigError(f"line {line}: an alias refers to the anchor it is inside (a cycle)")
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total = min(total + size(child), MAX_YAML_NODES + 1)
        active.discard(key)
        sizes[key] = total
        return total

    return size(root)


def _parse_yaml(text: str) -> object:
    """YAML -> Python with the unique-key safe loader, refusing an alias bomb (the expanded size
    is counted before anything is constructed) and nesting too deep to parse."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_nodes(node) > MAX_YAML_NODES:
            raise ConfigError(f"expands to more than {MAX_YAML_NODES:,} values once its aliases "
                              "(*name) are replaced; params.yaml needs a few hundred: remove the "
                              "repeated aliases")
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError("nested too deeply to read; params.yaml needs a few levels") from None
    finally:
        loader.dispose()


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml. Unknown keys and wrong types raise ConfigError naming the key;
    so does a number outside its range (docs/params.md)."""
    path = Path(path)
    raw = _read_params_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte {err.object[err.start]:#04x}"
                          "); save the file as UTF-8") from None
    try:
        data = _parse_yaml(text)
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
