"""Models with one per-layer contract (DESIGN.md, contract 5), built by name.

    model = models.build(settings, input_shape=(3, 32, 32), num_classes=10)
    logits = model(x)                      # [B, num_classes]
    outputs = model.features(x)            # {"input": x, ["stem": …], "block00": …, …, "logits": …}
    before = model.features(x, point="pre_activation")  # same names; linear/conv outputs before BN and ReLU
"""

import importlib
import pkgutil

# Importing each module registers its families (timm-style @register, no if/elif lookup): every module of
# this package is imported, so a new family is one file here and nothing else.
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
from models.base import POINTS, FeatureTap, LayerwiseModel
from models.interventions import freeze_all_but_head, load_transferable, reset_last_modules, shrink_and_perturb
from models.registry import REGISTRY, UnknownArchitecture, build, check_builds, from_checkpoint, layer_type, register

ARCHITECTURES: tuple[str, ...] = tuple(sorted(REGISTRY))

__all__ = ["ARCHITECTURES", "POINTS", "REGISTRY", "FeatureTap", "LayerwiseModel", "UnknownArchitecture", "build", "check_builds", "from_checkpoint", "layer_type", "register", "reset_last_modules", "freeze_all_but_head", "load_transferable",
           "shrink_and_perturb"]
