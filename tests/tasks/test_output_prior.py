import math

import pytest
import torch

from sah.models.mv_unet import MVUnet
from sah.models.unet import build_unet
from sah.tasks.segmentation.output_prior import set_output_prior


@pytest.mark.parametrize(
    "make", [lambda: build_unet(num_res_units=1), lambda: build_unet(num_res_units=0), MVUnet]
)
def test_output_starts_near_the_prior(make) -> None:
    torch.manual_seed(0)
    net = make().eval()
    x = torch.rand(2, 1, 32, 32)
    before = net(x).mean().item()
    set_output_prior(net, 0.01)
    after = net(x).mean().item()
    expected = math.log(0.01 / 0.99)
    # The bias shift moves every logit by the same amount, up to the residual path's share.
    assert abs(after - expected) < 0.6
    assert after < before - 3


def test_two_channel_nets_are_left_alone() -> None:
    net = build_unet(out_channels=2)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    set_output_prior(net, 0.01)
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
