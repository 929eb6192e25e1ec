"""Embedding helper: flip averaging, per-head normalisation, modality routing, mode restore."""

import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid import INFRARED, VISIBLE
from raytrain_vireid.models import build_model
from raytrain_vireid.models.features import concat_heads, embed


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet", depth=18)


def test_embed_is_flip_averaged_normalised_and_restores_mode(model):
    x = torch.randn(3, 3, 64, 32)
    model.train()
    feats = embed(model, x, VISIBLE)
    assert model.training and set(feats) == {"global"}
    with torch.no_grad():
        model.eval()
        expected = F.normalize(model(visible=x)["global"] + model(visible=x.flip(-1))["global"], dim=1)
        plain = F.normalize(model(visible=x)["global"], dim=1)
    torch.testing.assert_close(feats["global"], expected)
    torch.testing.assert_close(embed(model, x, VISIBLE, flip=False)["global"], plain)
    assert not model.training and not feats["global"].requires_grad


def test_embed_routes_modality_to_its_stem(model):
    x = torch.randn(2, 3, 64, 32)
    before = embed(model, x, VISIBLE)["global"]
    with torch.no_grad():
        model.infrared_stem.conv1.weight.mul_(-1)
    torch.testing.assert_close(embed(model, x, VISIBLE)["global"], before)
    assert not torch.allclose(embed(model, x, INFRARED)["global"], before)
    with pytest.raises(ValueError, match="modality must be"):
        embed(model, x, 2)


def test_concat_heads_by_hand():
    feats = {"deep": torch.tensor([[3.0, 0.0]]), "shallow": torch.tensor([[0.0, 4.0]]), "x": torch.ones(1, 1)}
    torch.testing.assert_close(concat_heads(feats, ("deep", "shallow")), torch.tensor([[0.6, 0.0, 0.0, 0.8]]))


def test_vit_embed_has_both_heads():
    torch.manual_seed(0)
    vit = build_model("vit", config="vit_tiny")
    feats = embed(vit, torch.randn(2, 3, 128, 64), INFRARED)
    assert set(feats) == {"deep", "shallow"}
    torch.testing.assert_close(feats["shallow"].norm(dim=1), torch.ones(2))
    assert concat_heads(feats, vit.heads).shape == (2, 384)
