"""A line's model as a self-contained MLflow pyfunc that scores encoded images.

The logged model carries the exdd code it was made with (``code_paths``) and pins only
packages an index has (exdd's own runtime requirements at the versions installed when it
was logged), so ``mlflow models serve -m models:/exdd-<line>@champion`` runs it without
exdd installed. Its input is a DataFrame with one binary column ``image`` (PNG, JPEG or BMP
bytes; base64 in MLflow's JSON), its output one row per image: ``score``, ``flagged``,
``threshold``. Clients send image content, never a server path.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from importlib.metadata import requires, version
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types import ColSpec, Schema
from PIL import Image

IMAGE_COLUMN = "image"
MODEL_ARTIFACT = "model"  # name of the logged pyfunc model inside a run
MODEL_DIR_ARTIFACT = "model_dir"  # key of the model directory among the pyfunc's artifacts
MODEL_DIR_PATH = f"artifacts/{MODEL_DIR_ARTIFACT}"  # where MLflow puts it in the logged model
THRESHOLD_KEY = "threshold"  # in the model config: the flag threshold of the version
# What loading and running the pickled pyfunc needs besides exdd's own requirements.
PYFUNC_PACKAGES = ("mlflow", "pandas", "cloudpickle")
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
    outputs=Schema([ColSpec("double", "score"), ColSpec("boolean", "flagged"),
                    ColSpec("double", THRESHOLD_KEY)]),
)


class ExddModel(mlflow.pyfunc.PythonModel):
    """An ExDD model directory behind MLflow's pyfunc interface."""

    def load_context(self, context: Any) -> None:
        from exdd import runtime

        runtime.configure()  # MLflow's scoring server is an entry point: before torch loads
        from exdd.detector.model import ExDD

        self.model = ExDD.load(context.artifacts[MODEL_DIR_ARTIFACT])
        self.threshold = float((context.model_config or {})[THRESHOLD_KEY])

    def predict(self, context: Any, model_input: pd.DataFrame,  # noqa: ANN201
                params: dict[str, Any] | None = None):
        from exdd.inference.encoded import score_bytes

        blobs = [bytes(b) for b in model_input[IMAGE_COLUMN]]
        scores = score_bytes(self.model, blobs)[0].scores
        return pd.DataFrame({"score": scores, "flagged": scores >= self.threshold,
                             THRESHOLD_KEY: np.full(len(scores), self.threshold)})


def log_pyfunc(model_dir: Path, threshold: float, example_rgb: np.ndarray) -> str:
    """Log ``model_dir`` (its content files only, no annotations) as the pyfunc of the
    active MLflow run; returns its model URI. ``example_rgb``: one image for the input
    example."""
    from exdd.detector.modelio import CHECKSUMS, CONTENT_FILES

    with tempfile.TemporaryDirectory(prefix="exdd-pyfunc-") as tmp:
        bundle = Path(tmp) / MODEL_DIR_ARTIFACT
        bundle.mkdir()
        for name in (*CONTENT_FILES, CHECKSUMS):
            shutil.copy2(Path(model_dir) / name, bundle / name)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=ExddModel(),
            artifacts={MODEL_DIR_ARTIFACT: str(bundle)}, code_paths=[_code_path()],
            pip_requirements=requirements(), signature=SIGNATURE,
            input_example=_input_example(example_rgb), model_config={THRESHOLD_KEY: threshold})
    return info.model_uri


def requirements() -> list[str]:
    """exdd's runtime requirements and the pyfunc's, pinned to the installed versions."""
    from packaging.requirements import Requirement

    names = [r.name for r in map(Requirement, requires("exdd") or []) if r.marker is None]
    return [f"{name}=={version(name)}" for name in (*names, *PYFUNC_PACKAGES)]


def _code_path() -> str:
    """The exdd package folder, logged with the model."""
    import exdd

    return str(Path(exdd.__file__).parent)


def _input_example(image_rgb: np.ndarray) -> pd.DataFrame:
    """One benchmark image (RGB floats in [0, 1]) as the PNG bytes the model takes."""
    buf = io.BytesIO()
    Image.fromarray(np.round(np.clip(image_rgb, 0, 1) * 255).astype(np.uint8)).save(buf, "PNG")
    return pd.DataFrame({IMAGE_COLUMN: [buf.getvalue()]})
