"""SDCL ViT: per-modality patch embeddings, shared blocks, a deep and a shallow head.

Built from torchvision's ``EncoderBlock`` (attention + MLP + pre-norm residuals); this wrapper adds
non-square inputs (e.g. 288×144 at stride 16 -> 18×9 patches), drop-path and the two heads:

- deep:    tokens → blocks 0..L-2 → ``b1`` (copy of block L-1 + LayerNorm) → CLS → BN → ``"deep"``
- shallow: [CLS after blocks 0..L-2 ; patch tokens right after patch + position embedding, before any
           block] → ``b2`` (another copy of block L-1 + LayerNorm) → CLS → own BN → ``"shallow"``

The prepended token is the CLS token that enters ``b1`` (as TransReID's JPM head takes it).
Patch embedding (``stem``): ``linear`` (one Conv2d of kernel ``patch_size``, the plain ViT) or ``ics``
(TransReID-SSL's IBN convolutional stem, which its LUPerson checkpoints such as
``vit_base_ics_cfs_lup.pth`` were trained with: three convolutions at half resolution, then a Conv2d of
half the patch size; each modality has its own copy, like the linear embedding).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vision_transformer import EncoderBlock
from torchvision.ops import StochasticDepth

from raytrain_vireid.errors import UserError
from raytrain_vireid.models.neck import bn_neck
from raytrain_vireid.models.weights import LoadReport, load_matching, read_state_dict

_LayerNorm = partial(nn.LayerNorm, eps=1e-6)


@dataclass(frozen=True)
class ViTConfig:
    """Geometry of the ViT: image size (H, W), patch size and stride, width, depth, heads, MLP ratio."""

    image_size: tuple[int, int] = (288, 144)
    patch_size: int = 16
    stride: int = 16
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    drop_path: float = 0.1
    stem: str = "linear"  # linear | ics

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (rows, cols) of a conv with kernel ``patch_size`` and ``stride`` on ``image_size``."""
        return tuple((s - self.patch_size) // self.stride + 1 for s in self.image_size)  # type: ignore[return-value]


VIT_CONFIGS = {
    "vit_base": ViTConfig(),
    "vit_tiny": ViTConfig(image_size=(128, 64), dim=192, depth=4, num_heads=3, drop_path=0.0),
}


class Block(EncoderBlock):
    """torchvision ``EncoderBlock`` with stochastic depth (drop-path) on both residual branches."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, drop_path: float) -> None:
        super().__init__(num_heads, dim, mlp_dim, dropout=0.0, attention_dropout=0.0, norm_layer=_LayerNorm)
        self.drop_path = StochasticDepth(drop_path, mode="row")

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - torchvision's argument name
        y = self.ln_1(input)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = input + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.ln_2(x)))


class IBN(nn.Module):
    """Instance-batch normalisation: InstanceNorm2d (affine) on the first half of the channels, BatchNorm2d on
    the rest. The attribute names ``IN`` and ``BN`` are those of TransReID-SSL's checkpoints."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.half = channels // 2
        self.IN = nn.InstanceNorm2d(self.half, affine=True)  # noqa: N815 - checkpoint key names
        self.BN = nn.BatchNorm2d(channels - self.half)  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat([self.IN(first.contiguous()), self.BN(second.contiguous())], dim=1)


ICS_WIDTH = 64  # channels of the ICS stem's convolutions


def ics_stem() -> nn.Sequential:
    """TransReID-SSL's stem: 7x7/2 conv -> IBN -> ReLU -> 3x3 conv -> IBN -> ReLU -> 3x3 conv -> BN -> ReLU
    (no conv biases); indices 0..8 match the checkpoints' ``patch_embed.conv.*`` keys."""

    def conv(c_in: int, kernel: int, stride: int) -> nn.Conv2d:
        return nn.Conv2d(c_in, ICS_WIDTH, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False)

    return nn.Sequential(conv(3, 7, 2), IBN(ICS_WIDTH), nn.ReLU(inplace=True), conv(ICS_WIDTH, 3, 1), IBN(ICS_WIDTH),
                         nn.ReLU(inplace=True), conv(ICS_WIDTH, 3, 1), nn.BatchNorm2d(ICS_WIDTH), nn.ReLU(inplace=True))


class PatchEmbed(nn.Module):
    """Patch embedding -> tokens (B, rows·cols, dim): ``linear`` = Conv2d(3, dim, patch, stride); ``ics`` = the
    stride-2 ICS stem, then Conv2d(64, dim, patch/2, stride/2), which gives the same grid on even image sizes."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        if cfg.stem not in ("linear", "ics"):
            raise UserError(f"model.vit_stem: unknown stem {cfg.stem!r}; choose linear or ics")
        if cfg.stem == "ics":
            if cfg.patch_size % 2 or cfg.stride % 2:
                raise UserError(f"model.vit_stem: ics needs an even patch size and stride, got {cfg.patch_size} "
                                f"and {cfg.stride}")
            self.conv = ics_stem()
            self.proj = nn.Conv2d(ICS_WIDTH, cfg.dim, kernel_size=cfg.patch_size // 2, stride=cfg.stride // 2)
        else:
            self.conv = nn.Identity()
            self.proj = nn.Conv2d(3, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x)).flatten(2).transpose(1, 2)


def _head(block: nn.Module, dim: int) -> nn.Sequential:
    return nn.Sequential(copy.deepcopy(block), _LayerNorm(dim))


class SDCLViT(nn.Module):
    """ViT with ``patch_embed`` (visible) and ``patch_embed_ir`` (infrared), shared CLS/positions/blocks.

    ``forward(visible=x_v, infrared=x_r)`` returns BN features ``"deep"`` and ``"shallow"`` (B, dim),
    rows ordered [visible; infrared]; inputs must be ``cfg.image_size``.
    """

    heads = ("deep", "shallow")

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.num_heads:
            raise UserError(f"model.dim: {cfg.dim} is not divisible by num_heads {cfg.num_heads}")
        if cfg.depth < 2:
            raise UserError(f"model.depth: {cfg.depth} must be at least 2 (shared blocks + head block)")
        self.cfg = cfg
        rows, cols = cfg.grid
        self.patch_embed = PatchEmbed(cfg)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + rows * cols, cfg.dim))
        rates = torch.linspace(0, cfg.drop_path, cfg.depth).tolist()  # stochastic-depth rule: linear in depth
        mlp_dim = int(cfg.dim * cfg.mlp_ratio)
        blocks = [Block(cfg.dim, cfg.num_heads, mlp_dim, rate) for rate in rates]
        self.blocks = nn.ModuleList(blocks[:-1])
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.b1 = _head(blocks[-1], cfg.dim)
        self.b2 = _head(blocks[-1], cfg.dim)
        self.patch_embed_ir = copy.deepcopy(self.patch_embed)
        self.bn_deep = bn_neck(cfg.dim)
        self.bn_shallow = bn_neck(cfg.dim)
        self.feature_dims = {"deep": cfg.dim, "shallow": cfg.dim}
        self.load_report: LoadReport | None = None

    def embed_tokens(self, visible: torch.Tensor | None, infrared: torch.Tensor | None) -> torch.Tensor:
        """[CLS; patches] + positions for rows [visible; infrared] -> (B, 1 + rows·cols, dim), pre-block."""
        tokens = [embed(x) for embed, x in ((self.patch_embed, visible), (self.patch_embed_ir, infrared))
                  if x is not None]
        if not tokens:
            raise ValueError("SDCLViT needs at least one of visible=, infrared=")
        x = torch.cat(tokens) if len(tokens) > 1 else tokens[0]
        if x.shape[1] + 1 != self.pos_embed.shape[1]:
            raise ValueError(f"input gives {x.shape[1]} patches, the model expects {self.pos_embed.shape[1] - 1} "
                             f"(image size {self.cfg.image_size})")
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed

    def forward(self, visible: torch.Tensor | None = None,
                infrared: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        tokens = self.embed_tokens(visible, infrared)
        x = tokens
        for block in self.blocks:
            x = block(x)
        deep = self.b1(x)[:, 0]
        shallow = self.b2(torch.cat([x[:, :1], tokens[:, 1:]], dim=1))[:, 0]
        return {"deep": self.bn_deep(deep), "shallow": self.bn_shallow(shallow)}


def build_vit(config: str | ViTConfig = "vit_base", pretrained: str | os.PathLike | None = None,
              **overrides) -> SDCLViT:
    """Build a named config (``vit_base``, ``vit_tiny``) with field overrides, then load local weights."""
    if isinstance(config, str):
        if config not in VIT_CONFIGS:
            raise UserError(f"model.vit: unknown config {config!r}; choose one of {sorted(VIT_CONFIGS)}")
        config = VIT_CONFIGS[config]
    unknown = sorted(set(overrides) - set(config.__dict__))
    if unknown:
        raise UserError(f"model: unknown ViT option(s) {', '.join(unknown)}; known: {', '.join(config.__dict__)}")
    if "image_size" in overrides:
        overrides["image_size"] = tuple(overrides["image_size"])
    model = SDCLViT(ViTConfig(**{**config.__dict__, **overrides}))
    if pretrained is not None:
        load_vit_weights(model, pretrained)
    return model


# timm block names -> torchvision EncoderBlock names
_BLOCK_RENAMES = (("norm1.", "ln_1."), ("norm2.", "ln_2."), ("attn.qkv.weight", "self_attention.in_proj_weight"),
                  ("attn.qkv.bias", "self_attention.in_proj_bias"), ("attn.proj.", "self_attention.out_proj."),
                  ("mlp.fc1.", "mlp.0."), ("mlp.fc2.", "mlp.3."))


def _rename_block(rest: str) -> str:
    for old, new in _BLOCK_RENAMES:
        if rest.startswith(old):
            return new + rest[len(old):]
    return rest


def timm_to_sdcl(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """Map timm/TransReID ViT keys to :class:`SDCLViT` names.

    ``blocks.i`` (i < depth-1) -> ``blocks.i``; ``blocks.{depth-1}`` -> ``b1.0`` and ``b2.0``; final
    ``norm`` -> ``b1.1`` and ``b2.1``; ``patch_embed.*`` -> ``patch_embed.*`` and ``patch_embed_ir.*``.
    Other keys (e.g. a classifier ``head``) keep their names and are reported unexpected.
    """
    out: dict[str, torch.Tensor] = {}
    last = depth - 1
    for key, value in state.items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            name = _rename_block(rest)
            targets = [f"b1.0.{name}", f"b2.0.{name}"] if int(index) == last else [f"blocks.{index}.{name}"]
        elif key.startswith("norm."):
            targets = [f"b1.1.{key[5:]}", f"b2.1.{key[5:]}"]
        elif key.startswith("patch_embed."):
            targets = [key, "patch_embed_ir." + key[len("patch_embed."):]]
        else:
            targets = [key]
        out.update({target: value for target in targets})
    return out


def _source_grid(count: int, target: tuple[int, int]) -> tuple[int, int]:
    """Guess the checkpoint's patch grid from its number of patches: the target grid, square, or 2:1."""
    if count == target[0] * target[1]:
        return target
    side = math.isqrt(count)
    if side * side == count:
        return side, side
    half = math.isqrt(count // 2)
    if 2 * half * half == count:
        return 2 * half, half
    raise UserError(f"pos_embed: cannot infer the patch grid of {count} checkpoint positions "
                    f"(not {target[0]}x{target[1]}, square or 2:1)")


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize a (1, 1+n, D) position embedding (CLS first) to ``grid`` = (rows, cols)."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    rows, cols = _source_grid(patches.shape[1], grid)
    if (rows, cols) == tuple(grid):
        return pos_embed
    dim = patches.shape[-1]
    patches = patches.reshape(1, rows, cols, dim).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=tuple(grid), mode="bilinear", align_corners=False)
    return torch.cat([cls, patches.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def load_vit_weights(model: SDCLViT, path: str | os.PathLike) -> LoadReport:
    """Load a local timm-style ViT checkpoint (e.g. TransReID-SSL ``vit_base_*_lup.pth``) into ``model``.

    Keys are mapped by :func:`timm_to_sdcl`, ``pos_embed`` is resized to the model's grid; the report
    (also logged) lists missing/unexpected/mismatched keys. UserError for a missing/unreadable file or
    when nothing matches.
    """
    state = read_state_dict(path)
    if "pos_embed" in state:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], model.cfg.grid)
    model.load_report = load_matching(model, timm_to_sdcl(state, model.cfg.depth), os.fspath(path))
    return model.load_report
