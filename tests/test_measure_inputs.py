"""`metrics.measure` on bad input: one SettingsError, before any computation, whose message starts with the
argument's name (what was given, what is accepted); valid calls, a DataLoader's and float images', measured;
the default normalisation is the lab's one rule (data.channel_statistics: the population std)."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from conf.errors import SettingsError
from data import channel_statistics
from metrics import measure
from models.hooked import UnknownLayer
from tests.fabricate import class_images, tiny_mlp

NAMES = ["ncc_accuracy", "nc1", "probe_accuracy"]
TRAIN, TEST = class_images(60, 3, seed=0), class_images(30, 3, seed=1)
IMAGES, LABELS = TRAIN.images, TRAIN.labels


def measured(**changes) -> pd.DataFrame:
    """measure on the tiny MLP and class images, with `changes` to its arguments."""
    arguments = {"model": tiny_mlp(3), "train": (IMAGES, LABELS), "test": (TEST.images, TEST.labels),
                 "metrics": NAMES, "device": "cpu", "probe_dimensions": 8, **changes}
    return measure(arguments.pop("model"), **arguments)


def batches(*parts):
    """A loader of the (images, labels[, ...]) batches `parts` (a list: iterable like a DataLoader)."""
    return list(parts)


def floats(images):
    return (images.float() / 255 - 0.5) / 0.25


BAD = {  # case: (changes to measured's arguments, the argument the message starts with)
    "model_text": ({"model": "resnet18"}, "model"),
    "model_none": ({"model": None}, "model"),
    "model_function": ({"model": lambda images: images}, "model"),
    "train_none": ({"train": None}, "train"),
    "train_three_tensors": ({"train": [IMAGES, LABELS, LABELS]}, "train"),
    "train_dict": ({"train": {"images": IMAGES, "labels": LABELS}}, "train"),
    "train_numpy_array": ({"train": IMAGES.numpy()}, "train"),
    "train_images_alone": ({"train": IMAGES}, "train"),
    "train_text": ({"train": "cifar10"}, "train"),
    "test_numpy_pair": ({"test": (TEST.images.numpy(), TEST.labels.numpy())}, "test"),
    "train_labels_list": ({"train": (IMAGES, LABELS.tolist())}, "train"),
    "images_3d": ({"train": (IMAGES[:, 0], LABELS)}, "train"),
    "images_int64": ({"train": (IMAGES.long(), LABELS)}, "train"),
    "images_bool": ({"test": (TEST.images > 100, TEST.labels)}, "test"),
    "images_float64_model_float32": ({"train": (floats(IMAGES).double(), LABELS),
                                      "test": (floats(TEST.images), TEST.labels)}, "train"),
    "labels_float": ({"train": (IMAGES, LABELS.float())}, "train"),
    "labels_one_hot": ({"train": (IMAGES, torch.nn.functional.one_hot(LABELS, 3))}, "train"),
    "labels_bool": ({"test": (TEST.images, TEST.labels > 0)}, "test"),
    "labels_negative": ({"train": (IMAGES, LABELS - 1)}, "train"),
    "lengths_differ": ({"test": (TEST.images, TEST.labels[:20])}, "test"),
    "train_empty": ({"train": (IMAGES[:0], LABELS[:0])}, "train"),
    "image_shapes_differ": ({"test": (class_images(30, 3, seed=1, size=8).images, TEST.labels)}, "test"),
    "labels_reach_num_classes": ({"num_classes": 2}, "num_classes"),
    "num_classes_one": ({"num_classes": 1, "train": (IMAGES, LABELS * 0), "test": (TEST.images, TEST.labels * 0)},
                        "num_classes"),
    "num_classes_text": ({"num_classes": "3"}, "num_classes"),
    "num_classes_float": ({"num_classes": 3.0}, "num_classes"),
    "num_classes_bool": ({"num_classes": True}, "num_classes"),
    "one_class_counted": ({"train": (IMAGES, LABELS * 0), "test": (TEST.images, TEST.labels * 0)}, "num_classes"),
    "normalization_mean_only": ({"normalization": (0.5, 0.4, 0.3)}, "normalization"),
    "normalization_text": ({"normalization": "imagenet"}, "normalization"),
    "normalization_two_channels": ({"normalization": ([0.5, 0.5], [0.2, 0.2])}, "normalization"),
    "normalization_std_zero": ({"normalization": ([0.5, 0.4, 0.3], [0.2, 0.0, 0.3])}, "normalization"),
    "normalization_std_negative": ({"normalization": (0.5, -0.2)}, "normalization"),
    "normalization_not_numbers": ({"normalization": ("a", "b")}, "normalization"),
    "normalization_needed_for_uint8_test": ({"train": (floats(IMAGES), LABELS)}, "normalization"),
    "normalization_constant_channel": ({"train": (IMAGES.clone().index_fill_(1, torch.tensor([0]), 7), LABELS)},
                                       "normalization"),
    "layers_text": ({"layers": "layer1"}, "layers"),
    "layers_numbers": ({"layers": [1, 2]}, "layers"),
    "metrics_number": ({"metrics": 42}, "metrics"),
    "metrics_none": ({"metrics": None}, "metrics"),
    "metrics_mixed": ({"metrics": ["ncc_accuracy", 3]}, "metrics"),
    "metrics_empty": ({"metrics": []}, "metrics"),
    "metrics_unknown_name": ({"metrics": ["ncc_accuracy", "accuracy_of_ncc"]}, "metrics"),
    "metrics_unknown_text": ({"metrics": "nope"}, "metrics"),
    "device_gpu": ({"device": "gpu"}, "device"),
    "device_bad_index": ({"device": "cuda:x"}, "device"),
    "device_meta": ({"device": "meta"}, "device"),
    "device_number": ({"device": 0}, "device"),
    "seed_text": ({"seed": "0"}, "seed"),
    "seed_float": ({"seed": 1.5}, "seed"),
    "seed_none": ({"seed": None}, "seed"),
    "option_unknown": ({"bogus": 1}, "bogus"),
    "option_misspelt": ({"probe_dimension": 8}, "probe_dimension"),
    "option_wrong_type": ({"probe_dimensions": "8"}, "probe_dimensions"),
    "option_out_of_range": ({"heldout_fraction": 2.0}, "heldout_fraction"),
    "loader_lengths_differ": ({"train": batches((IMAGES[:30], LABELS[:30]), (IMAGES[30:], LABELS[30:50]))}, "train"),
    "loader_shapes_differ": ({"train": batches((IMAGES[:30], LABELS[:30]),
                                               (class_images(30, 3, seed=2, size=8).images, LABELS[30:]))}, "train"),
    "loader_dtypes_differ": ({"train": batches((IMAGES[:30], LABELS[:30]), (floats(IMAGES[30:]), LABELS[30:]))},
                             "train"),
    "loader_dict_batches": ({"train": batches({"images": IMAGES, "labels": LABELS})}, "train"),
    "loader_images_only": ({"test": DataLoader(TensorDataset(TEST.images), batch_size=10)}, "test"),
    "loader_empty": ({"train": batches()}, "train"),
}


@pytest.mark.parametrize("changes, argument", BAD.values(), ids=BAD.keys())
def test_bad_argument_is_one_settings_error_naming_it(changes, argument):
    with pytest.raises(SettingsError, match=rf"^{argument}\b.*accepted: ") as refused:
        measured(**changes)
    assert "\n" not in str(refused.value)


def test_more_images_than_labels_is_refused_naming_both_counts():
    images = class_images(256, 3, seed=3).images
    with pytest.raises(SettingsError, match=r"^train: 256 images but 100 labels"):
        measured(train=(images, torch.arange(100) % 3))


def test_layers_as_one_text_says_a_list_of_module_paths():
    with pytest.raises(SettingsError, match=r"^layers='layer1'.*a list of module paths, e.g. \['layer1'\]"):
        measured(layers="layer1")


def test_a_module_the_model_lacks_is_still_unknown_layer():
    with pytest.raises(UnknownLayer, match="no module 'layer9'"):
        measured(layers=["layer9"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(SettingsError, match=r"^device='cuda'.*CUDA is not available"):
        measured(device="cuda")


def test_nothing_is_computed_before_the_refusal(monkeypatch):
    from metrics import engine

    monkeypatch.setattr(engine, "measure_layers", lambda *arguments, **options: pytest.fail("computed"))
    with pytest.raises(SettingsError):
        measured(train=(IMAGES, LABELS[:50]))


def test_valid_inputs_are_measured_alike():
    """A pair, a list pair, a DataLoader with a third item per batch, and options given in every accepted form."""
    pair = measured(num_classes=3, seed=0)
    assert set(pair["metric"]) == set(NAMES) and pair["value"].notna().all()
    loader = DataLoader(TensorDataset(IMAGES, LABELS, torch.arange(60)), batch_size=7)
    same = [measured(train=loader),
            measured(train=[IMAGES, LABELS], metrics=",".join(NAMES), device=torch.device("cpu")),
            measured(metrics=tuple(NAMES), device=None, layers=None, num_classes=None),
            measured(train=batches((IMAGES[:30], LABELS[:30]), (IMAGES[30:], LABELS[30:])), figures=False)]
    for frame in same:
        pd.testing.assert_frame_equal(frame, pair)


def test_valid_normalizations_and_float_images_are_measured():
    per_channel = measured(normalization=([0.5, 0.4, 0.3], [0.2, 0.25, 0.3]))
    tensors = measured(normalization=(torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.2, 0.25, 0.3]).view(3, 1, 1)))
    pd.testing.assert_frame_equal(per_channel, tensors)
    scalar = measured(normalization=(0.5, 0.25), num_classes=4)
    assert scalar["value"].notna().all()
    for images in (floats(IMAGES), floats(IMAGES).half().float()):
        frame = measured(train=(images, LABELS.to(torch.int32)),
                         test=(floats(TEST.images), TEST.labels.to(torch.uint8)))
        assert set(frame["metric"]) == set(NAMES) and frame["value"].notna().all()


def test_the_default_normalization_is_the_population_std_of_every_training_pixel():
    """data.channel_statistics, the one rule, gives numpy's float64 mean and std with ddof=0 over each channel's
    pixels to float32 rounding, not the Bessel-corrected std; measure's default is exactly it."""
    mean, std = channel_statistics(IMAGES)
    pixels = IMAGES.numpy().astype(np.float64) / 255
    float32_rounding = 2.0 ** -23  # one float32 step, relative: a float64 value rounded once to float32
    np.testing.assert_allclose(mean.numpy(), pixels.mean(axis=(0, 2, 3)), rtol=float32_rounding, atol=0)
    np.testing.assert_allclose(std.numpy(), pixels.std(axis=(0, 2, 3), ddof=0), rtol=float32_rounding, atol=0)
    bessel = pixels.std(axis=(0, 2, 3), ddof=1)  # 960 pixels a channel: 5e-4 above, far beyond the rounding
    assert (np.abs(std.numpy() - bessel) > float32_rounding * bessel).all()
    pd.testing.assert_frame_equal(measured(), measured(normalization=(mean, std)), check_exact=True)


