"""python benchmarks/analysis_metrics.py [rounds=3] [threads=N] [device=cpu|cuda] — analysis cost, ours vs the seeds'.

Writes nothing; prints one table. Two models, each at random init in eval mode: CONV-4-32 (convnet, depth
4, width 32) and VGG-8 (LearnPhase's VGG, depth 8, width 32), on the embedded synthetic data (5000 train
+ 1000 test images, 3×32×32, 10 classes), all in one process. Rows per model:

1. the first design's metrics (NCC, CDNV, the probes, the decoder, the classifier, effective depth:
   metrics.engine.measure with metrics=CORE_METRICS) ÷ (one plain forward pass `model(x)` over the
   same train + test images at the same batch size + the floor). Target ≤ 1.5×. The floor is printed on
   a row of its own (no target): only the decoders' cross moments XᵀT — pooled features of every layer
   the decoder measures (all but `input`, whose decoder the engine skips) times the flattened normalised
   images — in float32 over both splits' batches, on features computed beforehand. Any exact
   closed-form decoder of the full image computes these products, N·D·K multiply-adds per layer.
2. the same ÷ one forward pass (printed, no target: what the floor adds).
1c. what the metrics added since (NC1-NC4, effective rank and srank, dormant units and feature norm, the
   probe snapshot and cka_previous_layer) add: (every metric, the default) − (the first design's), ÷ one
   forward pass. Target ≤ 0.5×.
3. NCC accuracy + CDNV only (measure with metrics=ncc_accuracy,cdnv) ÷ one forward pass. Target ≤ 1.3×.
4. the seed's NCC + CDNV (IntermediateNC style: per layer, three forward passes cut at that layer — class
   means, then E‖h − μ_c‖², then NCC distances — each with a Python loop over classes, float32) ÷ ours
   (metrics.moments: one forward pass for every layer, ClassMoments + cdnv, then ncc_predictions on the
   kept features against the train centres, in the engine's precision), training split. Target ≥ 4×.
   Both must agree: NCC accuracy and CDNV per layer, to float32 tolerance (asserted).
5. an Adam-trained linear decoder as LearnPhase trains it (metrics.trained: 20 epochs, lr 3e-4, batch 128)
   ÷ the closed-form decoder as the engine fits it (RidgeMoments on the fitting and held-out parts of the
   training split, choose_l2 on the held-out part, ridge_fit on the whole), from block01 pooled to
   Analysis().probe_dimensions back to the normalised image. Target ≥ 40×. The closed form's test MSE
   must not exceed the trained one's (asserted).

7. fixed costs that amortise (CONV-4-32): every metric's marginal cost per training image from N = 5000 to
   20000 ÷ that of one forward pass + the floor. Target ≤ 1.3×. And the same model's layers read by forward
   hooks (models/hooked.py, `layers=`) ÷ its built-in walk, every metric. Target ≤ 1.05×.

6. NC1 (Papyan et al.) on fabricated float32 features of a D = 4096 layer (5000 examples, 10 classes):
   the direct formula — Σ_W and Σ_B as D × D float64 matrices, tr(Σ_W Σ_B⁺) / C — ÷ the engine's exact
   streamed form (metrics/collapse.py: C × C matrices only), one round each. Target ≥ 10×. Both must
   agree to 1e-4 relative (asserted).

Ratios are of medians over `rounds` interleaved rounds (this shared machine's speed drifts); the baselines
run in the same process, the timed code starts from the same tensors on the device and, on CUDA, ends
with a device synchronisation. The header prints the load average: on 2 cores shared with other jobs,
MKL's threads oversubscribe and every time here inflates several-fold; `threads=1` is steadier then.

Why a row may stay below target on a CPU: the forward pass of these small networks is cheap (a few M
multiply-adds per image), while the decoder adds per image and layer D·K = 512 × 3072 ≈ 1.6 M
multiply-adds for XᵀT — the floor, which grows with N exactly as the forward does, so row 2 tends to
(forward + floor) ÷ forward, not to 1; row 1 divides it out. On top, the closed-form fits (eigh,
solves, the held-out errors: O(D²K) per layer) do not depend on N, so at 5000 images they are a fixed
cost that the forward pass does not amortise; more data lowers rows 1 and 3 towards their limits.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import data  # noqa: E402
import models  # noqa: E402
from conf import Settings  # noqa: E402
from conf.analysis import Analysis  # noqa: E402
from metrics import engine  # noqa: E402
from metrics.moments import ClassMoments, cdnv, ncc_predictions  # noqa: E402
from metrics.pooling import pool_to  # noqa: E402
from metrics.ridge import RidgeMoments, choose_l2, eigenbasis, ridge_fit  # noqa: E402
from metrics.statistics import PRECISION  # noqa: E402
from metrics.trained import mse, train_linear_map  # noqa: E402
from utils import seeded_generator  # noqa: E402

MODELS = {"CONV-4-32": dict(arch="convnet", depth=4, width=32), "VGG-8": dict(arch="vgg", depth=8, width=32)}
TRAIN_SIZE = 5000
DECODER_LAYER = "block01"
SEED = 0


def load_splits(device: torch.device, train_size: int = TRAIN_SIZE):
    """(train, test, num_classes, input shape) of the synthetic data on the device."""
    dataset = data.load_dataset(Settings(synthetic_train_size=train_size), data_root=Path("datasets"),
                                download=False).to(device)
    train = engine.SplitData(dataset.train_images, dataset.train_labels, dataset.mean, dataset.std)
    test = engine.SplitData(dataset.test_images, dataset.test_labels, dataset.mean, dataset.std)
    return train, test, dataset.num_classes, tuple(dataset.train_images.shape[1:])


def build_model(description: dict, input_shape: tuple, num_classes: int, device: torch.device):
    torch.manual_seed(SEED)
    return models.build(Settings(**description), input_shape=input_shape, num_classes=num_classes).to(device).eval()


def interleaved(functions: dict, rounds: int, device: torch.device) -> tuple[dict, dict]:
    """Median seconds per function over `rounds` interleaved rounds, and each function's last result."""
    seconds, results = {name: [] for name in functions}, {}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            results[name] = function()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in seconds.items()}, results


