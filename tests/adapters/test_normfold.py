"""A frozen BatchNorm folded into the adapted conv before it: same numbers, norm untouched.

The oracle is the same model injected with ``fold_norm=False``, where torch's own BatchNorm
module normalises the conv output.
"""

import copy

import lightning as L
import pytest
import torch
from conftest import randomise_adapter
from torch import nn

from sah.adapters import (
    METHODS,
    AdapterConfig,
    adapter_layers,
    inject,
    merge,
    merge_and_unload,
    reattach_norms,
    set_compute_path,
    unmerge,
)

ADAPTERS = [m for m in METHODS if m not in ("full", "none")]
PATHS = ["weight", "lowrank", "lowrank_taps"]


def _conv_norm(name: str) -> tuple[nn.Sequential, tuple[int, ...]]:
    layers = {
        "dilated2d": (nn.Conv2d(4, 6, 3, padding=2, dilation=2), nn.BatchNorm2d(6), (2, 4, 9, 9)),
        "grouped2d": (nn.Conv2d(4, 6, 3, groups=2, bias=False), nn.BatchNorm2d(6), (2, 4, 8, 8)),
        "strided1d": (nn.Conv1d(3, 5, 3, stride=2), nn.BatchNorm1d(5), (2, 3, 11)),
        "transposed2d": (nn.ConvTranspose2d(4, 6, 2, stride=2), nn.BatchNorm2d(6), (2, 4, 5, 5)),
        "pointwise3d": (nn.Conv3d(4, 6, 1), nn.BatchNorm3d(6, affine=False), (2, 4, 3, 4, 5)),
    }
    conv, norm, shape = layers[name]
    model = nn.Sequential(conv, norm, nn.ReLU()).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        norm.running_mean.copy_(torch.randn_like(norm.running_mean))
        norm.running_var.copy_(torch.rand_like(norm.running_var) + 0.3)
    return model, shape


def _pair(name: str, method: str, **kw) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    base, shape = _conv_norm(name)
    folded, plain = copy.deepcopy(base), copy.deepcopy(base)
    inject(folded, AdapterConfig(method, 2, **kw))
    inject(plain, AdapterConfig(method, 2, fold_norm=False, **kw))
    randomise_adapter(folded)
    plain.load_state_dict(folded.state_dict())
    return folded, plain, torch.randn(*shape, dtype=torch.float64)


def _grads(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    x = x.clone().requires_grad_()
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    return out.detach(), {"input": x.grad, **grads}


@pytest.mark.parametrize(
    "name", ["dilated2d", "grouped2d", "strided1d", "transposed2d", "pointwise3d"]
)
@pytest.mark.parametrize("method", ADAPTERS)
def test_folded_norm_gives_the_outputs_and_gradients_of_conv_then_norm(name, method):
    folded, plain, x = _pair(name, method)
    assert isinstance(
        adapter_layers(folded)["0"].folded_norm, nn.BatchNorm1d | nn.BatchNorm2d | nn.BatchNorm3d
    )
    assert adapter_layers(plain)["0"].folded_norm is None
    expected_out, expected = _grads(plain, x)
    for path in PATHS:
        model = copy.deepcopy(folded)
        set_compute_path(model, path)
        out, grads = _grads(model, x)
        torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-12)
        assert grads.keys() == expected.keys()
        for key, grad in expected.items():
            torch.testing.assert_close(
                grads[key], grad, rtol=1e-9, atol=1e-12, msg=f"{path}: {key}"
            )


@pytest.mark.parametrize("method", ["conv_lora", "cp_dora"])
def test_folded_norm_with_dropout_matches(method):
    folded, plain, x = _pair("dilated2d", method, dropout=0.3)
    torch.manual_seed(5)
    out, grads = _grads(folded, x)
    torch.manual_seed(5)
    expected_out, expected = _grads(plain, x)
    torch.testing.assert_close(out, expected_out)
    for key, grad in expected.items():
        torch.testing.assert_close(grads[key], grad, msg=key)


