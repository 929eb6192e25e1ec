"""Two-stream ResNet, GeM, BN neck, pretrained loading and build_model."""

import pytest
import torch
import torchvision

from raytrain_vireid.errors import UserError
from raytrain_vireid.models import build_model, param_groups
from raytrain_vireid.models.pooling import GeM
from raytrain_vireid.models.resnet import TwoStreamResNet


def small(**kwargs) -> TwoStreamResNet:
    torch.manual_seed(0)
    return TwoStreamResNet(depth=18, **kwargs)


def test_shapes_rows_ordered_visible_then_infrared_and_last_stride_one():
    model = small().eval()
    xv, xr = torch.randn(3, 3, 64, 32), torch.randn(2, 3, 64, 32)
    out = model(visible=xv, infrared=xr)
    assert model.heads == ("global",) and model.feature_dims == {"global": 512}
    assert out["global"].shape == (5, 512) and out["pool"].shape == (5, 512)
    assert out["maps"].shape == (5, 512, 4, 2)  # 1/16 of 64x32
    torch.testing.assert_close(out["global"][:3], model(visible=xv)["global"])
    torch.testing.assert_close(out["global"][3:], model(infrared=xr)["global"])
    assert small(last_stride=2)(visible=xv)["maps"].shape[-2:] == (2, 1)


def test_resnet50_bottleneck_last_stride_one():
    model = TwoStreamResNet(depth=50).eval()
    out = model(infrared=torch.randn(1, 3, 64, 32))
    assert out["maps"].shape == (1, 2048, 4, 2) and model.feature_dims == {"global": 2048}


def test_stems_are_per_modality_and_layers_shared():
    model = small()
    stem_v0 = model.visible_stem.conv1.weight.detach().clone()
    stem_r0 = model.infrared_stem.conv1.weight.detach().clone()
    layer0 = model.layer1[0].conv1.weight.detach().clone()
    assert torch.equal(stem_v0, stem_r0)
    assert model.visible_stem.conv1.weight is not model.infrared_stem.conv1.weight
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(visible=torch.randn(4, 3, 64, 32))["pool"].pow(2).sum().backward()
    opt.step()
    assert not torch.equal(model.visible_stem.conv1.weight, stem_v0)
    assert torch.equal(model.infrared_stem.conv1.weight, stem_r0)
    assert not torch.equal(model.layer1[0].conv1.weight, layer0)


def test_bn_neck_bias_frozen_and_left_out_of_param_groups():
    model = small()
    assert not model.neck.bias.requires_grad
    assert torch.equal(model.neck.weight, torch.ones(512)) and torch.equal(model.neck.bias, torch.zeros(512))
    (group,) = param_groups(model, lr=0.1, weight_decay=5e-4)
    assert all(p is not model.neck.bias for p in group["params"])
    assert len(group["params"]) == sum(1 for p in model.parameters()) - 1


def test_gem_is_average_at_p1_and_near_max_at_large_p():
    x = torch.rand(2, 5, 3, 4) + 0.1
    torch.testing.assert_close(GeM(p=1.0)(x), x.mean(dim=(2, 3)))
    torch.testing.assert_close(GeM(p=3.0)(x), x.pow(3).mean(dim=(2, 3)).pow(1 / 3))
    big = GeM(p=200.0)(x.double())
    peak = x.double().amax(dim=(2, 3))
    assert torch.all(big <= peak) and torch.all(big >= peak * 0.98)
    assert not list(GeM().parameters())
    with pytest.raises(UserError, match="model.gem_p: 0.0 must be positive"):
        GeM(p=0.0)


def test_loads_torchvision_state_dict_into_both_stems(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.items()}}, path)
    model = small(pretrained=str(path))
    for stem in (model.visible_stem, model.infrared_stem):
        assert torch.equal(stem.conv1.weight, reference["conv1.weight"])
        assert torch.equal(stem.bn1.running_mean, reference["bn1.running_mean"])
    assert torch.equal(model.layer4[1].conv2.weight, reference["layer4.1.conv2.weight"])
    assert sorted(model.load_report.unexpected) == ["fc.bias", "fc.weight"]
    assert all(k.startswith("neck.") for k in model.load_report.missing)


def test_own_state_dict_round_trips(tmp_path):
    trained = small()
    with torch.no_grad():
        trained.infrared_stem.conv1.weight.add_(1.0)
    path = tmp_path / "model.pth"
    torch.save({"model": trained.state_dict()}, path)
    torch.manual_seed(5)
    loaded = TwoStreamResNet(depth=18, pretrained=path)
    assert loaded.load_report.missing == [] and loaded.load_report.unexpected == []
    for (name, a), b in zip(trained.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name


def test_bad_weights_raise_user_error_naming_path(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(UserError, match="nope.pth: pretrained weights file does not exist"):
        small(pretrained=str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="garbage.pth: cannot read weights file"):
        small(pretrained=str(garbage))
    unrelated = tmp_path / "other.pth"
    torch.save({"foo.weight": torch.zeros(3)}, unrelated)
    with pytest.raises(UserError, match="other.pth: no tensor in the weights file matches the model"):
        small(pretrained=str(unrelated))


def test_imagenet_download_failure_suggests_local_path(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(UserError, match="pretrained=imagenet: cannot download.*--pretrained PATH"):
        small(pretrained="imagenet")


def test_build_model_validates_arguments():
    assert isinstance(build_model("resnet", depth=18), TwoStreamResNet)
    with pytest.raises(UserError, match="model.arch: unknown architecture 'cnn'"):
        build_model("cnn")
    with pytest.raises(UserError, match="model.depth: 101"):
        build_model("resnet", depth=101)
