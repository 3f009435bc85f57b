"""The two feature points, checked over every registered model: post_activation (DESIGN.md, contract 5)
and pre_activation, IntermediateNC's embedding point (Galanti et al., TMLR 2023: the linear/conv output
before BatchNorm and ReLU).

    python -m pytest tests/test_feature_points.py -q
"""

import copy
import dataclasses

import pytest
import torch
from torch import Tensor, nn

import models
from conf.analysis import Analysis
from conf.errors import SettingsError
from tests.test_models import BATCH_SIZE, INPUT_SHAPES, TINY, tiny_model

def hidden_names(model: models.LayerwiseModel) -> list[str]:
    """The stem and block names: every name but input and logits."""
    return model.layer_names()[1:-1]


def todays_features(model: models.LayerwiseModel, x: Tensor) -> dict[str, Tensor]:
    """The post-activation features spelled out module by module, independent of `_walk`: what
    `features(x)` returned before feature points existed."""
    features, names = {"input": x}, iter(hidden_names(model))
    for module in ([model.stem] if model.stem is not None else []) + list(model.blocks):
        x = module(x)
        features[next(names)] = channel_first(model, x)
    features["logits"] = model.head(x)
    return features


def channel_first(model: nn.Module, x: Tensor) -> Tensor:
    """A transformer's token stream [B, tokens, width] as its features are, [B, width, tokens] (models/vit.py)."""
    return x.transpose(1, 2) if getattr(model, "token_streams", False) and x.dim() == 3 else x


def residual_sum(block: nn.Module, x: Tensor) -> Tensor:
    return block.branch(x) + block.shortcut(x)


def convnet_stem(stem: nn.Module, x: Tensor) -> Tensor:
    """The stem's first conv (+BN; no ReLU there), then only the second conv."""
    return stem.second.conv(stem.first(x))


# Per family, each layer's pre-activation computed by hand from that layer's input (the previous
# post-activation tensor), applying only the linear/conv (or, for residual blocks, the sum without its ReLU).
MANUAL_STEM = {
    "convnet": convnet_stem,
    "convresnet": convnet_stem,
    "resnet": lambda stem, x: stem.conv(x),
    "vit": lambda stem, x: stem(x).transpose(1, 2),  # a residual stream: no activation follows it
}
MANUAL_BLOCK = {
    "mlp": lambda block, x: block.linear(x.flatten(1)),
    "convnet": lambda block, x: block.conv(x),
    "convresnet": residual_sum,
    "vgg": lambda block, x: block.conv(x),
    "resnet": residual_sum,
    "vit": lambda block, x: block(x.transpose(1, 2)).transpose(1, 2),  # the block's own output (its docstring)
}


def manual_pre_activation(arch: str, model: models.LayerwiseModel, x: Tensor) -> dict[str, Tensor]:
    post = todays_features(model, x)
    names = hidden_names(model)
    expected = {"input": x}
    inputs = dict(zip(names, [x, *(post[name] for name in names[:-1])]))
    for name in names:
        if name == "stem":
            expected[name] = MANUAL_STEM[arch](model.stem, inputs[name])
        else:
            block = model.blocks[int(name.removeprefix("block"))]
            expected[name] = MANUAL_BLOCK[arch](block, inputs[name])
    expected["logits"] = post["logits"]
    return expected


# Families whose layers end in a residual sum that no activation follows (a pre-norm transformer block):
# their pre-activation point is the layer's own output (models/vit.py).
NO_ACTIVATION_AFTER = {"vit"}


def every_hook(model: nn.Module) -> list:
    return [hook for module in model.modules()
            for hook in (*module._forward_hooks.values(), *module._forward_pre_hooks.values())]


