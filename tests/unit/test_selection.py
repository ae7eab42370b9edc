"""Choosing the scoring rules at fit (scoring.rule: auto) on held-out training images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.config import ConfigError, DataConfig, ModelConfig, SynthConfig
from exdd.data.readers import Sample, load_samples
from exdd.data.synth import synthesize
from exdd.detector.model import ExDD
from exdd.detector.selection import plan
from exdd.detector.settings import SelectionSettings
from exdd.errors import ModelError

DATA = DataConfig(image_height=64, image_width=64)
MODEL = ModelConfig(runtime={"batch_size": 4}, coreset={"normal": 0.1, "defect": 0.5})


def test_plan_holds_out_a_share_of_normals_and_folds_the_defects() -> None:
    settings = SelectionSettings(normal_images=48, normal_share=0.2, defect_images=10, folds=3)
    held = plan(100, 25, settings, seed=1)
    assert held is not None
    assert len(held.normal) == 20 and len(set(held.normal.tolist())) == 20
    assert sorted(np.bincount(held.folds).tolist()) == [8, 8, 9]
    assert held.scored.sum() == 10
    assert sorted(np.bincount(held.folds[held.scored]).tolist()) == [3, 3, 4]  # spread out
    again = plan(100, 25, settings, seed=1)
    assert again is not None and (again.normal == held.normal).all()
    assert (again.folds == held.folds).all()
    assert len(plan(1000, 25, settings, seed=1).normal) == 48  # capped
    assert plan(100, 2, settings, seed=1) is None   # too few real defects: fallback
    assert plan(9, 25, settings, seed=1) is None    # one normal image to spare is none


@pytest.fixture(scope="module")
def train(small_demo: Path) -> list:
    return load_samples(small_demo, "train")


def test_fit_chooses_the_rules_by_held_out_auroc_and_records_them(train: list,
                                                                  tmp_path: Path) -> None:
    model = ExDD(MODEL, DATA).fit(train)
    report = model.state.selection
    assert report is not None and set(report["candidates"]) == {"weighted", "boosted"}
    table = report["candidates"]
    by_pixel = max(MODEL.selection.candidates, key=lambda c: table[c]["pixel_auroc"])
    by_image = max(MODEL.selection.candidates, key=lambda c: table[c]["image_auroc"])
    assert model.model.scoring.rule == by_pixel == report["rule"]
    assert model.model.scoring.image_rule == ("same" if by_image == by_pixel else by_image)
    assert report["held_out"] == {"normal": 2, "defect": 4}
    assert model.fit_timings_["selection"] > 0
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert saved["selection"] == report and saved["model"]["scoring"] == by_pixel
    assert ExDD.load(tmp_path / "m").state.selection == report


def test_synthetic_defects_stay_in_m_p_only_where_the_held_out_real_ones_favour_them(
        train: list, small_demo: Path, tmp_path: Path) -> None:
    """Each candidate is scored with M_P' with and without the synthetic defects; the M_P of
    least regret is the model's: the same bank as a fit that keeps them, or as one without."""
    synthetic = load_samples(synthesize(small_demo, tmp_path / "synthetic", SynthConfig(), DATA,
                                        backend="procedural", count=6, seed=0))
    model = ExDD(MODEL, DATA).fit(train, synthetic)
    report = model.state.selection
    tables = {k: report["synthetic"][f"{k}_candidates"] for k in ("with", "real_only")}
    best = {k: [max(v[m] for v in t.values()) for m in ("image_auroc", "pixel_auroc")]
            for k, t in tables.items()}
    regret = {k: max(max(b[m] for b in best.values()) - best[k][m] for m in (0, 1))
              for k in best}
    kept = report["synthetic"]["kept"]
    assert regret["with" if kept else "real_only"] == min(regret.values())
    chosen = tables["with" if kept else "real_only"]  # the rules come from the chosen M_P'
    assert report["candidates"] == chosen
    assert max(chosen, key=lambda c: chosen[c]["pixel_auroc"]) == report["rule"]
    keep = ExDD(MODEL.updated(selection={"synthetic": "keep"}), DATA).fit(train, synthetic)
    assert "synthetic" not in keep.state.selection
    real = ExDD(MODEL, DATA).fit(train)
    assert "synthetic" not in real.state.selection
    expected = keep if kept else real
    assert model.bank_defect_.tobytes() == expected.bank_defect_.tobytes()
    assert model.tau_defect_ == expected.tau_defect_
    assert model.bank_normal_.tobytes() == real.bank_normal_.tobytes()


def test_synthetic_defects_that_are_normal_surface_are_left_out(train: list,
                                                                 tmp_path: Path) -> None:
    """A synthetic set whose masks cover defect-free surface puts normal patches into M_P;
    the held-out real defects show the cost and fit leaves the set out."""
    normals = [s for s in train if s.label == 0]
    h, w = np.asarray(Image.open(normals[0].image)).shape[:2]
    mask = tmp_path / "everywhere.png"
    Image.fromarray(np.full((h, w), 255, np.uint8)).save(mask)
    bad = [Sample(s.image, mask, 1, "train") for s in normals]
    model = ExDD(MODEL, DATA).fit(train, bad)
    assert model.state.selection["synthetic"]["kept"] is False
    real = ExDD(MODEL, DATA).fit(train)
    assert model.bank_defect_.tobytes() == real.bank_defect_.tobytes()
    kept = ExDD(MODEL.updated(selection={"synthetic": "keep"}), DATA).fit(train, bad)
    assert len(kept.bank_defect_) > len(model.bank_defect_)


