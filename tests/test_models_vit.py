"""SDCL ViT: shapes, heads, shallow path, per-modality embeddings, ICS stem, timm-style weight mapping."""

import pytest
import torch

from raytrain_vireid.errors import UserError
from raytrain_vireid.models import build_model
from raytrain_vireid.models.vit import IBN, Block, SDCLViT, load_vit_weights, resize_pos_embed


def tiny() -> SDCLViT:
    torch.manual_seed(0)
    return build_model("vit", config="vit_tiny").eval()


def images(n: int) -> torch.Tensor:
    return torch.randn(n, 3, 128, 64)


def test_shapes_heads_and_non_square_grid():
    model = tiny()
    assert model.cfg.grid == (8, 4) and model.pos_embed.shape == (1, 33, 192)
    assert model.heads == ("deep", "shallow") and model.feature_dims == {"deep": 192, "shallow": 192}
    assert len(model.blocks) == 3
    xv, xr = images(2), images(3)
    out = model(visible=xv, infrared=xr)
    assert out["deep"].shape == (5, 192) and out["shallow"].shape == (5, 192)
    torch.testing.assert_close(out["deep"][2:], model(infrared=xr)["deep"])
    assert build_model("vit", config="vit_base").cfg.grid == (18, 9)
    with pytest.raises(UserError, match="model.vit: unknown config 'vit_huge'"):
        build_model("vit", config="vit_huge")
    with pytest.raises(UserError, match="model: unknown ViT option.s. widht"):
        build_model("vit", config="vit_tiny", widht=3)
    assert build_model("vit", config="vit_tiny", image_size=[64, 32], depth=2).cfg.grid == (4, 2)


def test_shallow_head_takes_pre_block_tokens():
    model = tiny()
    x = images(2)
    seen = {}
    model.b2.register_forward_pre_hook(lambda _m, args: seen.__setitem__("b2", args[0].detach().clone()))
    before = model(visible=x)
    tokens = model.embed_tokens(x, None)
    torch.testing.assert_close(seen["b2"][:, 1:], tokens[:, 1:])
    first_b2 = seen["b2"]
    model.blocks[-1].register_forward_hook(lambda _m, _a, out: torch.zeros_like(out))
    after = model(visible=x)
    assert not torch.allclose(before["deep"], after["deep"])
    torch.testing.assert_close(seen["b2"][:, 1:], first_b2[:, 1:])  # patch tokens untouched by the blocks
    assert torch.equal(seen["b2"][:, 0], torch.zeros_like(seen["b2"][:, 0]))  # CLS comes from the blocks


def test_patch_embeddings_are_per_modality():
    model = tiny()
    assert torch.equal(model.patch_embed.proj.weight, model.patch_embed_ir.proj.weight)
    assert model.patch_embed.proj.weight is not model.patch_embed_ir.proj.weight
    x = images(2)
    vis, ir = model(visible=x), model(infrared=x)
    torch.testing.assert_close(vis["deep"], ir["deep"])
    with torch.no_grad():
        model.patch_embed_ir.proj.weight.mul_(2)
    torch.testing.assert_close(model(visible=x)["deep"], vis["deep"])
    assert not torch.allclose(model(infrared=x)["deep"], ir["deep"])


def test_drop_path_skips_residual_branches_in_training_only():
    torch.manual_seed(0)
    block = Block(16, 2, 32, drop_path=1.0)
    x = torch.randn(3, 5, 16)
    assert torch.equal(block.train()(x), x)
    assert not torch.allclose(block.eval()(x), x)