@torch.no_grad()
def plain_forward(model, train: engine.SplitData, test: engine.SplitData, batch_size: int) -> None:
    for split in (train, test):
        for _, _, images, _, _ in split.batches(batch_size):
            model(images)


# ---- 1. the floor: the decoder's cross moments alone ----

@torch.no_grad()
def decoder_inputs(model, splits, dimensions: int, batch_size: int) -> list:
    """Per batch of both splits: the pooled features of every layer the engine decodes (not `input`:
    metrics/engine.py SKIPPED_TARGETS) and the flattened images (not timed)."""
    skipped = {name for name, targets in engine.SKIPPED_TARGETS.items() if "image" in targets}
    return [([pool_to(tensor, dimensions) for name, tensor in model.features(images).items() if name not in skipped],
             images.flatten(1)) for split in splits for _, _, images, _, _ in split.batches(batch_size)]


def decoder_cross_moments(batches: list) -> list:
    """Only XᵀT of every decoded layer, summed in float32 over the batches: what any exact closed-form
    decoder of the full image must compute, N·D·K multiply-adds per layer, however the rest is organised."""
    sums = None
    for features, targets in batches:
        if sums is None:
            sums = [torch.zeros(layer.shape[1], targets.shape[1], device=targets.device) for layer in features]
        for total, layer in zip(sums, features):
            total.addmm_(layer.T, targets)
    return sums


# ---- 4. NCC + CDNV: the seed's per-class loops vs metrics.moments ----

def up_to(model, images, layer: str):
    """The layer's output without computing the layers above it: the seed cuts the network there
    (LearnPhase's nn.Sequential(children[:k]); IntermediateNC likewise) and runs the cut model per pass."""
    for name, tensor in model._walk(images):  # the models' one forward path (models/base.py)
        if name == layer:
            return tensor.flatten(1).float()
    raise KeyError(layer)


