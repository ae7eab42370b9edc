"""Choosing the scoring rules at fit, on training images held out of the banks.

A rule tuned on one line does not carry over: suppressing patches that lie far from the
defect bank (``weighted``) wins where defects repeat, and costs image ranking where they
are tiny or of a kind M_P lacks (``boosted`` never suppresses). So ``scoring.rule: auto``
lets each line choose on its own training images, never on a test split:

* a share of the normal images is held out: M_N' is M_N less the members those images gave
  it (M_N itself is built from every normal image, as without selection);
* the real defect images are cut into folds; per fold, M_P' is built, sized as the final M_P,
  from the other folds' defect patches (and any synthetic ones);
* each fold's defect images and the held-out normals are scored by every candidate rule.

The map's rule is the candidate with the best mean held-out pixel AUROC, the image score's
the one with the best image AUROC (``scoring.image_rule`` when they differ).

Synthetic defects earn their place in M_P the same way (``selection.synthetic: choose``):
every candidate is also scored with M_P' of the real defects alone, and the synthetic ones
stay only if that costs less (the least regret: the larger of how far the best image AUROC
and the best pixel AUROC of one M_P trail the other's). Procedural defects help one line's
image ranking and blur another's maps (docs/benchmarks.md); only the held-out real defects
can tell which line is which. With fewer real
defect images than ``min_defect_images`` (a line with synthetic defects only, whose M_P says
nothing of where real defects lie) fit takes ``fallback`` for the map (``normal``: M_N's,
as PatchCore's) and ``fallback_image`` for the image score (``boosted``) without validating;
its features and pooling are then the single bank's too (settings.AUTO).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

from exdd.detector.index import NearestNeighbourIndex
from exdd.detector.scoring import MapUpsampler, dual_evidence, pooled
from exdd.detector.settings import ScoringSettings, SelectionSettings

BankFactory = Callable[[np.ndarray], tuple[NearestNeighbourIndex, float]]


@dataclass(frozen=True)
class HeldOut:
    """Which normal images stay out of M_N', each real defect image's fold, and which defect
    images are scored (at most ``defect_images``, spread over the folds)."""

    normal: np.ndarray  # sorted indices into the normal images
    folds: np.ndarray   # fold per real defect image
    scored: np.ndarray  # bool per real defect image


Table = dict[str, tuple[float, float]]  # candidate -> (image AUROC, pixel AUROC)


@dataclass(frozen=True)
class Choice:
    """The rules fit chose, whether M_P keeps the synthetic defects, and the held-out
    figures they were chosen on: ``tables`` per M_P' (``with`` the synthetic defects, and
    ``real_only`` when there were some to leave out)."""

    rule: str
    image_rule: str
    tables: dict[str, Table]
    normal_images: int
    defect_images: int

    @property
    def keep_synthetic(self) -> bool:
        return self.source == "with"

    @property
    def source(self) -> str:
        return least_regret(self.tables)

    def report(self) -> dict[str, object]:
        """What model.json records of the choice."""
        out: dict[str, object] = {
            "rule": self.rule, "image_rule": self.image_rule,
            "held_out": {"normal": self.normal_images, "defect": self.defect_images},
            "candidates": _rounded(self.tables[self.source])}
        if len(self.tables) > 1:
            out["synthetic"] = {"kept": self.keep_synthetic,
                                **{f"{src}_candidates": _rounded(t)
                                   for src, t in self.tables.items()}}
        return out


def _rounded(table: Table) -> dict[str, dict[str, float]]:
    return {c: {"image_auroc": round(v[0], 6), "pixel_auroc": round(v[1], 6)}
            for c, v in table.items()}


def plan(n_normal: int, n_defect: int, settings: SelectionSettings, seed: int) -> HeldOut | None:
    """The seeded validation split, or None when there is too little to validate on."""
    n_held = min(settings.normal_images, int(n_normal * settings.normal_share))
    if n_defect < settings.min_defect_images or n_held < 2:
        return None
    rng = np.random.default_rng(seed)
    normal = np.sort(rng.choice(n_normal, n_held, replace=False))
    order = rng.permutation(n_defect)
    folds = np.empty(n_defect, int)
    folds[order] = np.arange(n_defect) % min(settings.folds, n_defect)
    scored = np.zeros(n_defect, bool)
    scored[order[:settings.defect_images]] = True
    return HeldOut(normal, folds, scored)


def choose(held: HeldOut, normal_index: NearestNeighbourIndex, held_normals: np.ndarray,
           defect_patches: Sequence[np.ndarray], extra_patches: Sequence[np.ndarray],
           scored: dict[int, tuple[np.ndarray, np.ndarray]], make_bank: BankFactory,
           upsampler: MapUpsampler, scoring: ScoringSettings, settings: SelectionSettings
           ) -> Choice:
    """Score every candidate on the held-out images and pick the map's and image's rules
    (and, given synthetic patches and ``settings.synthetic == "choose"``, whether M_P
    keeps them).

    ``held_normals``: (n, h, w, D) features of the held-out normal images; ``defect_patches``:
    per real defect image, its M_P patches; ``extra_patches``: synthetic ones, in every
    fold's M_P'; ``scored``: per scored defect image, its features (h, w, D) and its mask at
    the input size.
    """
    n, gh, gw, dim = held_normals.shape
    d_n_normal = normal_index.search(_flat(held_normals), 1)[0][:, 0]
    sources = {"with": list(extra_patches)}
    if extra_patches and settings.synthetic == "choose":
        sources["real_only"] = []
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        src: {c: [] for c in settings.candidates} for src in sources}
    for k in np.unique(held.folds):
        in_fold = [i for i in sorted(scored) if held.folds[i] == k]
        if not in_fold:
            continue
        rest = [p for i, p in enumerate(defect_patches) if held.folds[i] != k]
        feats = np.concatenate([held_normals, np.stack([scored[i][0] for i in in_fold])])
        query = _flat(feats)
        d_n = np.concatenate([d_n_normal, normal_index.search(_flat(feats[n:]), 1)[0][:, 0]])
        labels = np.r_[np.zeros(n, int), np.ones(len(in_fold), int)]
        s = settings.pixel_stride
        masks = np.concatenate([np.zeros((n, *upsampler.out_size), bool),
                                np.stack([scored[i][1] for i in in_fold])])[:, ::s, ::s]
        for src, extra in sources.items():
            index, tau = make_bank(np.concatenate(rest + extra))
            d_p = index.search(query, 1)[0][:, 0]
            for c in settings.candidates:
                rule = scoring.model_copy(update={"rule": c, "image_rule": "same"})
                maps = upsampler(dual_evidence(d_n, d_p, tau, rule).reshape(-1, gh, gw))
                image = float(roc_auc_score(labels, pooled(maps, rule)))
                pixel = (float(roc_auc_score(masks.ravel(), maps[:, ::s, ::s].ravel()))
                         if masks.any() else float("nan"))
                results[src][c].append((image, pixel))
    tables = {src: {c: (float(np.mean([r[0] for r in v])), float(np.nanmean([r[1] for r in v])))
                    for c, v in by_rule.items()} for src, by_rule in results.items()}
    table = tables[least_regret(tables)]
    rule = max(settings.candidates, key=lambda c: table[c][1])  # first of equals
    image = max(settings.candidates, key=lambda c: table[c][0])
    return Choice(rule, "same" if image == rule else image, tables, n, len(scored))


def least_regret(tables: dict[str, Table]) -> str:
    """The key whose best image and best pixel AUROC trail the best of any key's least
    (the larger of the two gaps; the first of equals)."""
    best = {k: (max(v[0] for v in t.values()), max(v[1] for v in t.values()))
            for k, t in tables.items()}
    top = [max(b[m] for b in best.values()) for m in (0, 1)]
    return min(tables, key=lambda k: max(top[0] - best[k][0], top[1] - best[k][1]))


def _flat(feats: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(feats.reshape(-1, feats.shape[-1]), np.float32)
