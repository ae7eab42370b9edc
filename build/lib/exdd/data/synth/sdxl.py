"""The paper's synthetic-defect backend: SDXL inpainting of real defect masks.

Each sample paints a prompt ("copper metal scratches", "white marks on the wall") into a
real ground-truth defect mask placed on a defect-free training image, at ``work_size``
square, then resizes back to the source size. Outside the mask the source pixels are kept
exactly, so the written mask covers every changed pixel. diffusers and torch are imported
only here, and only when this backend is used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from exdd.config import SynthConfig
from exdd.errors import ModelError
from exdd.data.synth.images import is_gray, mask_image, open_image

PIPELINE_CLASS = "StableDiffusionXLInpaintPipeline"


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError("synth.device is 'cuda' but no CUDA device is available")
    return device


def _unreachable(model_id: str, err: Exception) -> ModelError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelError(
        f"{model_id}: cannot load the SDXL inpainting weights ({reason}). Supply them one of "
        f"three ways: download once where the hub is reachable into the Hugging Face cache "
        f"and point HF_HOME at it (`huggingface-cli download {model_id}`); or save the "
        f"pipeline with save_pretrained and set synth.model_id (params.yaml or --model-id) "
        f"to that local directory; or run with network access so it downloads"
    )


def load_pipeline(model_id: str, device: str) -> Any:
    """Load the inpainting pipeline from a local directory, the HF cache, or the hub.

    fp16 on CUDA (the paper's setting and half the memory), fp32 on CPU where fp16 is slow
    or unsupported.
    """
    import torch
    from diffusers import StableDiffusionXLInpaintPipeline

    local = Path(model_id).expanduser()
    if model_id.startswith((".", "/", "~")) and not local.is_dir():
        raise _unreachable(model_id, FileNotFoundError("local directory does not exist"))
    dtype = torch.float16 if device == "cuda" else torch.float32
    try:
        pipe = StableDiffusionXLInpaintPipeline.from_pretrained(
            str(local) if local.is_dir() else model_id, torch_dtype=dtype)
    except (OSError, ValueError, RuntimeError) as err:
        raise _unreachable(model_id, err) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


class SDXLBackend:
    """Inpaints prompts into real defect masks; one seeded generator per sample."""

    name = "sdxl"
    needs_masks = True
    prompted = True

    def __init__(self, cfg: SynthConfig, mask_threshold: int) -> None:
        self.cfg = cfg
        self.mask_threshold = mask_threshold
        self.model_id = cfg.model_id
        self.device = resolve_device(cfg.device)
        self.pipe = load_pipeline(cfg.model_id, self.device)

    def params(self) -> dict[str, Any]:
        """The settings that, with model, prompt and seed, determine a sample."""
        keys = ("num_inference_steps", "guidance_scale", "strength", "padding_mask_crop",
                "work_size")
        return {**{k: getattr(self.cfg, k) for k in keys}, "mask_threshold": self.mask_threshold,
                "device": self.device}

    def generate(self, source: Path, source_mask: Path | None, prompt: str | None,
                 seed: int) -> tuple[Image.Image, Image.Image, dict[str, Any]]:
        import torch

        if source_mask is None or prompt is None:
            raise ValueError("the SDXL backend needs a source mask and a prompt")
        base = open_image(source)
        size = base.size
        # The real mask, placed on this image: any coverage after resizing counts.
        mask = open_image(source_mask).convert("L").point(
            lambda v: 255 if v > self.mask_threshold else 0).resize(size, Image.BILINEAR)
        used = np.asarray(mask) > 0
        work = (self.cfg.work_size, self.cfg.work_size)
        rgb = base.convert("RGB")
        result = self.pipe(
            prompt=prompt,
            negative_prompt=self.cfg.negative_prompt,
            image=rgb.resize(work, Image.BICUBIC),
            mask_image=mask_image(used).resize(work, Image.NEAREST),
            height=work[1],
            width=work[0],
            num_inference_steps=self.cfg.num_inference_steps,
            guidance_scale=self.cfg.guidance_scale,
            strength=self.cfg.strength,
            padding_mask_crop=self.cfg.padding_mask_crop or None,
            generator=torch.Generator(device=self.device).manual_seed(seed),
        ).images[0]
        painted = np.asarray(result.convert("RGB").resize(size, Image.BICUBIC))
        out = np.where(used[..., None], painted, np.asarray(rgb))
        img = Image.fromarray(out.astype(np.uint8))
        return (img.convert("L") if is_gray(base) else img), mask_image(used), {}