def test_a_given_rule_is_kept_and_the_model_files_keep_their_v1_keys(train: list,
                                                                    tmp_path: Path) -> None:
    model = ExDD(MODEL.updated(scoring={"rule": "weighted"}), DATA).fit(train)
    assert model.state.selection is None and model.fit_timings_["selection"] == 0
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "model.json").read_text())
    assert "selection" not in saved and saved["model"]["scoring"] == "weighted"
    assert not {k for k in saved["model"] if k.startswith("selection_")}
    assert "image_rule" not in saved["model"] and "boost_weight" not in saved["model"]
    assert "aggregation_padding" not in saved["model"]  # inside: what a v1 model means


def test_a_line_with_synthetic_defects_only_maps_as_patchcore_and_boosts_images(
        train: list, small_demo: Path) -> None:
    """No real defect to validate on: the map is M_N's alone (a synthetic M_P cannot say
    where a real defect lies), the image score lets M_P raise an image, never lower it."""
    normals = [s for s in train if s.label == 0]
    synthetic = [s for s in train if s.label == 1]  # stand-ins: they go to M_P only
    model = ExDD(MODEL, DATA).fit(normals, synthetic)
    assert (model.model.scoring.rule, model.model.scoring.image_rule) == ("normal", "boosted")
    assert model.state.selection == {"rule": "normal", "image_rule": "boosted", "fallback": True}
    # `exdd fit --single-bank` on the same normals: the same M_N, map and pooling
    single = ExDD(MODEL.updated(scoring={"single_bank": True}), DATA).fit(normals)
    assert model.bank_normal_.tobytes() == single.bank_normal_.tobytes()
    paths = [s.image for s in load_samples(small_demo, "test")]
    dual, patchcore = model.predict(paths), single.predict(paths)
    assert dual.maps.tobytes() == patchcore.maps.tobytes()
    assert (dual.scores >= patchcore.scores - 1e-6).all()
    assert (dual.scores > patchcore.scores + 1e-6).any()  # M_P raised some image


def test_feature_padding_and_pooling_follow_what_the_banks_serve(train: list,
                                                                 tmp_path: Path) -> None:
    """auto: PatchCore's zero padding and max pooling where the map is M_N's alone; a dual
    model validated on real defects pools inside the map and takes a top-k mean."""
    with pytest.raises(ModelError, match="chosen at fit"):
        ExDD(MODEL, DATA).embedder  # noqa: B018
    dual = ExDD(MODEL, DATA).fit(train)
    single = ExDD(MODEL.updated(scoring={"single_bank": True}), DATA).fit(train)
    assert dual.model.features.aggregation_padding == "inside"
    assert single.model.features.aggregation_padding == "zeros"
    assert (dual.model.scoring.pooling, single.model.scoring.pooling) == ("top_k", "max")
    assert not np.array_equal(dual.bank_normal_, single.bank_normal_)
    single.save(tmp_path / "single")
    saved = json.loads((tmp_path / "single" / "model.json").read_text())["model"]
    assert saved["aggregation_padding"] == "zeros" and saved["image_score"] == "auto"
    loaded = ExDD.load(tmp_path / "single")
    assert loaded.model.features.aggregation_padding == "zeros"
    explicit = MODEL.updated(features={"aggregation_padding": "zeros"}, scoring={"rule": "weighted"})
    assert ExDD(explicit, DATA).fit(train).model.features.aggregation_padding == "zeros"
    normal = ExDD(MODEL.updated(scoring={"rule": "normal"}), DATA).fit(train).model  # M_N's map
    assert (normal.features.aggregation_padding, normal.scoring.pooling) == ("zeros", "max")
    weighted = ExDD(MODEL.updated(scoring={"rule": "weighted"}), DATA).fit(train).model
    assert (weighted.features.aggregation_padding, weighted.scoring.pooling) == ("inside", "top_k")


def test_auto_is_chosen_at_fit_not_at_predict(train: list) -> None:
    model = ExDD(MODEL, DATA).fit(train)
    with pytest.raises(ModelError, match="'auto' is chosen at fit"):
        model.with_predict_settings(scoring={"rule": "auto"})
    with pytest.raises(ConfigError, match="image_rule must be 'same'"):
        MODEL.updated(scoring={"rule": "reference", "image_rule": "boosted"})


def test_choosing_leaves_the_normal_bank_as_a_given_rule_builds_it(train: list) -> None:
    """M_N' is cut from M_N, not built instead of it: the model's banks do not depend on
    whether fit chose the rule."""
    chosen = ExDD(MODEL, DATA).fit(train)
    given = ExDD(MODEL.updated(scoring={"rule": "weighted"}), DATA).fit(train)
    assert chosen.bank_normal_.tobytes() == given.bank_normal_.tobytes()
    assert chosen.bank_defect_.tobytes() == given.bank_defect_.tobytes()
    assert chosen.tau_normal_ == given.tau_normal_
