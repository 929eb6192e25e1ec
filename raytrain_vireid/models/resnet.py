"""Two-stream ResNet (AGW/DDAG style): per-modality stems, shared layer1–4, GeM + BN neck."""

from __future__ import annotations

import copy
import os
from collections import OrderedDict

import torch
import torchvision
from torch import nn

from raytrain_vireid.errors import UserError
from raytrain_vireid.models.neck import bn_neck
from raytrain_vireid.models.parts import PartHead, part_keys
from raytrain_vireid.models.pooling import GeM
from raytrain_vireid.models.weights import LoadReport, load_matching, read_state_dict

DEPTHS = (18, 34, 50)
_STEM = ("conv1", "bn1", "relu", "maxpool")
_STEM_NAMES = ("visible_stem", "infrared_stem")


def _set_last_stride_one(layer4: nn.Sequential) -> None:
    """Make layer4 keep its input resolution: every stride-2 conv of its first block (incl. downsample) -> 1."""
    for module in layer4[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
            module.stride = (1, 1)


def _imagenet_state_dict(depth: int) -> dict[str, torch.Tensor]:
    weights = torchvision.models.get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    try:
        return weights.get_state_dict(progress=False)
    except Exception as exc:  # urllib/HTTP/SSL/OS errors all mean "could not fetch"
        raise UserError(f"pretrained=imagenet: cannot download torchvision {weights} ({type(exc).__name__}); "
                        "pass --pretrained PATH to a local resnet state dict") from exc


class TwoStreamResNet(nn.Module):
    """Two-stream ResNet-{18,34,50} for visible/infrared re-identification.

    ``forward(visible=x_v, infrared=x_r)`` (either may be None) returns, with rows ordered
    [visible; infrared]: ``"global"`` BN-neck feature (B, D), ``"pool"`` GeM-pooled pre-BN feature (B, D)
    and ``"maps"`` the layer4 map (B, D, H/16, W/16) with last stride 1.
    ``pretrained``: None (random init), ``"imagenet"`` (torchvision weights, downloaded) or a path to a
    torchvision-style state dict (its ``conv1``/``bn1`` fill both stems) or to a saved model of this class.
    ``parts`` > 0 adds a SALCR :class:`PartHead` (``self.part_head``). In training mode it runs only when a
    ``partner_index`` is given, adding its ``"pg"``/``"pg1"``/``"pg2"`` outputs (see ``parts.py``; without one
    the head is idle, as in SALCR stage 1). In eval mode each image's own aligned part features are returned
    as ``"part0"``.. (B, D) and listed in ``feature_dims`` (so they are extracted for part memories), but they
    are not ``heads``: the test feature stays the global one.
    """

    heads = ("global",)

    def __init__(self, depth: int = 50, pretrained: str | os.PathLike | None = None, last_stride: int = 1,
                 gem_p: float = 3.0, parts: int = 0) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise UserError(f"model.depth: {depth} is not one of {DEPTHS}")
        if last_stride not in (1, 2):
            raise UserError(f"model.last_stride: {last_stride} must be 1 or 2")
        self.depth = depth
        base = getattr(torchvision.models, f"resnet{depth}")(weights=None)
        self.visible_stem = nn.Sequential(OrderedDict((name, getattr(base, name)) for name in _STEM))
        self.infrared_stem = copy.deepcopy(self.visible_stem)
        self.layer1, self.layer2, self.layer3, self.layer4 = base.layer1, base.layer2, base.layer3, base.layer4
        if last_stride == 1:
            _set_last_stride_one(self.layer4)
        dim = base.fc.in_features
        self.pool = GeM(gem_p)
        self.neck = bn_neck(dim)
        self.feature_dims = {"global": dim, **dict.fromkeys(part_keys(parts), dim)}
        self.part_head = PartHead(dim, parts) if parts > 0 else None
        self.load_report: LoadReport | None = None
        if pretrained is not None:
            self.load_pretrained(pretrained)

    def load_pretrained(self, pretrained: str | os.PathLike) -> LoadReport:
        """Load ``"imagenet"`` or a local state dict; torchvision ``conv1``/``bn1`` keys go to both stems."""
        if str(pretrained) == "imagenet":
            state, source = _imagenet_state_dict(self.depth), f"torchvision resnet{self.depth} IMAGENET1K_V1"
        else:
            state, source = read_state_dict(pretrained), os.fspath(pretrained)
        self.load_report = load_matching(self, _to_two_stream_keys(state), source)
        return self.load_report

    def backbone(self, visible: torch.Tensor | None, infrared: torch.Tensor | None) -> torch.Tensor:
        """Per-modality stems, concatenation [visible; infrared], shared layer1–4 -> layer4 map."""
        stems = [stem(x) for stem, x in ((self.visible_stem, visible), (self.infrared_stem, infrared))
                 if x is not None]
        if not stems:
            raise ValueError("TwoStreamResNet needs at least one of visible=, infrared=")
        x = torch.cat(stems) if len(stems) > 1 else stems[0]
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, visible: torch.Tensor | None = None,
                infrared: torch.Tensor | None = None,
                partner_index: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        maps = self.backbone(visible, infrared)
        pooled = self.pool(maps)
        out = {"global": self.neck(pooled), "pool": pooled, "maps": maps}
        if self.part_head is None:
            return out
        if not self.training:
            out.update(zip(part_keys(self.part_head.parts), self.part_head(maps)["pg"].unbind(1)))
        elif partner_index is not None:
            out.update(self.part_head(maps, partner_index))
        return out


def _to_two_stream_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename torchvision stem keys (``conv1.*``, ``bn1.*``) to both stems; other keys pass through."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.split(".", 1)[0] in _STEM:
            for stem in _STEM_NAMES:
                out[f"{stem}.{key}"] = value
        else:
            out[key] = value
    return out
