"""Mixed precision: which dtype ``train.precision`` resolves to, and that only the network's forward pass runs in it."""

import copy
import json
import time

import pytest
import torch

from raytrain_vireid import VISIBLE
from raytrain_vireid.cpu import cpu_model
from raytrain_vireid.models import build_model
from raytrain_vireid.models.features import embed
from raytrain_vireid.models.pooling import GeM
from raytrain_vireid.models.precision import (AUTO_MIN_SPEEDUP, RememberedChoice, autocast_dtype, cpu_identity,
                                              native_bf16)
from raytrain_vireid.train.loop import forward_views, precision_probe

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("resnet", depth=18)


def timed_step(seconds: dict):
    """A probe step that takes ``seconds[name]`` (no autocast: ``fp32``) and records what it was asked for."""
    calls = []

    def step(dtype):
        calls.append(dtype)
        time.sleep(seconds["fp32" if dtype is None else "bf16"])

    return step, calls


@pytest.mark.parametrize("cpu_has_bf16", [True, False])
@pytest.mark.parametrize("bf16_speedup", [3.0, 1.0])
def test_auto_is_bf16_only_where_the_cpu_has_it_and_the_probe_finds_it_faster(monkeypatch, cpu_has_bf16,
                                                                               bf16_speedup):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_has_bf16)
    step, calls = timed_step({"fp32": 0.05, "bf16": 0.05 / bf16_speedup})
    assert native_bf16(CPU) is cpu_has_bf16
    chosen = autocast_dtype("auto", CPU, step)
    assert chosen == (torch.bfloat16 if cpu_has_bf16 and bf16_speedup > AUTO_MIN_SPEEDUP else None)
    assert set(calls) == ({None, torch.bfloat16} if cpu_has_bf16 else set())  # no probe without the instructions
    assert autocast_dtype("auto", CPU) is None  # nothing to probe: float32
    assert autocast_dtype("bf16", CPU, step) == torch.bfloat16  # asked for explicitly: emulated if need be
    assert autocast_dtype("fp32", CPU, step) is None
    assert len(calls) == (8 if cpu_has_bf16 else 0)  # one warm-up and three timed calls per dtype, for auto only


def test_auto_probe_alternates_the_precisions_so_a_slow_spell_slows_both(monkeypatch):
    """Both precisions equally fast, on a machine four times slower for the probe's first four calls: timed one
    precision after the other, float32 would take the whole slow spell and bfloat16 look 4x faster."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    calls = []

    def step(dtype):
        calls.append(dtype)
        time.sleep(0.08 if len(calls) <= 4 else 0.02)

    assert autocast_dtype("auto", CPU, step) is None
    assert calls == [None, torch.bfloat16] * 4


def test_auto_remembers_its_probed_decision_per_machine_and_workload(monkeypatch, tmp_path):
    """A second run with the same key takes the first run's decision without probing, even where a probe would now
    choose otherwise; another key probes again; an unreadable file is probed over, an unwritable one only warns."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    path = tmp_path / "cache" / "precision_auto.json"
    key = {"cpu": cpu_identity(), "rows": 16}
    fast, fast_calls = timed_step({"fp32": 0.05, "bf16": 0.05 / 3})
    slow, slow_calls = timed_step({"fp32": 0.02, "bf16": 0.06})
    first = RememberedChoice(path, key)
    assert autocast_dtype("auto", CPU, fast, first) == torch.bfloat16 and len(fast_calls) == 8
    assert first.note.startswith("probed: bfloat16 at") and str(path) in first.note
    again = RememberedChoice(path, dict(key))
    assert autocast_dtype("auto", CPU, slow, again) == torch.bfloat16 and slow_calls == []
    assert again.note == f"as probed before on this machine: {path}"
    other = RememberedChoice(path, {**key, "rows": 8})
    assert autocast_dtype("auto", CPU, slow, other) is None and len(slow_calls) == 8
    assert {e["precision"] for e in json.loads(path.read_text()).values()} == {"bf16", "fp32"}  # both kept

    path.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable, probing again"):
        assert autocast_dtype("auto", CPU, slow, RememberedChoice(path, key)) is None
    assert [e["precision"] for e in json.loads(path.read_text()).values()] == ["fp32"]
    blocked = RememberedChoice(tmp_path / "a-file" / "precision_auto.json", key)
    (tmp_path / "a-file").write_text("")
    with pytest.warns(UserWarning, match="cannot remember the precision decision"):
        assert autocast_dtype("auto", CPU, fast, blocked) == torch.bfloat16
    assert "remembered" not in blocked.note
    assert autocast_dtype("fp32", CPU, fast, RememberedChoice(path, key)) is None  # only auto consults it


