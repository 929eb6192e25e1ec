"""The supervised upper bound: identity classifier on the true identities, in place of the method's losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from raytrain_vireid.config import build_config, valid_keys
from raytrain_vireid.errors import UserError
from raytrain_vireid.methods.base import VIEW_A, VIEW_R, VIEW_V, Batch
from raytrain_vireid.methods.supervised import SupervisedIdentity
from raytrain_vireid.models import build_model
from raytrain_vireid.models.identity import WithIdentityClassifier, id_logits_key
from raytrain_vireid.train.launch import fit
from raytrain_vireid.train.report import read_metrics


def test_classifier_logits_only_in_training_and_heads_pass_through():
    torch.manual_seed(0)
    net = WithIdentityClassifier(build_model("resnet", depth=18), num_ids=5)
    assert net.heads == ("global",) and net.feature_dims == {"global": 512}
    x = torch.randn(4, 3, 64, 32)
    net.train()
    out = net(visible=x[:2], infrared=x[2:])
    logits = id_logits_key("global")
    assert out[logits].shape == (4, 5)
    assert torch.allclose(out[logits], out["global"] @ net.classifiers["global"].weight.t())
    net.eval()
    assert logits not in net(visible=x)
    assert "classifiers.global.weight" in net.state_dict()


def test_every_vit_head_gets_a_classifier_and_every_parameter_a_gradient():
    # DDP refuses parameters outside the loss: a classifier on the deep head alone left the shallow branch out.
    torch.manual_seed(0)
    net = WithIdentityClassifier(build_model("vit", config="vit_tiny"), num_ids=4)
    method = SupervisedIdentity(build_config("sdcl", overrides=["supervised=true"]), net.heads,
                                np.array([0, 0, 1, 1], np.int8), np.array([0, 1, 2, 3]))
    assert set(net.classifiers) == {"deep", "shallow"}
    net.train()
    x = torch.randn(4, 3, 128, 64)
    out = net(visible=x[:2], infrared=x[2:])
    batch = Batch(index=torch.arange(4), view=torch.tensor([VIEW_V, VIEW_V, VIEW_R, VIEW_R]),
                  labels=torch.zeros(4, dtype=torch.long), cross=torch.full((4,), -1))
    loss, logs = method.loss(out, batch, epoch=0)
    terms = [F.cross_entropy(out[id_logits_key(head)], torch.arange(4)) for head in ("deep", "shallow")]
    assert torch.allclose(loss, (terms[0] + terms[1]) / 2)
    assert logs["loss_id_shallow"] == pytest.approx(float(terms[1].detach()))
    loss.backward()
    assert [name for name, p in net.named_parameters() if p.requires_grad and p.grad is None] == []


def test_loss_is_cross_entropy_over_the_true_identities_of_every_view():
    config = build_config("baseline", overrides=["supervised=true"])
    pids = np.array([7, 3, 7, 9, 3, 9])  # classes in sorted pid order: 3 -> 0, 7 -> 1, 9 -> 2
    method = SupervisedIdentity(config, ("global",), np.array([0, 0, 0, 1, 1, 1], np.int8), pids)
    assert method.num_ids == 3
    logits = torch.randn(5, 3, requires_grad=True)
    batch = Batch(index=torch.tensor([0, 2, 0, 2, 4]), view=torch.tensor([VIEW_V, VIEW_V, VIEW_A, VIEW_A, VIEW_R]),
                  labels=torch.zeros(5, dtype=torch.long), cross=torch.full((5,), -1))
    loss, logs = method.loss({id_logits_key("global"): logits, "global": torch.randn(5, 8)}, batch, epoch=0)
    assert torch.allclose(loss, F.cross_entropy(logits, torch.tensor([1, 1, 1, 1, 0])))
    assert logs["loss_id"] == pytest.approx(float(loss.detach()))
    assert len(method.memories) == 0


def test_the_configured_methods_settings_are_still_checked():
    salcr = build_config("salcr", overrides=["supervised=true"])
    SupervisedIdentity(salcr, ("global",), np.zeros(2, np.int8), np.arange(2))  # salcr's own method_params pass
    bad = build_config("baseline", overrides=["supervised=true", "method_params.k_instance=3"])
    with pytest.raises(UserError, match="method_params.k_instance: not a setting of method"):
        SupervisedIdentity(bad, ("global",), np.zeros(2, np.int8), np.arange(2))


@pytest.fixture(scope="module")
def tiny_bound(tmp_path_factory, cache, ray_local, tiny_config):
    """A finished tiny ``--supervised`` run (Ray local mode), shared by the tests that read it."""
    return fit(tiny_config(tmp_path_factory.mktemp("runs"), cache, "sup", 0, "supervised=true"))


def test_supervised_run_trains_the_classifier_from_epoch_0(tiny_bound):
    history = read_metrics(tiny_bound.run_dir)
    assert [row["epoch"] for row in history] == [0, 1]
    assert all(row["loss_id"] > 0 and "loss_instance_global" not in row for row in history)  # no warm-up epoch
    assert history[0]["clusters_visible"] == 8  # the true training identities of 12 (a third are test ids)
    assert tiny_bound.final["epoch"] == 1


# Every key of bound_ratio.UNREAD_BY_SUPERVISED, changed from the tiny run's values.
CHANGED_FOR_THE_BOUND = [
    "pseudo.backend=cpu", "pseudo.k1={visible: 5, infrared: 4}", "pseudo.k2=1",
    "pseudo.eps={visible: 0.5, infrared: 0.4}", "pseudo.min_samples=3", "pseudo.k1_visible_stage2=4",
    "pseudo.association=sinkhorn", "pseudo.association_params={lam: 25.0}", "pseudo.feature_dtype=float32",
    "pseudo.visible_gray=true", "pseudo.flip=false", "pseudo.oracle_association=true", "pseudo.oracle_clusters=true",
    "pseudo.prior=hog", "pseudo.prior_weight=0.3", "pseudo.prior_epochs=5", "pseudo.prior_k=3", "pseudo.prior_association=true",
    "memory.temperature=0.1", "memory.momentum=0.5", "memory.momentum_epoch0=0.99", "memory.instance_momentum=0.5",
]


def test_a_supervised_run_reads_none_of_the_settings_bound_ratio_lets_differ(tiny_bound, tmp_path, cache, tiny_config,
                                                                            benchmark_script):
    # benchmarks/bound_ratio.py reads a bound folder whatever these settings were.
    bound_ratio = benchmark_script("bound_ratio")
    sections = bound_ratio.UNREAD_BY_SUPERVISED
    changed = {change.split("=")[0] for change in CHANGED_FOR_THE_BOUND}
    assert changed == {key.removesuffix(".*") for key in valid_keys() if key.split(".")[0] in sections}
    runs = [tiny_bound, fit(tiny_config(tmp_path, cache, "sup-changed", 0, "supervised=true", *CHANGED_FOR_THE_BOUND))]
    logged = [[{key: value for key, value in row.items() if "time" not in key and not key.endswith("_per_s")}
               for row in read_metrics(run.run_dir)] for run in runs]
    assert len(logged[0]) == 2 and "loss_id" in logged[0][-1] and "mAP" in logged[0][-1]
    assert logged[0] == logged[1]
    assert runs[0].final["rows"] == runs[1].final["rows"]