def test_a_nearly_constant_channel_gets_the_labs_floor_and_a_constant_one_is_refused():
    """A channel of one grey level but one pixel has a std below one grey level, which the lab's datasets raise
    to 1/255: measure's default does the same; a channel of one grey level alone is refused, naming it."""
    images = IMAGES.clone()
    images[:, 1] = 100
    images[0, 1, 0, 0] = 101
    mean, std = channel_statistics(images)
    assert float(std[1]) == float(torch.tensor(1 / 255, dtype=torch.float32))
    pd.testing.assert_frame_equal(measured(train=(images, LABELS)),
                                  measured(train=(images, LABELS), normalization=(mean, std)), check_exact=True)
    images[0, 1, 0, 0] = 100
    with pytest.raises(SettingsError, match=r"^normalization=None: channel 1 of the train images is constant "
                                            r"\(every pixel 100\), so its std is 0; accepted: "):
        measured(train=(images, LABELS))


def test_valid_layers_seed_and_uint8_test_with_given_normalization():
    hooked = measured(layers=("blocks.0",), seed=-3)
    assert set(hooked["layer"]) >= {"blocks.0"}
    mixed = measured(train=(floats(IMAGES), LABELS), normalization=(0.5, 0.25))
    assert mixed["value"].notna().all()


def test_numpy_integers_are_taken_as_ints():
    """A numpy seed draws the same held-out part as the int (the draw hashes the seed's repr)."""
    pd.testing.assert_frame_equal(measured(seed=np.int64(1), num_classes=np.int64(3)), measured(seed=1, num_classes=3))
