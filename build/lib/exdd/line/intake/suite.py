"""The great-expectations (1.x) suite over the metadata table, and its per-file verdicts.

Bounds come from ``IntakeConfig`` and, where that makes sense, from the accepted data set
(its image sizes under the size policy of ``exdd.line.intake.sizes``, its colour modes, its
mean-intensity range widened by a margin), so a line's own normal look is the reference. Every expectation runs with ``COMPLETE``
results keyed by the ``path`` column, which maps each unexpected value back to its file.

Label updates (``kind`` relabel: the bytes of an image already accepted) are checked for
their label and mask like any row; the image's own look was checked when it was accepted
(possibly under other bounds), and it is a data-set duplicate by definition, so those
expectations are restricted to new images.

great_expectations is imported inside the functions: it takes seconds to import, and the
library is also imported by DAG files that must parse quickly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from exdd.config import IntakeConfig
from exdd.data.readers import IMAGE_SUFFIXES, SPLITS
from exdd.line.intake.manifest import DatasetProfile
from exdd.line.intake.sizes import SizeBounds, size_bounds
from exdd.line.intake.table import KIND_NEW

SUITE_NAME = "exdd-intake"
SITE_NAME = "intake_report"
ID_COLUMN = "path"


@dataclass(frozen=True)
class Bounds:
    """The suite's parameters; ``origin`` says where each derived one came from."""

    size: SizeBounds
    modes: list[str]
    mean_min: float
    mean_max: float
    std_min: float
    labels: list[str]
    defect_label: str
    min_rows: int
    max_rows: int
    origin: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    """Suite result: failed checks per file, failed table-level checks, the raw GX JSON."""

    success: bool
    row_failures: dict[str, list[dict[str, Any]]]
    table_failures: list[dict[str, Any]]
    result: dict[str, Any]


def derive_bounds(cfg: IntakeConfig, prof: DatasetProfile, table: pd.DataFrame) -> Bounds:
    """Params first; else the data set's accepted images; else the batch's usual size."""
    size = size_bounds(cfg, prof, table)
    origin: dict[str, str] = {"size": size.origin}
    derive = cfg.derive_from_dataset and prof.n_profiled > 0
    modes = sorted(m for m in prof.modes if m in cfg.allowed_modes) if derive else []
    origin["modes"] = "dataset" if modes else "params"
    modes = modes or list(cfg.allowed_modes)

    lo, hi = cfg.min_mean_intensity, cfg.max_mean_intensity
    origin["mean_intensity"] = "params"
    if derive and prof.mean_min is not None:
        d_lo = max(lo, prof.mean_min - cfg.intensity_margin)
        d_hi = min(hi, prof.mean_max + cfg.intensity_margin)
        if d_lo <= d_hi:
            lo, hi, origin["mean_intensity"] = d_lo, d_hi, "dataset +- margin, within params"
    return Bounds(size, modes, lo, hi, cfg.min_std_intensity, list(cfg.labels),
                  cfg.defect_label, cfg.min_rows, cfg.max_rows, origin)