def test_points_are_the_two_documented_ones():
    assert models.POINTS == ("post_activation", "pre_activation")
    assert set(MANUAL_BLOCK) == set(models.ARCHITECTURES) == set(TINY)


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=["cifar", "mnist"])
@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_pre_activation_is_the_linear_or_conv_output(arch, input_shape, batch_norm):
    model = tiny_model(arch, input_shape, 10, batch_norm).eval()
    x = torch.randn(BATCH_SIZE, *input_shape)
    with torch.no_grad():
        pre = model.features(x, point="pre_activation")
        post = model.features(x)
        expected = manual_pre_activation(arch, model, x)
    assert list(pre) == list(post) == list(expected) == model.layer_names()
    assert pre["input"] is x and torch.equal(pre["logits"], post["logits"])
    for name in hidden_names(model):
        assert pre[name].shape == post[name].shape, name
        assert torch.equal(pre[name], expected[name]), name
        if arch in NO_ACTIVATION_AFTER:
            assert torch.equal(pre[name], post[name]), name
            continue
        # ReLU makes every post-activation value >= 0; the pre-activation (before BN and ReLU) has
        # negative values, so it is another tensor whether or not BN is on.
        assert (post[name] >= 0).all() and (pre[name] < 0).any(), name
        assert not torch.equal(pre[name], post[name]), name


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_post_activation_default_is_todays_features(arch, batch_norm):
    model = tiny_model(arch, (3, 32, 32), 10, batch_norm).eval()
    x = torch.randn(BATCH_SIZE, 3, 32, 32)
    with torch.no_grad():
        default, named = model.features(x), model.features(x, point="post_activation")
        expected = todays_features(model, x)
    assert list(default) == list(named) == list(expected)
    for name in expected:
        assert torch.equal(default[name], expected[name]), name
        assert torch.equal(named[name], expected[name]), name


@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_taps_name_every_stem_and_block_layer(arch):
    model = tiny_model(arch, (3, 32, 32), 10)
    taps = model.pre_activation_taps()
    assert list(taps) == hidden_names(model)
    modules = set(model.modules())
    assert all(tap.module in modules and tap.read in ("output", "input") for tap in taps.values())


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_features_leave_the_model_as_they_found_it(arch, mode):
    model = tiny_model(arch, (3, 32, 32), 10).train(mode == "train")
    before = copy.deepcopy(model)
    modes = [module.training for module in model.modules()]
    x = torch.randn(BATCH_SIZE, 3, 32, 32)
    for point in models.POINTS:
        with torch.no_grad():
            model.features(x, point=point)
            before(x)  # the same number of forward passes: BN running statistics move alike in train mode
        assert [module.training for module in model.modules()] == modes, point
        assert every_hook(model) == [], point
    after, expected = model.state_dict(), before.state_dict()
    assert list(after) == list(expected)
    assert all(torch.equal(after[key], expected[key]) for key in expected)


@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_hooks_are_removed_when_the_forward_pass_fails(arch):
    model = tiny_model(arch, (3, 32, 32), 10).eval()
    with pytest.raises(RuntimeError):  # 5 channels: the first conv/linear refuses the input
        model.features(torch.randn(BATCH_SIZE, 5, 32, 32), point="pre_activation")
    assert every_hook(model) == []


@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_forward_and_default_features_never_touch_the_taps(arch, monkeypatch):
    model = tiny_model(arch, (3, 32, 32), 10).eval()
    x = torch.randn(BATCH_SIZE, 3, 32, 32)

    def refuse():
        raise AssertionError("pre_activation_taps called outside features(point='pre_activation')")

    monkeypatch.setattr(model, "pre_activation_taps", refuse)
    with torch.no_grad():
        assert torch.equal(model(x), model.features(x)["logits"])
    with pytest.raises(AssertionError):
        model.features(x, point="pre_activation")


def test_unknown_point_names_the_accepted_values():
    model = tiny_model("mlp", (3, 32, 32), 10)
    with pytest.raises(ValueError, match="post_activation, pre_activation"):
        model.features(torch.randn(2, 3, 32, 32), point="before_bn")


def test_analysis_option_features_at_offers_exactly_the_points():
    field = {item.name: item for item in dataclasses.fields(Analysis)}["features_at"]
    assert tuple(field.metadata["choices"]) == models.POINTS
    assert Analysis().features_at == "post_activation"
    assert Analysis(features_at="pre_activation").features_at == "pre_activation"
    with pytest.raises(SettingsError):
        Analysis(features_at="before_bn")
