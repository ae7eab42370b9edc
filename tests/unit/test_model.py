"""The detector end to end on generated demo data: fit, predict, save/load, tamper checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.config import DataConfig, ModelConfig
from exdd.data.readers import load_samples, open_image, read_image, rgb_array
from exdd.errors import DataError, ModelError
from exdd.evaluation.evaluate import evaluate
from exdd.detector.model import ExDD
from exdd.detector.modelio import CHECKSUMS, CONTENT_FILES, model_hash

DATA = DataConfig(image_height=64, image_width=64)
MODEL = ModelConfig(runtime={"batch_size": 4}, coreset={"normal": 0.1, "defect": 0.5})
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "model_v1"  # saved before the sections


@pytest.fixture(scope="module")
def demo(small_demo: Path) -> Path:
    return small_demo  # conftest.py: one demo data set for the session


@pytest.fixture(scope="module")
def fitted(demo: Path) -> ExDD:
    return ExDD(MODEL, DATA).fit(load_samples(demo, "train"))


def test_fit_builds_both_banks_and_predict_shapes(fitted: ExDD, demo: Path) -> None:
    assert fitted.bank_normal_.shape[1] == MODEL.features.projection_dim
    assert len(fitted.bank_defect_) > 0
    assert fitted.tau_normal_ > 0 and fitted.tau_defect_ > 0
    test = load_samples(demo, "test")
    pred = fitted.predict([s.image for s in test])
    assert pred.scores.shape == (len(test),)
    assert pred.maps.shape == (len(test), 64, 64)
    assert np.isfinite(pred.scores).all() and np.isfinite(pred.maps).all()


def test_defects_rank_above_normals(fitted: ExDD, demo: Path) -> None:
    metrics = evaluate(fitted, load_samples(demo, "test"))
    # better than chance by a margin on both levels, even on this tiny set
    assert metrics["image_auroc"] > 0.7
    assert metrics["pixel_auroc"] > 0.7
    assert metrics["n_test"] == 12


def test_save_load_roundtrip_is_byte_identical(fitted: ExDD, demo: Path, tmp_path: Path) -> None:
    digest = fitted.save(tmp_path / "m")
    assert digest == model_hash(tmp_path / "m")
    loaded = ExDD.load(tmp_path / "m")
    paths = [s.image for s in load_samples(demo, "test")]
    a, b = fitted.predict(paths), loaded.predict(paths)
    assert a.scores.tobytes() == b.scores.tobytes()
    assert a.maps.tobytes() == b.maps.tobytes()


def test_a_model_saved_before_the_sections_saves_to_the_same_files(tmp_path: Path) -> None:
    """The model directory format does not follow the settings' grouping: a model written
    by the flat-settings exdd loads and saves to byte-identical files, so the same hash."""
    loaded = ExDD.load(FIXTURE)
    assert loaded.model.search.index == "hnsw" and loaded.model.scoring.rule == "calibrated"
    assert loaded.model.features.projection_dim == 8 and loaded.model.seed == 3
    # saved before the setting existed: it pools as models did then
    assert loaded.model.features.aggregation_padding == "inside"
    assert loaded.save(tmp_path / "again") == model_hash(FIXTURE)
    for name in (*CONTENT_FILES, CHECKSUMS):
        assert (tmp_path / "again" / name).read_bytes() == (FIXTURE / name).read_bytes(), name


def test_score_on_arrays_is_predict_on_files(fitted: ExDD, demo: Path) -> None:
    """predict reads files into the arrays score takes: both give the same bytes."""
    paths = [s.image for s in load_samples(demo, "test")][:5]
    h, w = fitted.input_size
    on_files = fitted.predict(paths)
    floats = fitted.score([read_image(p, h, w) for p in paths])
    uint8 = fitted.score(np.stack([  # as a camera would hand them over, at the input size
        np.asarray(open_image(p).convert("RGB").resize((w, h), Image.BILINEAR)) for p in paths]))
    for pred in (floats, uint8):
        assert pred.scores.tobytes() == on_files.scores.tobytes()
        assert pred.maps.tobytes() == on_files.maps.tobytes()
    with pytest.raises(DataError, match=r"image 0: shape \(48, 64, 3\) is not the model's input"):
        fitted.score([rgb_array(open_image(paths[0]), 48, 64)])
    with pytest.raises(DataError, match="no images"):
        fitted.score([])


def test_fit_is_deterministic(fitted: ExDD, demo: Path, tmp_path: Path) -> None:
    again = ExDD(MODEL, DATA).fit(load_samples(demo, "train"))
    assert fitted.save(tmp_path / "a") == again.save(tmp_path / "b")


@pytest.mark.parametrize("victim", ["bank_normal.npy", "model.json", "projection.npy"])
def test_tampered_file_is_a_clear_error(fitted: ExDD, tmp_path: Path, victim: str) -> None:
    fitted.save(tmp_path / "m")
    path = tmp_path / "m" / victim
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"{victim}: sha256 does not match"):
        ExDD.load(tmp_path / "m")


def test_missing_file_and_missing_dir(fitted: ExDD, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    (tmp_path / "m" / "bank_defect.npy").unlink()
    with pytest.raises(ModelError, match="bank_defect.npy: missing"):
        ExDD.load(tmp_path / "m")
    with pytest.raises(ModelError, match="not found"):
        ExDD.load(tmp_path / "nowhere")


def test_single_bank_and_reference_rule(demo: Path) -> None:
    train = load_samples(demo, "train")
    single = ExDD(MODEL.updated(scoring={"single_bank": True}), DATA).fit(train)
    assert len(single.bank_defect_) == 0
    ref = ExDD(MODEL.updated(scoring={"rule": "reference"}), DATA).fit(train)
    test = load_samples(demo, "test")
    for model in (single, ref):
        pred = model.predict([s.image for s in test])
        assert np.isfinite(pred.scores).all()


def test_predict_settings_change_without_refit(fitted: ExDD, demo: Path) -> None:
    """The same banks searched by the HNSW graph: the same maps up to its rare misses."""
    paths = [s.image for s in load_samples(demo, "test")]
    exact = fitted.predict(paths)
    graph = fitted.with_predict_settings(search={"index": "hnsw"})
    assert graph.model.search.index == "hnsw" and fitted.model.search.index == "flat"
    assert graph.bank_normal_ is fitted.bank_normal_
    approx = graph.predict(paths)
    assert np.corrcoef(exact.scores, approx.scores)[0, 1] > 0.99
    assert np.isclose(approx.maps, exact.maps, rtol=1e-4, atol=1e-6).mean() > 0.95
    with pytest.raises(ModelError, match="coreset: not predict-time"):
        fitted.with_predict_settings(coreset={"normal": 0.5})
    with pytest.raises(ModelError, match="not fitted"):
        ExDD(MODEL, DATA).with_predict_settings(scoring={"rule": "reference"})


def test_no_normals_or_no_defects(demo: Path) -> None:
    train = load_samples(demo, "train")
    with pytest.raises(DataError, match="no defect-free"):
        ExDD(MODEL, DATA).fit([s for s in train if s.label == 1])
    with pytest.raises(DataError, match="no defect images with masks"):
        ExDD(MODEL, DATA).fit([s for s in train if s.label == 0])


def test_streaming_chunks_bound_the_buffer(demo: Path) -> None:
    """A buffer smaller than the data gives a union of per-chunk coresets of the same size."""
    train = load_samples(demo, "train")
    small = ExDD(MODEL.updated(banks={"stream_chunk_patches": 1000}), DATA).fit(train)
    n_normal_patches = sum(s.label == 0 for s in train) * int(np.prod(small.grid_))
    expected = sum(max(1, int(round(MODEL.coreset.normal * n)))
                   for n in _chunks(n_normal_patches, 1000))
    assert abs(len(small.bank_normal_) - expected) <= len(_chunks(n_normal_patches, 1000))
    assert json.dumps(small.fit_timings_)


def _chunks(total: int, size: int) -> list[int]:
    return [min(size, total - i) for i in range(0, total, size)]
