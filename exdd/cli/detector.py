"""``exdd fit``, ``exdd evaluate`` and ``exdd predict``: the detector's command line.

torch and faiss are imported inside the handlers so that ``exdd --help`` and the other
sub-commands start fast.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import get_args

from pydantic import BaseModel

from exdd.cli.common import collect_images, report_unreadable
from exdd.config import load_params
from exdd.detector.settings import FeatureSettings, ScoringSettings
from exdd.data.readers import load_samples
from exdd.errors import DataError
from exdd.detector.geometry import with_input_size


def _fit(args: argparse.Namespace) -> int:
    from exdd.detector.model import ExDD

    params = load_params(args.params)
    features = {"backbone": args.backbone} if args.backbone else {}
    scoring: dict[str, object] = {"single_bank": True} if args.single_bank else {}
    if args.scoring:
        scoring["rule"] = args.scoring
    model_cfg = params.model.updated(features=features, scoring=scoring)
    train = load_samples(args.data, "train")
    synthetic = [s for d in args.synthetic or [] for s in load_samples(d) if s.label == 1]
    if args.synthetic and not synthetic:
        raise DataError(f"{', '.join(args.synthetic)}: no synthetic defect samples found")
    data_cfg = with_input_size(params.data, args.input_size) if args.input_size else params.data
    model = ExDD(model_cfg, data_cfg).fit(train, synthetic)
    digest = model.save(args.out)
    h, w = model.data.input_size
    print(f"model {digest[:12]} written to {args.out}: input {h}x{w}, feature padding "
          f"{model.model.features.aggregation_padding}, image pooling "
          f"{model.model.scoring.pooling}, M_N {len(model.bank_normal_)} patches, "
          f"M_P {len(model.bank_defect_)} patches")
    chosen = model.state.selection
    if chosen is not None:
        rule = model.model.scoring
        how = ("no real defects to validate on" if chosen.get("fallback") else
               "on {normal} normal and {defect} defect training images held out".format(
                   **chosen["held_out"]))
        synthetic = chosen.get("synthetic")
        kept = ("" if synthetic is None else "; M_P keeps the synthetic defects"
                if synthetic["kept"] else "; M_P leaves the synthetic defects out")
        print(f"scoring chosen {how}: map {rule.rule}, image score "
              f"{rule.rule if rule.image_rule == 'same' else rule.image_rule}{kept}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from exdd.detector.model import ExDD
    from exdd.evaluation.evaluate import benchmark_report
    from exdd.evaluation.report import REPORTED_METRICS

    metrics = benchmark_report(ExDD.load(args.model), load_samples(args.data, "test"))
    if args.json:
        metrics.write(args.json)
    metrics.write_beside(args.model)
    figures = metrics.to_json()
    if args.plots:
        from exdd.inference.overlays import plot_roc_pr

        Path(args.plots).mkdir(parents=True, exist_ok=True)
        plot_roc_pr(figures, Path(args.plots) / "roc_pr.png")
    print("  ".join(f"{k} {figures[k]:.4f}" for k in REPORTED_METRICS)
          + f"  n_test {metrics.n_test}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from exdd.inference.batch import write_predictions
    from exdd.line.champion import is_models_uri, load_models_uri, model_threshold
    from exdd.detector.model import ExDD
    from exdd.detector.modelio import model_hash

    paths = collect_images(args.inputs)
    with tempfile.TemporaryDirectory(prefix="exdd-predict-") as tmp:
        if is_models_uri(args.model):
            from exdd.line.lines import workspace_params

            repo = Path(args.repo).resolve()
            params = workspace_params(repo, args.params)
            loaded = load_models_uri(args.model, params, repo, Path(tmp))
            model_dir, version = loaded.model_dir, str(loaded.version)
            threshold, digest = loaded.threshold, loaded.model_hash
            label = f"{args.model} (version {version}, model {digest[:12]})"
        else:  # a bare directory: self-consistent files, provenance unknown (see README)
            model_dir = Path(args.model)
            threshold, digest = model_threshold(model_dir), model_hash(model_dir)
            version, label = digest[:12], f"model {digest[:12]} (directory {model_dir})"
        model = ExDD.load(model_dir)
        if args.threshold is not None:
            threshold = args.threshold
        done = write_predictions(model, paths, Path(args.out), threshold, version)
    shown = done.n_flagged if threshold is not None else "n/a (no threshold known)"
    print(f"{done.n_scored} of {len(paths)} image(s) scored by {label}, {shown} flagged; "
          f"results in {args.out}")
    return report_unreadable(done.failed)


def choices(section: type[BaseModel], field: str) -> list[str]:
    """A setting's allowed values, from its type: the flag and params.yaml accept the same."""
    return list(get_args(section.model_fields[field].annotation))


def register(sub: argparse._SubParsersAction) -> None:
    """Add fit, evaluate and predict."""
    fit = sub.add_parser("fit", help="build the memory banks from a data set's train split")
    fit.add_argument("--data", required=True, help="KSDD2-layout folder or manifest CSV")
    fit.add_argument("--out", required=True, help="model directory to write")
    fit.add_argument("--backbone", choices=choices(FeatureSettings, "backbone"))
    fit.add_argument("--single-bank", action="store_true", help="PatchCore: no defect bank")
    fit.add_argument("--scoring", choices=choices(ScoringSettings, "rule"),
                     help="pixel scoring rule (default: model.scoring.rule)")
    fit.add_argument("--input-size", metavar="HxW|PRESET",
                     help="network input size, e.g. 632x224 or ksdd2 (default: the training "
                          "images' aspect at data.pixel_budget pixels)")
    fit.add_argument("--synthetic", action="append", metavar="DIR",
                     help="synthetic defect set for the positive bank (repeatable)")
    fit.add_argument("--params", help="params file to use")
    fit.set_defaults(func=_fit)

    ev = sub.add_parser("evaluate", help="metrics of a model on a data set's test split")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--json", help="write the metrics here too")
    ev.add_argument("--plots", help="folder for the ROC/PR picture")
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser("predict", help="score images; writes scores.csv, heatmap overlays "
                                         "and raw anomaly maps")
    pr.add_argument("--model", required=True, metavar="MODEL_DIR_OR_URI",
                    help="a model directory, or models:/exdd-<line>@champion (any alias) or "
                         "models:/exdd-<line>/<version> of the --repo workspace's registry, "
                         "checked against the model hash the registry recorded")
    pr.add_argument("--repo", default=".", help="line workspace of a models:/ URI")
    pr.add_argument("--params", help="params file for a models:/ URI (default: the "
                                      "workspace's params.yaml)")
    pr.add_argument("--out", required=True)
    pr.add_argument("--threshold", type=float, help="flag threshold (default: the model's F1-max)")
    pr.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    pr.set_defaults(func=_predict)