@torch.no_grad()
def seed_ncc_cdnv(model, split: engine.SplitData, layers, num_classes: int, batch_size: int) -> dict:
    """{layer: (NCC accuracy, CDNV)}, float32, three passes per layer with Python loops over classes."""
    values = {}
    for layer in layers:
        sums, counts = None, torch.zeros(num_classes, device=split.images.device)
        for _, _, images, labels, _ in split.batches(batch_size):  # pass 1: class means
            features = up_to(model, images, layer)
            if sums is None:
                sums = torch.zeros(num_classes, features.shape[1], device=features.device)
            for c in range(num_classes):
                mask = labels == c
                sums[c] += features[mask].sum(0)
                counts[c] += mask.sum()
        means = sums / counts.unsqueeze(1)
        squares = torch.zeros(num_classes, device=means.device)
        for _, _, images, labels, _ in split.batches(batch_size):  # pass 2: E‖h − μ_c‖² per class
            features = up_to(model, images, layer)
            for c in range(num_classes):
                mask = labels == c
                squares[c] += (features[mask] - means[c]).square().sum()
        variances = squares / counts
        pairs = [(variances[i] + variances[j]) / (2 * (means[i] - means[j]).square().sum())
                 for i in range(num_classes) for j in range(i + 1, num_classes)]
        correct = 0
        for _, _, images, labels, _ in split.batches(batch_size):  # pass 3: nearest class mean
            features = up_to(model, images, layer)
            distances = torch.stack([(features - means[c]).square().sum(1) for c in range(num_classes)], dim=1)
            correct += (distances.argmin(1) == labels).sum().item()
        values[layer] = (correct / len(split.labels), torch.stack(pairs).mean().item())
    return values


@torch.no_grad()
def our_ncc_cdnv(model, split: engine.SplitData, num_classes: int, batch_size: int) -> dict:
    """{layer: (NCC accuracy, CDNV)}: one pass for every layer, then NCC on the kept features, in the
    engine's precision (metrics/statistics.py PRECISION for each batch's reductions, float64 across batches)."""
    moments, kept = {}, {}
    for _, _, images, labels, _ in split.batches(batch_size):
        for name, tensor in model.features(images).items():
            flat = tensor.flatten(1)
            moments.setdefault(name, ClassMoments(num_classes, flat.shape[1], flat.device, PRECISION)).update(flat, labels)
            kept.setdefault(name, []).append(flat)
    values = {}
    for name, classes in moments.items():
        centres, present = classes.mean, classes.count > 0
        correct = sum((ncc_predictions(features, centres, present, PRECISION) == labels).sum()
                      for features, (_, _, _, labels, _) in zip(kept[name], split.batches(batch_size)))
        values[name] = (correct.item() / len(split.labels), cdnv(classes))
    return values


def check_agreement(seed_values: dict, our_values: dict, count: int) -> str:
    accuracy_gap = max(abs(seed_values[name][0] - our_values[name][0]) for name in our_values)
    cdnv_gap = max(abs(seed_values[name][1] / our_values[name][1] - 1) for name in our_values)
    # float32 sums (the seed) against float32 batches summed in float64 (ours): a near-tie may flip a prediction or two.
    assert accuracy_gap <= 2 / count + 1e-12, f"NCC accuracies differ by {accuracy_gap}"
    assert cdnv_gap <= 1e-3, f"CDNV differs by a relative {cdnv_gap}"
    return (f"seed vs ours: NCC accuracy max |diff| {accuracy_gap:.1e}, CDNV max relative diff {cdnv_gap:.1e} "
            f"over {len(our_values)} layers")


# ---- 5. the linear decoder: trained (LearnPhase) vs closed form ----

@torch.no_grad()
def decoder_data(model, split: engine.SplitData, options: Analysis) -> tuple[torch.Tensor, torch.Tensor]:
    """(pooled DECODER_LAYER features [N, D], normalised images [N, 3·32·32]) of the split."""
    features, images = [], []
    for _, _, batch, _, _ in split.batches(options.analysis_batch_size):
        features.append(pool_to(model.features(batch)[DECODER_LAYER], options.probe_dimensions))
        images.append(batch.flatten(1))
    return torch.cat(features), torch.cat(images)


def closed_form_decoder(features, targets, options: Analysis):
    """As the engine (metrics/statistics.py RidgeMaps): products in PRECISION on centred data summed in
    float64, on the fitting and the held-out part of a per-example random split (each part's rows taken
    once, as the engine's per-batch row order does); the l2 chosen on the held-out part, the map refitted
    on both."""
    heldout = torch.rand(len(features), generator=seeded_generator(SEED, "heldout")) < options.heldout_fraction
    heldout = heldout.to(features.device)
    widths = {"image": targets.shape[1]}
    fit = RidgeMoments(features.shape[1], widths, features.device, PRECISION)
    held_out = RidgeMoments(features.shape[1], widths, features.device, PRECISION, shift_like=fit)
    for moments, rows in ((fit, ~heldout), (held_out, heldout)):
        part_features, part_targets = features[rows], targets[rows]
        for start in range(0, len(part_features), options.analysis_batch_size):
            stop = start + options.analysis_batch_size
            moments.update(part_features[start:stop], {"image": part_targets[start:stop]})
    l2 = choose_l2(fit.view("image"), held_out.view("image"), basis=eigenbasis(fit), precision=PRECISION)
    return ridge_fit(fit.merge(held_out).view("image"), l2)