def timm_state(dim: int = 192, depth: int = 4, grid: tuple[int, int] = (16, 8)) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    state = {"cls_token": torch.randn(1, 1, dim), "pos_embed": torch.randn(1, 1 + grid[0] * grid[1], dim),
             "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16), "patch_embed.proj.bias": torch.randn(dim),
             "norm.weight": torch.randn(dim), "norm.bias": torch.randn(dim),
             "head.weight": torch.randn(10, dim), "head.bias": torch.randn(10)}
    for i in range(depth):
        shapes = {"norm1.weight": (dim,), "norm1.bias": (dim,), "attn.qkv.weight": (3 * dim, dim),
                  "attn.qkv.bias": (3 * dim,), "attn.proj.weight": (dim, dim), "attn.proj.bias": (dim,),
                  "norm2.weight": (dim,), "norm2.bias": (dim,), "mlp.fc1.weight": (4 * dim, dim),
                  "mlp.fc1.bias": (4 * dim,), "mlp.fc2.weight": (dim, 4 * dim), "mlp.fc2.bias": (dim,)}
        state.update({f"blocks.{i}.{k}": torch.randn(s) for k, s in shapes.items()})
    return state


def test_load_timm_style_weights(tmp_path):
    state = timm_state()
    path = tmp_path / "vit.pth"
    torch.save({"model": state}, path)
    model = tiny()
    report = load_vit_weights(model, path)
    assert sorted(report.unexpected) == ["head.bias", "head.weight"] and report.mismatched == []
    assert all(k.startswith(("bn_deep.", "bn_shallow.")) for k in report.missing)
    block0 = model.blocks[0]
    assert torch.equal(block0.self_attention.in_proj_weight, state["blocks.0.attn.qkv.weight"])
    assert torch.equal(block0.self_attention.out_proj.bias, state["blocks.0.attn.proj.bias"])
    assert torch.equal(model.blocks[2].mlp[3].weight, state["blocks.2.mlp.fc2.weight"])
    assert torch.equal(block0.ln_2.weight, state["blocks.0.norm2.weight"])
    for head in (model.b1, model.b2):
        assert torch.equal(head[0].mlp[0].weight, state["blocks.3.mlp.fc1.weight"])
        assert torch.equal(head[1].bias, state["norm.bias"])
    for embed in (model.patch_embed, model.patch_embed_ir):
        assert torch.equal(embed.proj.weight, state["patch_embed.proj.weight"])
    assert model.patch_embed.proj.weight is not model.patch_embed_ir.proj.weight
    assert torch.equal(model.cls_token, state["cls_token"])
    torch.testing.assert_close(model.pos_embed, resize_pos_embed(state["pos_embed"], (8, 4)))
    assert torch.isfinite(model(visible=images(1))["deep"]).all()


def test_resize_pos_embed():
    cls = torch.randn(1, 1, 4)
    constant = torch.cat([cls, torch.full((1, 16 * 8, 4), 0.5)], dim=1)  # 2:1 grid 16x8
    resized = resize_pos_embed(constant, (8, 4))
    assert resized.shape == (1, 33, 4) and torch.equal(resized[:, :1], cls)
    torch.testing.assert_close(resized[:, 1:], torch.full((1, 32, 4), 0.5))
    square = resize_pos_embed(torch.cat([torch.zeros(1, 1, 1), torch.arange(16.0).view(1, 16, 1)], 1), (4, 4))
    assert torch.equal(square[0, 1:, 0], torch.arange(16.0))  # 4x4 -> 4x4 is the identity
    rows = torch.tensor([0.0, 0.0, 3.0, 3.0]).view(1, 4, 1)  # 2x2 grid, rows 0 and 3
    upsampled = resize_pos_embed(torch.cat([torch.zeros(1, 1, 1), rows], 1), (4, 2))[0, 1:, 0].view(4, 2)
    assert upsampled[:, 0].tolist() == [0.0, 0.75, 2.25, 3.0]  # bilinear, half-pixel centres
    with pytest.raises(UserError, match="pos_embed: cannot infer the patch grid of 7"):
        resize_pos_embed(torch.zeros(1, 8, 4), (8, 4))


def test_unreadable_vit_weights(tmp_path):
    bad = tmp_path / "vit.pth"
    bad.write_text("nope")
    with pytest.raises(UserError, match="vit.pth: cannot read weights file"):
        load_vit_weights(tiny(), bad)


