"""Offline defect renderer: scratches, spots/white marks, blotches and pits.

A defect is a soft alpha map (anti-aliased outline, no pasted rectangles) and a *shade*:
the defect pixel is the local illumination of the background scaled by ``1 + contrast *
shade`` plus a share of the background's own high-pass texture, so a defect follows the
surface's lighting and grain instead of looking stamped on. The mask is exactly the set of
pixels whose value changed by more than ``mask_delta``. Everything is drawn from one
``numpy`` generator, so a seed fully determines the result; the demo data set and the
procedural synthetic backend both use :func:`render_defects`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

from exdd.config import ProceduralConfig
from exdd.data.synth.images import mask_image, open_image, to_float, to_image

# Samples along a scratch's Bezier curve: enough for a smooth anti-aliased line.
_CURVE_POINTS = 48
# Harmonics of the outline wobble of round defects.
_WOBBLE_HARMONICS = 4

Layer = tuple[np.ndarray, np.ndarray]  # (alpha, shade), both (H, W) float32


def _uniform(rng: np.random.Generator, r: tuple[float, float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _segment_distance(px: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of points ``px`` (N, 2) to the polyline segments a[i]-b[i] (S, 2): (N,)."""
    ab = b - a
    t = ((px[:, None, :] - a[None]) * ab[None]).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-9)
    t = np.clip(t, 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.sqrt(((px[:, None, :] - nearest) ** 2).sum(-1)).min(axis=1)


def _scratch(rng: np.random.Generator, h: int, w: int, cfg: ProceduralConfig) -> Layer:
    """A thin quadratic-Bezier line with fading ends; bright or dark."""
    short = min(h, w)
    length = _uniform(rng, cfg.scratch_length) * short
    width = max(_uniform(rng, cfg.scratch_width) * short, 0.5)
    angle = rng.uniform(0, np.pi)
    centre = np.array([rng.uniform(0, h), rng.uniform(0, w)])
    direction = np.array([np.sin(angle), np.cos(angle)])
    p0, p2 = centre - direction * length / 2, centre + direction * length / 2
    normal = np.array([-direction[1], direction[0]])
    p1 = centre + normal * length * _uniform(rng, cfg.scratch_bend) * rng.choice([-1.0, 1.0])
    t = np.linspace(0.0, 1.0, _CURVE_POINTS)[:, None]
    curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2

    pad = width + 2 * cfg.edge_softness
    y0, x0 = np.floor(np.clip(curve.min(0) - pad, 0, [h, w])).astype(int)
    y1, x1 = np.ceil(np.clip(curve.max(0) + pad + 1, 0, [h, w])).astype(int)
    alpha = np.zeros((h, w), np.float32)
    if y1 <= y0 or x1 <= x0:
        return alpha, alpha
    yy, xx = np.mgrid[y0:y1, x0:x1]
    px = np.stack([yy.ravel() + 0.5, xx.ravel() + 0.5], axis=1)
    dist = _segment_distance(px, curve[:-1], curve[1:])
    a = np.clip((width / 2 - dist) / cfg.edge_softness + 0.5, 0.0, 1.0)
    # Fade in and out along the curve: real scratches taper.
    along = np.argmin(((px[:, None, :] - curve[None]) ** 2).sum(-1), axis=1) / (_CURVE_POINTS - 1)
    a *= np.clip(np.minimum(along, 1 - along) * 6.0, 0.0, 1.0) ** 0.5
    alpha[y0:y1, x0:x1] = a.reshape(yy.shape)
    shade = np.full((h, w), rng.choice([-1.0, 1.0]), np.float32)
    return alpha, shade


def _blob(rng: np.random.Generator, h: int, w: int, radius: float,
          cfg: ProceduralConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft, wobbly ellipse: alpha plus the normalised radial coordinate and centre offsets."""
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    aspect = rng.uniform(0.6, 1.0)
    rot = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    dy, dx = yy - cy, xx - cx
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = (-dx * np.sin(rot) + dy * np.cos(rot)) / aspect
    theta = np.arctan2(v, u)
    wobble = np.ones_like(theta)
    for k in range(2, 2 + _WOBBLE_HARMONICS):
        amplitude = cfg.roughness / k * rng.uniform(-1, 1)
        wobble += amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r_edge = radius * wobble
    dist = np.sqrt(u * u + v * v)
    alpha = np.clip((r_edge - dist) / cfg.edge_softness + 0.5, 0.0, 1.0).astype(np.float32)
    return alpha, (dist / np.maximum(r_edge, 1e-6)).astype(np.float32), np.stack([dy, dx])


def _spot(rng: np.random.Generator, h: int, w: int, cfg: ProceduralConfig) -> Layer:
    """A white mark: bright, dome-shaped density."""
    alpha, rel, _ = _blob(rng, h, w, _uniform(rng, cfg.spot_radius) * min(h, w), cfg)
    shade = np.clip(1.2 - rel * 0.6, 0.4, 1.0).astype(np.float32)
    return alpha, shade


def _blotch(rng: np.random.Generator, h: int, w: int, cfg: ProceduralConfig) -> Layer:
    """A large uneven stain: darker (or lighter) with a patchy, low-frequency density."""
    radius = _uniform(rng, cfg.blotch_radius) * min(h, w)
    alpha, _, _ = _blob(rng, h, w, radius, cfg)
    patchy = gaussian_filter(rng.standard_normal((h, w)).astype(np.float32), radius / 4)
    patchy = 0.6 + 0.4 * np.tanh(patchy / (patchy.std() + 1e-6))
    shade = patchy * rng.choice([-1.0, 1.0], p=[0.75, 0.25])
    return alpha, shade.astype(np.float32)


def _pit(rng: np.random.Generator, h: int, w: int, cfg: ProceduralConfig) -> Layer:
    """A small crater lit from one side: dark hollow, highlighted far rim."""
    radius = max(_uniform(rng, cfg.pit_radius) * min(h, w), 1.0)
    alpha, rel, offsets = _blob(rng, h, w, radius * 1.3, cfg)
    light = rng.uniform(0, 2 * np.pi)
    towards = (offsets[0] * np.sin(light) + offsets[1] * np.cos(light)) / radius
    shade = np.where(rel < 0.75, -1.0, np.clip(towards, -1.0, 1.0))
    return alpha, shade.astype(np.float32)


_SHAPES = {"scratch": _scratch, "spot": _spot, "blotch": _blotch, "pit": _pit}


def render_defects(image: np.ndarray, rng: np.random.Generator,
                   cfg: ProceduralConfig) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Draw ``cfg.defects_per_image`` random defects onto ``image`` (H, W, C) float in [0, 1].

    Returns the new image, the boolean mask of pixels changed by more than
    ``cfg.mask_delta``, and the kinds drawn. A defect that misses the image, or would not
    change any pixel by more than ``mask_delta``, is redrawn.
    """
    h, w = image.shape[:2]
    sigma = max(cfg.light_sigma * min(h, w), 1.0)
    light = gaussian_filter(image, (sigma, sigma, 0))
    texture = image - light
    out = image.copy()
    kinds: list[str] = []
    n = int(rng.integers(cfg.defects_per_image[0], cfg.defects_per_image[1] + 1))
    while len(kinds) < n:
        kind = str(rng.choice(cfg.kinds))
        alpha, shade = _SHAPES[kind](rng, h, w, cfg)
        if alpha.max() < 0.5:
            continue
        contrast = _uniform(rng, cfg.contrast)
        bright = shade[..., None] > 0
        # Brightening heads towards white, darkening towards black: never past either.
        target = np.where(bright, light + contrast * shade[..., None] * (1 - light),
                          light * (1 + contrast * shade[..., None]))
        target = target + cfg.texture_keep * texture
        drawn = np.clip(out + alpha[..., None] * (target - out), 0.0, 1.0)
        if np.abs(drawn - out).max() <= cfg.mask_delta:
            continue  # invisible on this background: draw another
        out = drawn
        kinds.append(kind)
    out = out.astype(np.float32)
    mask = np.abs(out - image).max(axis=2) > cfg.mask_delta
    return out, mask, kinds


def generate(source: Path, seed: int,
             cfg: ProceduralConfig) -> tuple[Image.Image, Image.Image, list[str]]:
    """One sample from a defect-free image file: (image, mask, kinds); same seed, same pixels."""
    rng = np.random.default_rng(seed)
    out, mask, kinds = render_defects(to_float(open_image(source)), rng, cfg)
    return to_image(out), mask_image(mask), kinds


class ProceduralBackend:
    """The offline synthetic backend: no model, no prompt, no real mask needed."""

    name = "procedural"
    needs_masks = False
    prompted = False
    model_id = None

    def __init__(self, cfg: ProceduralConfig) -> None:
        self.cfg = cfg

    def params(self) -> dict[str, Any]:
        return self.cfg.model_dump(mode="json")

    def generate(self, source: Path, source_mask: Path | None, prompt: str | None,
                 seed: int) -> tuple[Image.Image, Image.Image, dict[str, Any]]:
        img, mask, kinds = generate(source, seed, self.cfg)
        return img, mask, {"kinds": kinds}