# ---- 6. NC1: the streamed exact form vs the direct D × D formula ----

NC1_SHAPE = dict(examples=5000, dimension=4096, classes=10)


def nc1_features(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Fabricated layer features (float32 [N, D], as a network hands them over) in NC1_SHAPE's classes."""
    generator = torch.Generator().manual_seed(SEED)
    examples, dimension, classes = NC1_SHAPE.values()
    labels = torch.randint(0, classes, (examples,), generator=generator)
    centres = torch.randn(classes, dimension, generator=generator)
    features = centres[labels] + 2 * torch.randn(examples, dimension, generator=generator)
    return features.to(device), labels.to(device)


def streamed_nc1(features, labels, batch_size: int) -> float:
    """As the engine: class moments and WithinClassProjection over batches, in PRECISION; C × C matrices only."""
    from metrics.collapse import WithinClassProjection, within_over_between
    from metrics.statistics import Batch, ClassStatistics, Context

    classes = NC1_SHAPE["classes"]
    context = Context(classes, 0, Analysis(), SEED, features.device)
    statistics = {"class_moments": ClassStatistics(frozenset(), context)}
    moments = statistics["class_moments"].moments["train"] = ClassMoments(classes, features.shape[1], features.device,
                                                                        PRECISION)
    for start in range(0, len(labels), batch_size):
        moments.update(features[start:start + batch_size], labels[start:start + batch_size])
    projection = WithinClassProjection(frozenset(), context)
    projection.fit(statistics)
    for start in range(0, len(labels), batch_size):
        batch = Batch("train", features[start:start + batch_size], labels[start:start + batch_size], {}, {}, 512)
        projection.predict(batch, statistics)
    return within_over_between(moments, projection.products)


def direct_nc1(features, labels) -> float:
    """Papyan et al.'s formula as written: Σ_W and Σ_B as D × D float64 matrices, tr(Σ_W Σ_B⁺) / C."""
    features = features.to(torch.float64)
    classes = NC1_SHAPE["classes"]
    means = torch.stack([features[labels == c].mean(dim=0) for c in range(classes)])
    centred = features - means[labels]
    within = centred.T @ centred / len(labels)
    offsets = means - features.mean(dim=0)
    between = offsets.T @ offsets / classes
    return (torch.trace(within @ torch.linalg.pinv(between, hermitian=True)) / classes).item()


def nc1_row(device: torch.device, batch_size: int) -> str:
    """6. NC1 on a D = 4096 layer: the direct D × D formula ÷ the streamed form (one round each: the
    direct one takes tens of seconds). Target ≥ 10×. They must agree to 1e-4 relative (float32 batches)."""
    features, labels = nc1_features(device)
    seconds, results = interleaved({"direct": lambda: direct_nc1(features, labels),
                                    "streamed": lambda: streamed_nc1(features, labels, batch_size)}, 1, device)
    ratio = seconds["direct"] / seconds["streamed"]
    show(row(f"NC1, D={NC1_SHAPE['dimension']}: direct DxD / streamed", seconds["streamed"], seconds["direct"], ratio,
             ">=10x", ratio >= 10))
    difference = abs(results["streamed"] / results["direct"] - 1)
    assert difference <= 1e-4, f"streamed NC1 {results['streamed']} differs from the direct {results['direct']}"
    return f"NC1 streamed {results['streamed']:.6g} vs direct {results['direct']:.6g}: relative difference {difference:.1e}"


# ---- the table ----

def row(name: str, ours: float, baseline: float, ratio: float, target: str = "-", met: bool | None = None) -> str:
    verdict = "-" if met is None else ("met" if met else "below")
    return f"{name:<56} {ours:>8.2f}s {baseline:>9.2f}s {ratio:>7.2f}x {target:>7} {verdict:>6}"


def show(line: str) -> None:
    print(line, flush=True)


def main(arguments: list[str]) -> int:
    options = dict(argument.split("=", 1) for argument in arguments)
    rounds = int(options.get("rounds", 3))
    device = torch.device(options.get("device", "cpu"))
    if "threads" in options:
        torch.set_num_threads(int(options["threads"]))
    analysis = Analysis()
    train, test, num_classes, input_shape = load_splits(device)
    show(f"analysis cost on {device} ({torch.get_num_threads()} threads): {' and '.join(MODELS)} (random init), "
         f"synthetic {'x'.join(map(str, input_shape))}, {len(train.labels)} train + {len(test.labels)} test, batch "
         f"{analysis.analysis_batch_size}, median of {rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}")
    show(f"{'measurement':<56} {'ours':>9} {'baseline':>10} {'ratio':>8} {'target':>7} {'':>6}")
    notes = []
    for label, description in MODELS.items():
        model = build_model(description, input_shape, num_classes, device)
        setup = (model, train, test, num_classes, analysis, rounds, device)
        engine_rows(label, setup)
        notes += [f"{label}: {ncc_row(label, setup)}", f"{label}: {decoder_row(label, setup)}"]
    notes.append(nc1_row(device, analysis.analysis_batch_size))
    amortisation_rows(device, rounds, analysis)
    for note in notes + [f"load average at the end {os.getloadavg()[0]:.1f}"]:
        show(note)
    return 0


# The metrics of the lab's first design (LearnPhase and IntermediateNC's own): rows 1-2 are about them;
# the metrics added since (neural collapse NC1-NC4, feature rank, dormant units) are row 1c's.
CORE_METRICS = ("ncc_accuracy,cdnv,probe_accuracy,transfer_accuracy,reconstruction_mse,classifier_loss,"
                "classifier_accuracy,effective_depth")


def engine_rows(label: str, setup) -> None:
    """Rows 1-3 and the floor: the engine ÷ one forward pass (+ the floor), timed in one interleaved group."""
    model, train, test, num_classes, analysis, rounds, device = setup
    batch = analysis.analysis_batch_size
    batches = decoder_inputs(model, (train, test), analysis.probe_dimensions, batch)
    selections = {"core": dataclasses.replace(analysis, metrics=CORE_METRICS), "all": analysis,
                  "ncc_cdnv": dataclasses.replace(analysis, metrics="ncc_accuracy,cdnv")}
    timed = {name: (lambda chosen=chosen: engine.measure(model, train, test, num_classes, chosen, seed=SEED))
             for name, chosen in selections.items()}
    seconds, _ = interleaved({"forward": lambda: plain_forward(model, train, test, batch),
                              "floor": lambda: decoder_cross_moments(batches), **timed}, rounds, device)
    forward, floor = seconds["forward"], seconds["floor"]
    ratio = seconds["core"] / (forward + floor)
    show(row(f"{label}: first-design metrics / (fwd + floor)", seconds["core"], forward + floor, ratio, "<=1.5x",
             ratio <= 1.5))
    show(row(f"{label}:   floor: X^T T float32, {len(batches[0][0])} layers / fwd", floor, forward, floor / forward))
    show(row(f"{label}: first-design metrics / 1 fwd", seconds["core"], forward, seconds["core"] / forward))
    added = seconds["all"] - seconds["core"]
    show(row(f"{label}: NC1-4, rank, dormant, CKA added / 1 fwd", added, forward, added / forward, "<=0.5x",
             added / forward <= 0.5))
    ratio = seconds["ncc_cdnv"] / forward
    show(row(f"{label}: ncc_accuracy,cdnv / 1 fwd", seconds["ncc_cdnv"], forward, ratio, "<=1.3x", ratio <= 1.3))


def ncc_row(label: str, setup) -> str:
    """4. NCC + CDNV, every layer, training split: the seed's loops ÷ ours; returns the agreement note."""
    model, train, _, num_classes, analysis, rounds, device = setup
    batch = analysis.analysis_batch_size
    seconds, results = interleaved({
        "seed": lambda: seed_ncc_cdnv(model, train, model.layer_names(), num_classes, batch),
        "ours": lambda: our_ncc_cdnv(model, train, num_classes, batch)}, rounds, device)
    ratio = seconds["seed"] / seconds["ours"]
    show(row(f"{label}: NCC+CDNV all layers: seed loops / ours", seconds["ours"], seconds["seed"], ratio, ">=4x",
             ratio >= 4))
    return check_agreement(results["seed"], results["ours"], len(train.labels))


def decoder_row(label: str, setup) -> str:
    """5. the linear decoder of one layer: trained by Adam for 20 epochs (LearnPhase) ÷ closed form."""
    model, train, test, _, analysis, rounds, device = setup
    train_features, train_targets = decoder_data(model, train, analysis)
    test_features, test_targets = decoder_data(model, test, analysis)
    seconds, results = interleaved({
        "trained": lambda: train_linear_map(train_features, train_targets, epochs=20, optimizer="adam", seed=SEED),
        "closed": lambda: closed_form_decoder(train_features, train_targets, analysis)}, rounds, device)
    ratio = seconds["trained"] / seconds["closed"]
    show(row(f"{label}: decoder {DECODER_LAYER}->image: Adam 20 ep / closed", seconds["closed"], seconds["trained"],
             ratio, ">=40x", ratio >= 40))
    trained_mse = mse(test_features, test_targets, *results["trained"])
    closed_mse = mse(test_features, test_targets, *results["closed"])
    assert closed_mse <= trained_mse, f"closed-form test MSE {closed_mse} exceeds the trained one's {trained_mse}"
    return (f"decoder test MSE (normalised pixels², {test_features.shape[1]} dims): closed form "
            f"{closed_mse:.4f} <= Adam 20 epochs {trained_mse:.4f}")


# ---- 7. fixed costs that amortise, and layers read by hooks ----

AMORTISATION_SIZES = (5000, 20000)  # training images; the test split stays at 1000


def amortisation_rows(device: torch.device, rounds: int, analysis: Analysis) -> None:
    """7a. CONV-4-32: every metric's marginal cost per training image between N = 5000 and 20000 ÷ that of
    one forward pass + the floor (what any exact analysis must do per image). The exact fits cost the
    same at any N, so the marginal ratio is what remains once they are amortised. Target <= 1.3x.
    7b. the same model's layers read by forward hooks on its modules (models/hooked.py) ÷ its built-in
    walk, every metric, N = 5000. Target <= 1.05x."""
    from models.hooked import HookedModel

    batch, timings = analysis.analysis_batch_size, {}
    for size in AMORTISATION_SIZES:
        train, test, num_classes, input_shape = load_splits(device, size)
        model = build_model(MODELS["CONV-4-32"], input_shape, num_classes, device)
        batches = decoder_inputs(model, (train, test), analysis.probe_dimensions, batch)
        functions = {"all": lambda: engine.measure(model, train, test, num_classes, analysis, seed=SEED),
                     "floor": lambda: (plain_forward(model, train, test, batch), decoder_cross_moments(batches))}
        if size == AMORTISATION_SIZES[0]:
            hooked = HookedModel(model, ["stem", *(f"blocks.{index}" for index in range(len(model.blocks)))])
            functions["hooks"] = lambda: engine.measure(hooked, train, test, num_classes, analysis, seed=SEED)
        timings[size], _ = interleaved(functions, rounds, device)
        del batches
    small, large = AMORTISATION_SIZES
    images = large - small
    ours = (timings[large]["all"] - timings[small]["all"]) / images * 1e6
    floor = (timings[large]["floor"] - timings[small]["floor"]) / images * 1e6
    print(f"{'CONV-4-32: every metric, marginal us/image N=5k->20k':<56} {ours:>8.1f}u {floor:>9.1f}u "
          f"{ours / floor:>7.2f}x {'<=1.3x':>7} {'met' if ours / floor <= 1.3 else 'below':>6}   (baseline: fwd + floor)",
          flush=True)
    for size in AMORTISATION_SIZES:
        show(row(f"CONV-4-32:   every metric / (fwd + floor), N={size}", timings[size]["all"], timings[size]["floor"],
                 timings[size]["all"] / timings[size]["floor"]))
    hooks, walk = timings[small]["hooks"], timings[small]["all"]
    show(row("CONV-4-32: every metric, hooked layers / built-in walk", hooks, walk, hooks / walk, "<=1.05x",
             hooks / walk <= 1.05))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
