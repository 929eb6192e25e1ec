"""Models: two-stream ResNet (with optional SALCR part head) and the SDCL ViT; ``build_model`` picks one."""

from __future__ import annotations

from torch import nn

from raytrain_vireid.errors import UserError
from raytrain_vireid.models.resnet import TwoStreamResNet
from raytrain_vireid.models.vit import SDCLViT, build_vit

ARCHS = ("resnet", "vit")


def build_model(arch: str = "resnet", **kwargs) -> nn.Module:
    """Build ``"resnet"`` (:class:`TwoStreamResNet` kwargs: depth, pretrained, last_stride, gem_p, parts)
    or ``"vit"`` (:func:`build_vit` kwargs: config name, pretrained, ViTConfig field overrides).

    The model has ``heads`` (names of its BN-neck outputs) and ``feature_dims`` (head -> dim).
    """
    if arch == "resnet":
        return TwoStreamResNet(**kwargs)
    if arch == "vit":
        return build_vit(**kwargs)
    raise UserError(f"model.arch: unknown architecture {arch!r}; choose one of {ARCHS}")


def param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """One optimiser group with every trainable parameter (frozen BN-neck biases are left out)."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]


__all__ = ["ARCHS", "SDCLViT", "TwoStreamResNet", "build_model", "build_vit", "param_groups"]
