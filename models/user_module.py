"""`arch=module:FILE:CLASS` — the user's own nn.Module class, from a Python file.

    python train.py arch=module:my_models.py:TinyNet depth=3 width=64

The class is called with the keyword arguments its `__init__` names among depth, width, batch_norm,
input_shape, num_classes, patch_size and heads (all of them if it takes **keywords); it must take
num_classes (the dataset's) and map [B, C, H, W] images to [B, num_classes] logits. The run's settings hold
only the sizes it takes (conf reads the `__init__` with ast: conf.global_settings.init_keywords); the others are
null, in no run id or label (`arch=module:nets.py:SmallCNN` of a class taking neither depth nor width is run
`smallcnn-...`). Its layers
(HookedModel) are, by default, its top-level children but the last (which gives the logits), or those
`layers=` names; a class whose layers return [B, tokens, width] sets `token_streams = True`.

Loading a run built from a user's module *executes that file* (training, resuming and analysing it
alike): analyse only runs whose module file you trust. The run's settings record the file's sha256
(`module_sha256`, in its run id), and a file that changed since is refused by name before anything is
trained or measured: the run id would otherwise name weights of another model.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

from torch import nn

from conf.user_files import UserFileError, import_user_file
from models.hooked import HookedModel

PREFIX = "module:"
KEYWORDS = ("depth", "width", "batch_norm", "input_shape", "num_classes", "patch_size", "heads")


def parse(arch: str) -> tuple[Path, str]:
    """(the file, the class name) of `module:FILE:CLASS`."""
    path, _, class_name = arch[len(PREFIX):].rpartition(":")
    if not path or not class_name.isidentifier():
        raise ValueError(f"arch={arch} is not module:FILE:CLASS; accepted e.g. module:my_models.py:TinyNet")
    return Path(path), class_name


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_class(arch: str, recorded_sha256: str) -> type[nn.Module]:
    """The class, after checking that the file is the one the run recorded; ValueError (one line) for a
    missing or changed file, a missing class, or one that is no nn.Module."""
    path, class_name = parse(arch)
    if not path.is_file():
        raise ValueError(f"arch={arch}: {path} does not exist; accepted: module:FILE:CLASS with FILE a Python file")
    digest = file_sha256(path)
    if recorded_sha256 and digest != recorded_sha256:
        raise ValueError(f"arch={arch}: {path} changed since the run was made (sha256 {recorded_sha256[:12]}… recorded, "
                         f"{digest[:12]}… now); restore that file, or train a new run from this one (a new run id)")
    def notice() -> None:  # said whatever the log level: the user sees which file of theirs runs as code
        print(f"importing {path} (arch={arch}): it runs as code; analyse only runs whose module file you trust",
              file=sys.stderr, flush=True)

    try:  # one module object per file content, however often it is built
        module = import_user_file(path, "lab_user_module", digest, before=notice)
    except UserFileError as error:  # the user's file: any error there is theirs to fix
        raise ValueError(f"arch={arch}: {path} fails to import ({error})") from None
    model_class = getattr(module, class_name, None)
    if model_class is None:
        classes = [key for key, value in vars(module).items() if inspect.isclass(value)
                   and issubclass(value, nn.Module) and value.__module__ == module.__name__]
        raise ValueError(f"arch={arch}: {path} has no class {class_name}; accepted: one of its nn.Module classes "
                         f"({', '.join(classes) or 'none'})")
    if not (inspect.isclass(model_class) and issubclass(model_class, nn.Module)):
        raise ValueError(f"arch={arch}: {class_name} is not an nn.Module subclass")
    return model_class


def build(settings, *, input_shape: tuple[int, int, int], num_classes: int, layers: list[str] | None = None
          ) -> HookedModel:
    model_class = load_class(settings.arch, settings.module_sha256)
    parameters = inspect.signature(model_class).parameters
    if "num_classes" not in parameters and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        raise ValueError(f"arch={settings.arch}: {model_class.__name__}.__init__ takes no num_classes; accepted: a "
                         f"class whose __init__ takes num_classes (and any of {', '.join(KEYWORDS)})")
    sizes = {key: getattr(settings, key) for key in KEYWORDS if key not in ("input_shape", "num_classes")}
    values = {"input_shape": tuple(input_shape), "num_classes": num_classes,
              **{key: value for key, value in sizes.items() if value is not None}}  # null: the class takes none
    takes_all = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
    try:
        module = model_class(**{key: value for key, value in values.items() if takes_all or key in parameters})
    except Exception as error:  # the user's constructor: whatever fails there is theirs to fix
        raise ValueError(f"arch={settings.arch}: {model_class.__name__}.__init__ fails ({type(error).__name__}: "
                         f"{' '.join(str(error).split())[:200]}); accepted: a class that builds from those keywords")
    chosen = layers or [name for name, _ in module.named_children()][:-1]
    return HookedModel(module, chosen, token_streams=bool(getattr(model_class, "token_streams", False)))
