"""SDXL backend without the real weights: a tiny random SDXL inpainting pipeline, saved to disk
and loaded through the same ``from_pretrained`` path users take with ``synth.model_id``."""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exdd.config import DataConfig, DemoConfig, SynthConfig
from exdd.data.readers import load_samples
from exdd.data.demo import make_demo
from exdd.errors import DataError, ModelError
from exdd.data.synth import read_provenance, regenerate, synthesize

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

TOKEN_LENGTH = 32
TEXT_WIDTH = 32
TIME_EMBED = 8


def _tokenizer(folder: Path) -> "transformers.CLIPTokenizer":
    """A character-level CLIP BPE tokenizer from a vocabulary written here (no hub)."""
    folder.mkdir(parents=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in string.ascii_lowercase + ",.":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return transformers.CLIPTokenizer(vocab=str(folder / "vocab.json"),
                                      merges=str(folder / "merges.txt"),
                                      model_max_length=TOKEN_LENGTH)


def _text_config(vocab_size: int) -> "transformers.CLIPTextConfig":
    return transformers.CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TEXT_WIDTH, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, projection_dim=TEXT_WIDTH, bos_token_id=0, eos_token_id=1,
        pad_token_id=1, hidden_act="gelu", max_position_embeddings=TOKEN_LENGTH)


@pytest.fixture(scope="module")
def tiny_sdxl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Randomly initialised SDXL inpainting pipeline (9-channel UNet like the real one)."""
    root = tmp_path_factory.mktemp("sdxl")
    tok = _tokenizer(root / "vocab")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=32, in_channels=9, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), norm_num_groups=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, transformer_layers_per_block=(1, 1),
        cross_attention_dim=2 * TEXT_WIDTH,  # both text encoders' hidden states, concatenated
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
        # six size/crop conditioning numbers plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TEXT_WIDTH,
    )
    vae = diffusers.AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
        norm_num_groups=8, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    scheduler = diffusers.EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading")
    pipe = diffusers.StableDiffusionXLInpaintPipeline(
        vae=vae, unet=unet, scheduler=scheduler, tokenizer=tok, tokenizer_2=tok,
        text_encoder=transformers.CLIPTextModel(_text_config(len(tok))),
        text_encoder_2=transformers.CLIPTextModelWithProjection(_text_config(len(tok))),
    )
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = DemoConfig(height=64, width=40, train_normal=3, train_defect=2, test_normal=1, test_defect=1)
    return make_demo(tmp_path_factory.mktemp("demo") / "data", cfg)


def _cfg(model_id: str) -> SynthConfig:
    return SynthConfig(backend="sdxl", model_id=model_id, work_size=64, num_inference_steps=2)


def test_generates_inpainted_samples_of_the_source_size(tiny_sdxl: Path, demo: Path,
                                                        tmp_path: Path) -> None:
    out = synthesize(demo, tmp_path / "syn", _cfg(str(tiny_sdxl)), DataConfig(), backend="sdxl",
                     count=2, seed=5)
    samples = load_samples(out)
    assert len(samples) == 2 and all(s.label == 1 and s.split == "train" for s in samples)
    records = read_provenance(out)
    real_masks = {str(s.mask.resolve()) for s in load_samples(demo, "train") if s.label == 1}
    assert [r.prompt for r in records] == ["copper metal scratches", "white marks on the wall"]
    for r in records:
        assert r.backend == "sdxl" and r.model_id == str(tiny_sdxl)
        assert r.negative_prompt == "smooth, plain, black, dark, shadow"
        assert r.source_mask in real_masks
        img = np.asarray(Image.open(out / r.image))
        src = np.asarray(Image.open(r.source_image))
        used = np.asarray(Image.open(out / r.mask)) > 0
        real = np.asarray(Image.open(r.source_mask)) > 0
        assert img.shape == src.shape == (64, 40)
        assert (used == real).all()  # same size here, so the used mask is the real one
        assert (img[~used] == src[~used]).all()
        assert (img[used] != src[used]).any()
    first, mask = regenerate(records[0])
    assert (np.asarray(first) == np.asarray(Image.open(out / records[0].image))).all()
    assert (np.asarray(mask) == np.asarray(Image.open(out / records[0].mask))).all()


def test_unreachable_weights_say_how_to_supply_them(demo: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="HF_HOME.*synth.model_id"):
        synthesize(demo, tmp_path / "syn", _cfg(str(tmp_path / "no-such-dir")), DataConfig(),
                   backend="sdxl", count=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="cannot load the SDXL inpainting weights"):
        synthesize(demo, tmp_path / "syn", _cfg(str(empty)), DataConfig(), backend="sdxl", count=1)
    assert not (tmp_path / "syn").exists()


def test_needs_real_defect_masks(tiny_sdxl: Path, tmp_path: Path) -> None:
    no_defects = make_demo(tmp_path / "clean", DemoConfig(height=32, width=32, train_normal=2,
                                                           train_defect=0, test_normal=1, test_defect=1))
    with pytest.raises(DataError, match="no ground-truth defect masks"):
        synthesize(no_defects, tmp_path / "syn", _cfg(str(tiny_sdxl)), DataConfig(), backend="sdxl",
                   count=1)
    assert not (tmp_path / "syn").exists()
