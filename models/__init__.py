"""Models with one per-layer contract (DESIGN.md, contract 5), built by name.

    model = models.build(settings, input_shape=(3, 32, 32), num_classes=10)
    logits = model(x)                      # [B, num_classes]
    outputs = model.features(x)            # {"input": x, ["stem": …], "block00": …, …, "logits": …}
    before = model.features(x, point="pre_activation")  # same names; linear/conv outputs before BN and ReLU
"""

# Importing each family registers it (timm-style @register, no if/elif lookup).
from models import convnet, convresnet, mlp, resnet, vgg, vit  # noqa: F401
from models.base import POINTS, FeatureTap, LayerwiseModel
from models.interventions import reset_last_modules, shrink_and_perturb
from models.registry import REGISTRY, UnknownArchitecture, build, check_builds, from_checkpoint, register

ARCHITECTURES: tuple[str, ...] = tuple(sorted(REGISTRY))

__all__ = ["ARCHITECTURES", "POINTS", "REGISTRY", "FeatureTap", "LayerwiseModel", "UnknownArchitecture", "build", "check_builds", "from_checkpoint", "register", "reset_last_modules",
           "shrink_and_perturb"]