def expectations(b: Bounds) -> list[Any]:
    """The suite's expectations, each with a one-line ``meta.check`` for humans."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    def check(exp_cls: type, text: str, **kwargs: Any) -> Any:
        return exp_cls(meta={"check": text}, **kwargs)

    defect = {"row_condition": Column("label") == b.defect_label}
    new = {"row_condition": Column("kind") == KIND_NEW}
    exps = [
        check(gxe.ExpectTableRowCountToBeBetween, "number of files in the batch within bounds",
              min_value=b.min_rows, max_value=b.max_rows),
        check(gxe.ExpectColumnValuesToBeInSet, "file extension is an image type",
              column="suffix", value_set=list(IMAGE_SUFFIXES)),
        check(gxe.ExpectColumnValuesToBeInSet, "file decodes as an image",
              column="decodable", value_set=[True]),
        check(gxe.ExpectColumnValuesToBeInSet, "colour mode is the line's",
              column="mode", value_set=b.modes, **new),
        check(gxe.ExpectColumnValuesToBeBetween,
              "mean intensity in the line's range (no black or blown-out frame)",
              column="mean_intensity", min_value=b.mean_min, max_value=b.mean_max, **new),
        check(gxe.ExpectColumnValuesToBeBetween, "intensity varies (not a flat frame)",
              column="std_intensity", min_value=b.std_min, **new),
        check(gxe.ExpectColumnValuesToBeNull, "not a duplicate of an earlier inbox file",
              column="duplicate_in_inbox"),
        check(gxe.ExpectColumnValuesToBeNull,
              "not already in the data set (unless it is a label update of that image)",
              column="duplicate_in_dataset", **new),
        check(gxe.ExpectColumnValuesToBeInSet, "label in the allowed set",
              column="label", value_set=b.labels),
        check(gxe.ExpectColumnValuesToBeInSet, "split is train or test",
              column="split", value_set=list(SPLITS)),
        check(gxe.ExpectColumnValuesToNotBeNull, "labelled defect names a mask",
              column="mask", **defect),
        check(gxe.ExpectColumnValuesToBeInSet, "named mask file is in the inbox",
              column="mask_found", value_set=[True]),
        check(gxe.ExpectColumnValuesToBeInSet, "mask decodes as an image",
              column="mask_decodable", value_set=[True]),
        check(gxe.ExpectColumnValuesToBeInSet, "mask has the image's size",
              column="mask_size_match", value_set=[True]),
        check(gxe.ExpectColumnValuesToBeInSet, "defect mask is not empty",
              column="mask_nonempty", value_set=[True], **defect),
        check(gxe.ExpectColumnValuesToBeDateutilParseable, "capture timestamp parses",
              column="timestamp"),
    ]
    size = b.size
    for column, (low, high) in (("width", size.width), ("height", size.height)):
        exps.append(check(gxe.ExpectColumnValuesToBeBetween,
                          f"image {column} within the size policy ({size.policy})",
                          column=column, min_value=low, max_value=high, **new))
    if size.aspect is not None:
        exps.append(check(gxe.ExpectColumnValuesToBeBetween,
                          "aspect ratio (width / height) near the line's",
                          column="aspect", min_value=size.aspect[0], max_value=size.aspect[1],
                          **new))
    return exps


def _context(docs_dir: Path) -> Any:
    """An ephemeral context, analytics and progress bars off, Data Docs into ``docs_dir``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                          "base_directory": str(docs_dir.resolve())},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
        data_docs_sites={SITE_NAME: site},
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def run_suite(table: pd.DataFrame, bounds: Bounds, docs_dir: Path) -> Outcome:
    """Validate the table through a checkpoint that also renders the HTML Data Docs."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    ctx = _context(docs_dir)
    batch_def = (ctx.data_sources.add_pandas("inbox").add_dataframe_asset("files")
                 .add_batch_definition_whole_dataframe("batch"))
    suite = ctx.suites.add(gx.ExpectationSuite(name=SUITE_NAME,
                                               meta={"bounds": jsonable(asdict(bounds))}))
    for exp in expectations(bounds):
        suite.add_expectation(exp)
    definition = ctx.validation_definitions.add(
        gx.ValidationDefinition(data=batch_def, suite=suite, name=SUITE_NAME))
    checkpoint = ctx.checkpoints.add(gx.Checkpoint(
        name=SUITE_NAME, validation_definitions=[definition],
        actions=[UpdateDataDocsAction(name="data_docs", site_names=[SITE_NAME])],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [ID_COLUMN]},
    ))
    run = checkpoint.run(batch_parameters={"dataframe": table})
    (result,) = run.run_results.values()

    rows: dict[str, list[dict[str, Any]]] = {}
    table_failures: list[dict[str, Any]] = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs.get("column")
        failure = {"expectation": cfg.type, "check": (cfg.meta or {}).get("check"),
                   "column": column, "kwargs": jsonable(_bound_kwargs(cfg.kwargs))}
        if r.exception_info and r.exception_info.get("raised_exception"):
            failure["error"] = r.exception_info.get("exception_message")
        index_list = (r.result or {}).get("unexpected_index_list")
        if column is None or index_list is None:
            failure["observed"] = jsonable((r.result or {}).get("observed_value"))
            table_failures.append(failure)
            continue
        for item in index_list:
            rows.setdefault(item[ID_COLUMN], []).append(
                {**failure, "value": jsonable(item.get(column))})
    return Outcome(bool(result.success), rows, table_failures, jsonable(result.to_json_dict()))


def _bound_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    keep = ("min_value", "max_value", "value_set", "row_condition")
    return {k: kwargs[k] for k in keep if kwargs.get(k) is not None}


def jsonable(value: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN as null, tuples and sets as lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