def test_cpu_identity_reads_the_model_and_a_digest_of_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu avx512_bf16\n\n"
                    "processor\t: 1\nmodel name\t: Some CPU\nflags\t\t: fpu avx512_bf16\n")
    identity = cpu_identity(info)
    assert identity["model"] == "Some CPU" and len(identity["flags"]) == 16
    assert cpu_model(info) == "Some CPU" and cpu_model(tmp_path / "missing") is None  # what the benchmarks print
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu\n")
    assert cpu_identity(info)["flags"] != identity["flags"]  # the same model with fewer instructions differs
    assert cpu_identity(tmp_path / "missing")["model"]  # no cpuinfo: the platform's name


def test_a_torch_without_the_cpu_query_means_float32(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert not native_bf16(CPU) and autocast_dtype("auto", CPU) is None
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast_dtype("fp16", CPU)


def test_gem_pools_in_float32_whatever_the_maps_dtype():
    maps = torch.rand(2, 8, 4, 2) + 0.1
    pooled = GeM()(maps.bfloat16())
    assert pooled.dtype == torch.float32
    torch.testing.assert_close(pooled, GeM()(maps.bfloat16().float()))


def test_training_forward_in_bf16_returns_float32_close_to_float32(model):
    torch.manual_seed(1)
    x_v, x_a, x_r = (torch.randn(4, 3, 64, 32) for _ in range(3))
    model.train()
    with torch.no_grad():
        plain = forward_views(model, x_v, x_a, x_r, CPU)
        direct = model(visible=torch.cat([x_v, x_a]), infrared=x_r)
        half = forward_views(model, x_v, x_a, x_r, CPU, torch.bfloat16)
    for key, value in direct.items():  # float32: exactly the network's own forward
        assert torch.equal(plain[key], value)
    assert {v.dtype for v in half.values()} == {torch.float32}
    cosine = torch.nn.functional.cosine_similarity(half["global"], plain["global"], dim=1)
    assert cosine.min() > 0.99 and not torch.equal(half["global"], plain["global"])  # bf16 ran, and it is close


def test_bf16_training_step_keeps_float32_parameters_and_gradients(model):
    x = torch.randn(6, 3, 64, 32)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    params = [p.detach().clone() for p in model.parameters()]
    out = forward_views(model, x[:2], x[2:4], x[4:], CPU, torch.bfloat16)
    out["global"].pow(2).sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and {g.dtype for g in grads} == {torch.float32}
    optimizer.step()
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), params))


def test_bf16_extraction_is_normalised_float32_and_close_to_float32(model):
    x = torch.randn(5, 3, 64, 32)
    full = embed(model, x, VISIBLE)["global"]
    half = embed(model, x, VISIBLE, amp_dtype=torch.bfloat16)["global"]
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.norm(dim=1), torch.ones(5))
    assert (half * full).sum(1).min() > 0.99 and not torch.equal(half, full)


def test_precision_probe_leaves_the_network_and_the_rngs_alone(model, monkeypatch):
    model.train()
    model.zero_grad(set_to_none=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    copies = []
    real_deepcopy = copy.deepcopy
    monkeypatch.setattr(copy, "deepcopy",
                        lambda obj, *memo: (obj is model and copies.append(obj)) or real_deepcopy(obj, *memo))
    step = precision_probe(model, 4, 64, 32, CPU)
    assert copies == []  # nothing copied until a probe runs (a remembered decision runs none)
    step(None)
    step(torch.bfloat16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics included
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())
    assert copies == [model]  # one copy serves every call
