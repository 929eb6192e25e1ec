"""SALCR part branch (FGSAL): horizontal strips, SAFL part prototypes, query attention across images.

Shapes: a layer4 map (B, D, H, W) is cut into P horizontal strips. H need not be divisible by P: the
strips follow ``torch.tensor_split`` (the first ``H % P`` strips get one extra row; e.g. H=4, P=3 ->
rows 2, 1, 1), so strips hold different numbers of positions. They are stored padded to the largest
strip as (B, P, S, D) with a (P, S) boolean mask of real positions; padded positions get zero weight.
At 288×144 the map is 18×9, so every strip is 6×9 = 54 positions and the mask is all true.

How the SALCR method uses it (stage 2, batch ordered [v; a; r], equal thirds of size B, where row i of
each third belongs to the same pseudo-identity pair):

    out = model(visible=torch.cat([x_v, x_a]), infrared=x_r, partner_index=salcr_partners(B))
    out["pg"], out["pg1"], out["pg2"]   # (3B, P, D) each, BN-neck part features

``pg`` = each image's own aligned parts, ``pg1`` = its prototypes attending to the cross-modal partner's
map (v→r, a→r, r→v), ``pg2`` = attending to the other view (v→a, a→v, r→a). All three go through the
same BatchNorm1d(P·D) on the concatenation over parts; the part losses take part ``p`` as ``[:, p]``
against that part's memories. In eval mode the model returns each image's own aligned part ``p`` as
``"part<p>"`` (:func:`part_keys`) for the per-epoch part memories; the test feature is the global one only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from raytrain_vireid.models.neck import bn_neck

PARTNER_KEYS = {"pg1": "cross", "pg2": "view"}


def part_keys(parts: int) -> tuple[str, ...]:
    """Names of the extracted (eval-mode) part features: ``("part0", ..., "part<P-1>")``."""
    return tuple(f"part{p}" for p in range(parts))


def split_strips(maps: torch.Tensor, parts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut (B, D, H, W) into ``parts`` horizontal strips -> padded (B, P, S, D) positions and (P, S) mask."""
    if maps.shape[2] < parts:
        raise ValueError(f"feature map height {maps.shape[2]} is smaller than the number of parts {parts}")
    strips = [s.flatten(2).transpose(1, 2) for s in torch.tensor_split(maps, parts, dim=2)]  # (B, S_p, D)
    size = max(s.shape[1] for s in strips)
    padded = maps.new_zeros(maps.shape[0], parts, size, maps.shape[1])
    mask = torch.zeros(parts, size, dtype=torch.bool, device=maps.device)
    for p, strip in enumerate(strips):  # loop over the P (=3) parts, not over samples
        padded[:, p, : strip.shape[1]] = strip
        mask[p, : strip.shape[1]] = True
    return padded, mask


class SAFL(nn.Module):
    """Semantic-aligned feature learning: one learnable token per part; sigmoid(token·x) attention,
    renormalised to sum to 1 within the strip; the weighted sum is the part prototype."""

    def __init__(self, dim: int, parts: int) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(parts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.tokens, std=1.0 / math.sqrt(self.tokens.shape[1]))

    def attention(self, strips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, P, S, D), (P, S) -> attention weights (B, P, S), zero on padding, summing to 1 per strip."""
        weights = torch.sigmoid(torch.einsum("bpsd,pd->bps", strips, self.tokens)) * mask
        return weights / weights.sum(dim=-1, keepdim=True)

    def forward(self, strips: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Part prototypes (B, P, D)."""
        return torch.einsum("bps,bpsd->bpd", self.attention(strips, mask), strips)


def query_attention(queries: torch.Tensor, strips: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of part queries (B, P, D) over the same part's strip positions (B, P, S, D).

    Row b of ``queries`` attends to row b of ``strips`` (index ``strips`` beforehand to pick another
    image); logits are scaled by 1/√D; ``mask`` (P, S) excludes padded positions. Returns (B, P, D).
    """
    logits = torch.einsum("bpd,bpsd->bps", queries, strips) / math.sqrt(queries.shape[-1])
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return torch.einsum("bps,bpsd->bpd", logits.softmax(dim=-1), strips)


def salcr_partners(batch: int, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """Partner rows for a batch ordered [v; a; r] of three thirds of size ``batch``.

    ``"cross"``: v→r, a→r, r→v; ``"view"``: v→a, a→v, r→a, each a (3B,) LongTensor of row indices.
    """
    i = torch.arange(batch, device=device)
    v, a, r = i, i + batch, i + 2 * batch
    return {"cross": torch.cat([r, r, v]), "view": torch.cat([a, v, a])}


class PartHead(nn.Module):
    """FGSAL part head: SAFL prototypes, query attention on own/partner strips, one BN over P·D.

    ``forward(maps, partner_index)`` returns ``{"pg": (N, P, D)}`` plus ``"pg1"`` (partner_index
    ``"cross"``) and ``"pg2"`` (``"view"``) when those indices are given; see the module docstring.
    """

    def __init__(self, dim: int, parts: int = 3) -> None:
        super().__init__()
        self.parts = parts
        self.safl = SAFL(dim, parts)
        self.bn = bn_neck(parts * dim)

    def reset_parameters(self) -> None:
        """Re-initialise the part tokens and the part BN (SALCR does this at the start of stage 2)."""
        self.safl.reset_parameters()
        self.bn.reset_parameters()
        self.bn.bias.requires_grad_(False)

    def forward(self, maps: torch.Tensor,
                partner_index: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        strips, mask = split_strips(maps, self.parts)
        queries = self.safl(strips, mask)
        aligned = {"pg": query_attention(queries, strips, mask)}
        for key, partner in PARTNER_KEYS.items():
            if partner_index is not None and partner in partner_index:
                aligned[key] = query_attention(queries, strips[partner_index[partner]], mask)
        n, dim = maps.shape[0], maps.shape[1]
        normed = self.bn(torch.cat(list(aligned.values())).flatten(1)).view(-1, self.parts, dim)
        return dict(zip(aligned, normed.split(n)))