def test_training_leaves_the_norm_as_it_was_and_merge_hands_it_back():
    folded, plain, x = _pair("dilated2d", "conv_dora")
    norm = folded[1]
    before = {k: v.clone() for k, v in norm.state_dict().items()}
    optimiser = torch.optim.SGD([p for p in folded.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        optimiser.zero_grad()
        folded(x).square().mean().backward()
        optimiser.step()
    for key, value in norm.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)
    assert set(folded.state_dict()) == set(plain.state_dict())

    with torch.no_grad():
        unmerged = folded(x)
        merge(folded)
        assert not norm.folded  # the merged conv computes W' only: the norm runs again
        torch.testing.assert_close(folded(x), unmerged)
        unmerge(folded)
        assert norm.folded
        torch.testing.assert_close(folded(x), unmerged)
        plain_model = merge_and_unload(folded)
        assert type(plain_model[1]) is nn.BatchNorm2d
        assert "folded" not in vars(plain_model[1])
        torch.testing.assert_close(plain_model(x), unmerged)


def test_a_deep_copy_folds_its_own_norm():
    folded, _, x = _pair("dilated2d", "conv_lora")
    twin = copy.deepcopy(folded)
    assert adapter_layers(twin)["0"].folded_norm is twin[1]
    with torch.no_grad():
        twin[1].running_mean.add_(1.0)
        assert not torch.allclose(twin(x), folded(x))


def test_norms_that_must_stay_as_they_are_are_not_folded():
    def folded_norm(model, **kw):
        inject(model, AdapterConfig("conv_lora", 2, **kw))
        return adapter_layers(model)["0"].folded_norm

    assert folded_norm(_conv_norm("dilated2d")[0], train_norm=True) is None  # it trains
    assert folded_norm(_conv_norm("dilated2d")[0], fold_norm=False) is None
    batch_stats = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=False))
    assert folded_norm(batch_stats) is None  # normalises with batch statistics: not affine
    not_next = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.BatchNorm2d(3))
    assert folded_norm(not_next) is None
    sync = nn.Sequential(nn.Conv2d(2, 3, 3), nn.SyncBatchNorm(3))
    assert folded_norm(sync) is None


@pytest.mark.parametrize("method", ["conv_lora", "full"])
def test_norms_swapped_for_sync_batchnorm_are_held_again(method):
    """Lightning's sync_batchnorm swaps every BatchNorm after inject; reattach_norms undoes
    what the swap breaks: frozen statistics, and a folded norm applied twice."""
    base, shape = _conv_norm("dilated2d")
    model = nn.Sequential(copy.deepcopy(base), nn.Sequential(nn.Conv2d(6, 2, 1))).double()
    inject(model, AdapterConfig(method, 2, target=r"^1\.0$" if method == "full" else "all"))
    randomise_adapter(model)
    x = torch.randn(*shape, dtype=torch.float64)
    model.train()
    expected = model(x).detach()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}

    model = nn.SyncBatchNorm.convert_sync_batchnorm(model).train()  # as the fit loop does
    assert isinstance(model[0][1], nn.SyncBatchNorm)
    assert not torch.allclose(model(x), expected)  # batch statistics (and, folded, twice)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if k in stats:
                v.copy_(stats[k])

    reattach_norms(model)
    reattach_norms(model)  # idempotent
    assert len(model[0][1]._forward_pre_hooks) == 1
    torch.testing.assert_close(model(x), expected)
    for k, v in model.state_dict().items():
        if k in stats:
            torch.testing.assert_close(v, stats[k], rtol=0, atol=0, msg=k)


def test_the_training_callback_reattaches_the_norms():
    from sah.tasks.training.network_setup import ReattachNorms

    class Task(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = _conv_norm("dilated2d")[0]

    task = Task()
    inject(task.net, AdapterConfig("conv_lora", 2))
    task.net = nn.SyncBatchNorm.convert_sync_batchnorm(task.net)
    ReattachNorms().on_fit_start(None, task)  # type: ignore[arg-type]
    assert adapter_layers(task.net)["0"].folded_norm is None
    assert len(task.net[1]._forward_pre_hooks) == 1


def test_monai_unet_norms_inside_adn_blocks_are_folded():
    """MONAI's Convolution is Sequential(conv, ADN(norm, dropout, act)): the norm comes first."""
    from monai.networks.nets import UNet

    base = UNet(2, 1, 1, (4, 8, 16), (2, 2), num_res_units=1, norm="batch").double()
    with torch.no_grad():
        for m in base.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 1.5)
    folded, plain = copy.deepcopy(base), copy.deepcopy(base)
    inject(folded, AdapterConfig("conv_lora", 2))
    inject(plain, AdapterConfig("conv_lora", 2, fold_norm=False))
    randomise_adapter(folded)
    plain.load_state_dict(folded.state_dict())
    norms = [m for m in folded.modules() if isinstance(m, nn.BatchNorm2d)]
    folds = [layer.folded_norm for layer in adapter_layers(folded).values()]
    assert {id(n) for n in norms} == {id(n) for n in folds if n is not None}
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    expected_out, expected = _grads(plain, x)
    out, grads = _grads(folded, x)
    torch.testing.assert_close(out, expected_out, rtol=1e-10, atol=1e-12)
    for key, grad in expected.items():
        torch.testing.assert_close(grads[key], grad, rtol=1e-9, atol=1e-12, msg=key)


def test_a_sequential_with_its_own_forward_is_not_read_as_a_chain():
    class Reversed(nn.Sequential):
        def forward(self, x):
            for module in reversed(self):
                x = module(x)
            return x

    model = Reversed(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 3))
    inject(model, AdapterConfig("conv_lora", 2))
    assert adapter_layers(model)["1"].folded_norm is None
    model = Reversed(nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3))  # the norm runs first here
    inject(model, AdapterConfig("conv_lora", 2))
    assert adapter_layers(model)["0"].folded_norm is None