# TransReID-SSL's ICS stem as its checkpoints name it (``patch_embed.`` + these), e.g. vit_base_ics_cfs_lup.pth.
ICS_KEYS = {f"conv.{i}.weight" for i in (0, 3, 6)} | {
    f"conv.{i}.{norm}.{name}" for i in (1, 4) for norm, names in (
        ("IN", ("weight", "bias")), ("BN", ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")))
    for name in names} | {f"conv.7.{name}" for name in ("weight", "bias", "running_mean", "running_var",
                                                         "num_batches_tracked")} | {"proj.weight", "proj.bias"}


def test_ics_stem_layout_grid_and_per_modality_copies():
    torch.manual_seed(0)
    model = build_model("vit", config="vit_tiny", stem="ics").eval()
    assert set(model.patch_embed.state_dict()) == ICS_KEYS
    assert model.patch_embed.proj.weight.shape == (192, 64, 8, 8)  # half the patch after the stride-2 stem
    assert model.patch_embed.conv[0].weight.shape == (64, 3, 7, 7) and model.patch_embed.conv[0].stride == (2, 2)
    assert model.cfg.grid == (8, 4) and model(visible=images(2), infrared=images(1))["deep"].shape == (3, 192)
    assert model.patch_embed_ir.conv[0].weight is not model.patch_embed.conv[0].weight
    assert build_model("vit", config="vit_base", stem="ics").cfg.grid == (18, 9)
    assert set(build_model("vit", config="vit_tiny").patch_embed.state_dict()) == {"proj.weight", "proj.bias"}
    with pytest.raises(UserError, match="model.vit_stem: unknown stem 'conv'"):
        build_model("vit", config="vit_tiny", stem="conv")
    with pytest.raises(UserError, match="model.vit_stem: ics needs an even patch size and stride, got 16 and 15"):
        build_model("vit", config="vit_tiny", stem="ics", stride=15)


def test_ibn_normalises_half_per_image_and_half_over_the_batch():
    ibn = IBN(6).train()
    x = torch.randn(2, 6, 4, 4)
    x[0] += 3.0  # the images differ in level: instance norm removes it, batch norm keeps it
    x[1] -= 3.0
    out = ibn(x)
    per_image = out.mean(dim=(2, 3))
    torch.testing.assert_close(per_image[:, :3], torch.zeros(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 3:].mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    assert (per_image[0, 3:] > 0.5).all() and (per_image[1, 3:] < -0.5).all()


def test_load_ics_checkpoint_into_both_modalities(tmp_path):
    torch.manual_seed(4)
    source = build_model("vit", config="vit_tiny", stem="ics")
    stem = {f"patch_embed.{k}": v.clone() + (0.5 if v.is_floating_point() else 0)
            for k, v in source.patch_embed.state_dict().items()}
    state = {k: v for k, v in timm_state().items() if not k.startswith("patch_embed.")} | stem
    path = tmp_path / "vit_ics.pth"
    torch.save(state, path)
    model = build_model("vit", config="vit_tiny", stem="ics")
    report = load_vit_weights(model, path)
    assert sorted(report.unexpected) == ["head.bias", "head.weight"] and report.mismatched == []
    assert not [k for k in report.missing if "patch_embed" in k]
    for embed in (model.patch_embed, model.patch_embed_ir):
        assert torch.equal(embed.conv[4].IN.weight, stem["patch_embed.conv.4.IN.weight"])
        assert torch.equal(embed.conv[7].running_var, stem["patch_embed.conv.7.running_var"])
        assert torch.equal(embed.proj.weight, stem["patch_embed.proj.weight"])
    linear = load_vit_weights(build_model("vit", config="vit_tiny"), path)  # the wrong stem is reported
    assert "patch_embed.conv.0.weight" in linear.unexpected
    assert "patch_embed.proj.weight (192, 64, 8, 8)!=(192, 3, 16, 16)" in linear.mismatched
