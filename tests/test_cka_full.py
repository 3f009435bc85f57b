"""cka_full (metrics/similarity.py): linear CKA of each layer with the one below it on the probe subset's full
flattened features, checked against the public ckatorch package (Ristori; adapted from Kornblith et al.'s code),
against the pooled cka_previous_layer, and its on-request selection (metrics/registry.py)."""

import math

import pytest
import torch
from ckatorch import cka_base

from conf.analysis import Analysis
from conf.errors import SettingsError
from metrics import engine, registry
from metrics.similarity import full_centred_gram, probe_subset
from tests.conftest import run_cli
from tests.fabricate import ENGINE_MEAN, ENGINE_STD, class_images, keyed, tiny_mlp

# CONV-2-2 on 8 px: input 3 × 8 × 8 = 192 features, pooled to its 3 channel means for probe_dimensions=8; stem,
# block00 and block01 2 × 2 × 2 = 8 and the logits 3, never pooled.
PROBE_DIMENSIONS = 8
OPTIONS = Analysis(metrics="cka_previous_layer,cka_full", probe_dimensions=PROBE_DIMENSIONS, probe_subset_size=50,
                   analysis_batch_size=32)  # the subset spans several test batches


def tiny_convnet():
    import models
    from conf import Settings

    torch.manual_seed(0)
    return models.build(Settings(arch="convnet", depth=2, width=2), input_shape=(3, 8, 8), num_classes=3).eval()


def checkered_images(count: int, seed: int) -> engine.SplitData:
    """uint8 [N, 3, 8, 8]: a grey level and a checkerboard of its own amplitude per image, plus noise. The
    checkerboard is half of the images' variance and averages to 0 over each channel: pooled to the channel
    means, the input keeps only the grey level; the stem's 4 × 4 patches see both."""
    generator = torch.Generator().manual_seed(seed)
    rows, columns = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    checker = 1.0 - 2.0 * ((rows + columns) % 2)
    grey, amplitude = (40 * torch.randn(count, 1, 1, 1, generator=generator) for _ in range(2))
    noise = 5 * torch.randn(count, 3, 8, 8, generator=generator)
    images = (128 + grey + amplitude * checker + noise).round().clamp(0, 255).to(torch.uint8)
    return engine.SplitData(images, torch.arange(count) % 3, ENGINE_MEAN, ENGINE_STD)


def probe_features(model, test) -> dict[str, torch.Tensor]:
    """Every layer's full flattened features of the probe subset, computed apart from the engine."""
    rows = probe_subset(len(test.labels), OPTIONS.probe_subset_size)
    with torch.no_grad():
        features = model.features(engine.data.normalize(test.images[rows], test.mean, test.std))
    return {name: tensor.flatten(1) for name, tensor in features.items()}


@pytest.fixture(scope="module")
def measured():
    model, test = tiny_convnet(), checkered_images(120, 1)
    rows, layers = engine.measure_layers(model, checkered_images(150, 0), test, 3, OPTIONS, seed=0)
    return keyed(rows), layers, probe_features(model, test)


def test_the_engine_cka_full_equals_ckatorch_on_the_full_flattened_features(measured):
    values, layers, features = measured
    names = list(features)
    assert names == ["input", "stem", "block00", "block01", "logits"]
    for lower, upper in zip(names, names[1:]):
        expected = float(cka_base(features[lower], features[upper], kernel="linear"))  # float64 inside
        assert values[(upper, "cka_full", "test")] == pytest.approx(expected, rel=1e-5), upper
    assert ("input", "cka_full", "test") not in values
    assert [name for name, metric, _ in values if metric == "cka_full"] == names[1:]  # a row per layer but the first


def test_only_the_gram_is_kept_after_the_pass(measured):
    _, layers, features = measured
    for name, flat in features.items():
        statistic = layers[name].statistics["probe_gram"]
        assert statistic.parts == [] and statistic.gram.shape == (50, 50) and statistic.gram.dtype == torch.float64
        centred = flat.double() - flat.double().mean(dim=0)
        torch.testing.assert_close(statistic.gram, centred @ centred.T, rtol=1e-5, atol=1e-6 * float(statistic.gram.abs().max()))


def test_pooled_and_full_cka_differ_where_pooling_drops_features_and_agree_where_it_does_not(measured):
    values, _, features = measured
    assert features["input"].shape[1] > PROBE_DIMENSIONS >= max(features[name].shape[1] for name in list(features)[1:])
    full, pooled = values[("stem", "cka_full", "test")], values[("stem", "cka_previous_layer", "test")]
    assert abs(full - pooled) > 0.1  # the channel means keep the grey level, not the checkerboard
    for name in ("block00", "block01", "logits"):  # no pooling: only the snapshot's float16 rounding between them
        assert values[(name, "cka_full", "test")] == pytest.approx(values[(name, "cka_previous_layer", "test")], abs=1e-3)


def test_a_constant_layer_has_an_undefined_cka():
    model = tiny_mlp()
    with torch.no_grad():
        model.blocks[0].linear.weight.zero_()  # block00 = ReLU(BN(0)): the same vector for every example
    rows = keyed(engine.measure(model, class_images(90, 3, 0), class_images(60, 3, 1), 3,
                                Analysis(metrics="cka_full", probe_subset_size=40), seed=0))
    assert math.isnan(rows[("block00", "cka_full", "test")]) and math.isnan(rows[("logits", "cka_full", "test")])


def test_the_gram_of_wide_features_is_formed_in_column_blocks_alike():
    features = torch.randn(40, 10_000, generator=torch.Generator().manual_seed(0)) * 3 + 5  # > one block of 4096
    centred = features.double() - features.double().mean(dim=0)
    torch.testing.assert_close(full_centred_gram(features), centred @ centred.T, rtol=1e-5, atol=1e-3)


def test_cka_full_is_measured_on_request_only():
    assert "cka_full" not in registry.select("all") and registry.METRICS["cka_full"].on_request
    assert registry.select("all,cka_full") == (*registry.select("all"), "cka_full")
    assert registry.select("cka_full") == ("cka_full",)
    train, test = class_images(90, 3, 0), class_images(60, 3, 1)
    every = {metric for _, metric, _ in keyed(engine.measure(tiny_mlp(), train, test, 3, Analysis(), seed=0))}
    assert "cka_full" not in every and "cka_previous_layer" in every
    named = engine.measure(tiny_mlp(), train, test, 3, Analysis(metrics="all,cka_full"), seed=0)
    assert {row["metric"] for row in named} == every | {"cka_full"}


def test_a_misspelt_metric_is_refused_in_one_line(tmp_path):
    with pytest.raises(SettingsError, match="names cka_ful; accepted: all .every metric but cka_full"):
        registry.select("all,cka_ful")
    result = run_cli("analysis.py", ["metrics=all,cka_ful", f"out_dir={tmp_path}"])
    assert result.returncode == 2 and "metrics=all,cka_ful names cka_ful" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
