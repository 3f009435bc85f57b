"""One parametrised check of the per-layer contract over every registered model (DESIGN.md, contract 5).

    python -m pytest tests/test_models.py -q
"""

import re
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import models
from models.layers import BasicBlock

# Small but valid settings per arch, so the whole file runs in seconds on two CPU cores.
TINY = {
    "mlp": dict(depth=2, width=16),
    "convnet": dict(depth=2, width=8),
    "convresnet": dict(depth=2, width=8),
    "vgg": dict(depth=8, width=4),
    "resnet": dict(depth=1, width=4),
    "vit": dict(depth=2, width=8, patch_size=4, heads=2),
}
INPUT_SHAPES = [(3, 32, 32), (1, 28, 28)]
BATCH_SIZE = 4  # ≥ 2 for BatchNorm in train mode; 4 so every unit sees varied inputs.


def settings(arch: str, batch_norm: bool = True, **overrides) -> types.SimpleNamespace:
    return types.SimpleNamespace(arch=arch, batch_norm=batch_norm, **{**TINY[arch], **overrides})


def tiny_model(arch, input_shape, num_classes, batch_norm=True, **overrides) -> models.LayerwiseModel:
    torch.manual_seed(0)
    return models.build(
        settings(arch, batch_norm, **overrides), input_shape=input_shape, num_classes=num_classes
    )


def parameter_ids(modules: list[nn.Module]) -> list[int]:
    return [id(parameter) for module in modules for parameter in module.parameters()]


def test_registry_lists_exactly_the_six_families():
    assert models.ARCHITECTURES == ("convnet", "convresnet", "mlp", "resnet", "vgg", "vit")
    assert set(TINY) == set(models.ARCHITECTURES)


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("num_classes", [10, 7])
@pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=["cifar", "mnist"])
@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_features_contract(arch, input_shape, num_classes, batch_norm):
    model = tiny_model(arch, input_shape, num_classes, batch_norm).eval()
    x = torch.randn(BATCH_SIZE, *input_shape)
    with torch.no_grad():
        features = model.features(x)
        logits = model(x)

    names = list(features)
    assert names == model.layer_names()
    assert names[0] == "input" and names[-1] == "logits"
    middle = names[1:-1]
    if middle and middle[0] == "stem":
        middle = middle[1:]
    assert middle, "every model has at least one block"
    assert middle == [f"block{index:02d}" for index in range(len(middle))]
    assert all(re.fullmatch(r"block\d{2}", name) for name in middle)

    assert features["input"] is x
    assert all(tensor.shape[0] == BATCH_SIZE for tensor in features.values())
    assert features["logits"].shape == (BATCH_SIZE, num_classes)
    assert features["logits"].dtype == torch.float32
    assert torch.equal(logits, features["logits"])


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "no_bn"])
@pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=["cifar", "mnist"])
@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_gradients_reach_every_parameter(arch, input_shape, batch_norm):
    model = tiny_model(arch, input_shape, 10, batch_norm).train()
    torch.manual_seed(1)
    x = torch.randn(BATCH_SIZE, *input_shape)
    labels = torch.arange(BATCH_SIZE) % 10
    F.cross_entropy(model(x), labels).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_module_groups_partition_the_parameters(arch):
    model = tiny_model(arch, (3, 32, 32), 10)
    grouped = parameter_ids([module for _, modules in model.module_groups() for module in modules])
    assert len(grouped) == len(set(grouped)), "a parameter is in two groups"
    assert sorted(grouped) == sorted(id(parameter) for parameter in model.parameters())
    assert model.module_groups()[-1][0] == "head"


def test_resnet_module_groups_are_the_six_modules_of_berariu_et_al():
    model = tiny_model("resnet", (3, 32, 32), 10, depth=2)
    groups = model.module_groups()
    assert [name for name, _ in groups] == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert [len(modules) for _, modules in groups] == [1, 2, 2, 2, 2, 1]


@pytest.mark.parametrize("arch", models.ARCHITECTURES)
def test_constructors_are_keyword_only(arch):
    model_class = models.REGISTRY[arch]
    with pytest.raises(TypeError):
        model_class(TINY[arch]["depth"], TINY[arch]["width"], True, (3, 32, 32), 10)


def test_unknown_arch_names_the_accepted_values():
    with pytest.raises(models.UnknownArchitecture) as error:
        models.build(
            types.SimpleNamespace(arch="transformer", depth=2, width=8, batch_norm=True),
            input_shape=(3, 32, 32),
            num_classes=10,
        )
    assert isinstance(error.value, KeyError) and isinstance(error.value, ValueError)
    assert all(name in str(error.value) for name in models.ARCHITECTURES)


def test_register_refuses_a_taken_name():
    with pytest.raises(ValueError):
        models.register("mlp")(models.REGISTRY["vgg"])


def test_vgg_rejects_depths_without_a_plan():
    with pytest.raises(ValueError, match="8, 11, 13, 16"):
        tiny_model("vgg", (3, 32, 32), 10, depth=9)


@pytest.mark.parametrize("depth, convs", [(8, 5), (11, 8), (13, 10), (16, 13)])
def test_vgg_conv_counts_follow_learnphase(depth, convs):
    model = tiny_model("vgg", (3, 32, 32), 10, depth=depth)
    assert len(model.blocks) == convs
    assert model.blocks[-1].conv.out_channels == 16 * TINY["vgg"]["width"]


@pytest.mark.parametrize("depth", [1, 3])
def test_convnet_has_depth_three_by_three_convs_of_width_channels(depth):
    width = 6
    model = tiny_model("convnet", (3, 32, 32), 10, depth=depth, width=width)
    assert len(model.blocks) == depth
    three_by_three = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(three_by_three) == depth
    assert all(conv.weight.shape == (width, width, 3, 3) for conv in three_by_three)
    assert [block.conv for block in model.blocks] == three_by_three
    assert model.features(torch.randn(2, 3, 32, 32))["stem"].shape == (2, width, 8, 8)


def test_resnet18_has_the_standard_parameter_count():
    model = tiny_model("resnet", (3, 32, 32), 10, depth=2, width=64)
    assert sum(parameter.numel() for parameter in model.parameters()) == 11_173_962


def test_convresnet_block_returns_the_activated_residual_sum():
    model = tiny_model("convresnet", (3, 32, 32), 10).eval()
    block = model.blocks[1]
    assert isinstance(block, BasicBlock) and isinstance(block.shortcut, nn.Identity)
    with torch.no_grad():
        features = model.features(torch.randn(BATCH_SIZE, 3, 32, 32))
        x = features["block00"]
        first, second = block.branch.first, block.branch.second
        branch = second.norm(second.conv(F.relu(first.norm(first.conv(x)))))
        assert torch.allclose(features["block01"], F.relu(x + branch))
