"""SALCR part head: strips, SAFL attention, query attention, partner indexing."""

import math

import torch

from raytrain_vireid.models.parts import SAFL, PartHead, query_attention, salcr_partners, split_strips
from raytrain_vireid.models.resnet import TwoStreamResNet


def test_split_strips_uneven_height_and_mask():
    maps = torch.arange(2 * 1 * 4 * 2, dtype=torch.float32).view(2, 1, 4, 2)  # H=4 -> rows 2,1,1
    strips, mask = split_strips(maps, 3)
    assert strips.shape == (2, 3, 4, 1)
    assert mask.tolist() == [[True] * 4, [True, True, False, False], [True, True, False, False]]
    assert strips[0, :, :, 0].tolist() == [[0, 1, 2, 3], [4, 5, 0, 0], [6, 7, 0, 0]]
    even, even_mask = split_strips(torch.randn(1, 5, 18, 9), 3)
    assert even.shape == (1, 3, 54, 5) and bool(even_mask.all())


def test_safl_weights_sum_to_one_within_strip_and_zero_on_padding():
    torch.manual_seed(0)
    strips, mask = split_strips(torch.randn(3, 8, 5, 2), 3)  # rows 2,2,1
    safl = SAFL(8, 3)
    weights = safl.attention(strips, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 3))
    assert torch.all(weights[:, 2, 2:] == 0)
    # prototype = sum_s a_s x_s with a = sigmoid(t.x) / sum sigmoid(t.x), by hand for one strip
    x = strips[1, 0, :4]
    raw = torch.sigmoid(x @ safl.tokens[0])
    torch.testing.assert_close(safl(strips, mask)[1, 0], (raw / raw.sum()) @ x)


def test_query_attention_matches_naive_loop():
    torch.manual_seed(0)
    b, p, s, d = 2, 3, 4, 5
    q, strips = torch.randn(b, p, d), torch.randn(b, p, s, d)
    mask = torch.ones(p, s, dtype=torch.bool)
    mask[2, 3] = False
    expected = torch.zeros(b, p, d)
    for i in range(b):
        for j in range(p):
            keep = mask[j]
            logits = torch.stack([q[i, j] @ strips[i, j, k] for k in range(s) if keep[k]]) / math.sqrt(d)
            weights = torch.softmax(logits, 0)
            expected[i, j] = sum(w * strips[i, j, k] for w, k in zip(weights, [k for k in range(s) if keep[k]]))
    torch.testing.assert_close(query_attention(q, strips, mask), expected)


def test_salcr_partners_by_hand():
    partners = salcr_partners(2)  # rows: v0 v1 a0 a1 r0 r1
    assert partners["cross"].tolist() == [4, 5, 4, 5, 0, 1]  # v->r, a->r, r->v
    assert partners["view"].tolist() == [2, 3, 0, 1, 2, 3]  # v->a, a->v, r->a


def test_part_head_attends_to_partner_maps():
    torch.manual_seed(0)
    head = PartHead(dim=6, parts=3).eval()
    maps = torch.randn(6, 6, 6, 3)
    partners = salcr_partners(2)
    out = head(maps, partners)
    assert set(out) == {"pg", "pg1", "pg2"} and all(v.shape == (6, 3, 6) for v in out.values())
    strips, mask = split_strips(maps, 3)
    queries = head.safl(strips, mask)
    for key, index in (("pg", torch.arange(6)), ("pg1", partners["cross"]), ("pg2", partners["view"])):
        aligned = query_attention(queries, strips[index], mask)
        torch.testing.assert_close(out[key], head.bn(aligned.flatten(1)).view(6, 3, 6))
    assert set(head(maps, None)) == {"pg"}
    assert not head.bn.bias.requires_grad


def test_resnet_part_outputs_only_in_training():
    torch.manual_seed(0)
    model = TwoStreamResNet(depth=18, parts=3)
    x = torch.randn(4, 3, 96, 32)
    out = model(visible=x, infrared=x[:2], partner_index=salcr_partners(2))
    assert out["pg1"].shape == (6, 3, 512) and out["maps"].shape == (6, 512, 6, 2)
    assert "pg" not in model(visible=x)  # no partner index (SALCR stage 1): the part head is idle
    assert "pg" not in model.eval()(visible=x)


def test_resnet_eval_part_features_are_extracted_but_not_heads():
    torch.manual_seed(0)
    model = TwoStreamResNet(depth=18, parts=3).eval()
    assert model.heads == ("global",)
    assert model.feature_dims == {"global": 512, "part0": 512, "part1": 512, "part2": 512}
    x = torch.randn(2, 3, 96, 32)
    out = model(visible=x)
    own = model.part_head(out["maps"])["pg"]  # each image's own aligned parts, through the part BN
    for p in range(3):
        torch.testing.assert_close(out[f"part{p}"], own[:, p])
    assert TwoStreamResNet(depth=18).feature_dims == {"global": 512}
