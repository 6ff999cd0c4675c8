"""learngene-hf: learngenes (inheritable layers of a collective model) for the Hugging Face ecosystem.

``import learngene_hf`` is light: it imports neither torch nor timm nor transformers. The public
names below load their module on first use (``learngene_hf.CollectiveModel`` imports the model
family). The model modules register themselves when imported: the configs and models with the
transformers Auto classes (``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification``),
the VGG-BN sizes with timm (``timm.create_model("learngene_vgg_small")``). So that
``import learngene_hf`` followed by ``AutoModel.from_pretrained(...)`` or ``timm.create_model(...)``
works without touching a model name first, the model modules are also imported right after
transformers or timm finishes importing (or at once, when one was imported before this package).
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import warnings
from typing import Any

from .errors import (
    ArtifactError,
    ConfigError,
    DataError,
    HubError,
    IncompatibleLearngeneError,
    LearngeneError,
)

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported on first access).
_LAZY_NAMES = {
    "COLLECTIVE_PRESETS": "collective",
    "CollectiveBaseModel": "collective",
    "CollectiveConfig": "collective",
    "CollectiveForImageClassification": "collective",
    "CollectiveModel": "collective",
    "FewShotConfig": "fewshot",
    "IndividualBaseModel": "individual",
    "IndividualConfig": "individual",
    "IndividualForImageClassification": "individual",
    "IndividualModel": "individual",
    "Inheritor": "inheritor",
    "FrozenFeatureClassifier": "baselines",
    "FrozenViTFeatureClassifier": "baselines",
    "weight_selection": "baselines",
    "baseline_methods": "descendants",
    "compare_sizes": "descendants",
    "compare_vit_depths": "descendants",
    "DEFAULT_VIT_LR_GRID": "descendants",
    "Learngene": "learngene",
    "LearngeneConfig": "learngene",
    "ClassGaussians": "openworld",
    "FeatureBank": "openworld",
    "ReplayMemory": "replay",
    "VGGBN": "vgg",
    "VIT_PRESETS": "vit",
    "ViTCollectiveConfig": "vit",
    "ViTCollectiveModel": "vit",
    "ViTIndividualConfig": "vit",
    "ViTIndividualModel": "vit",
}

#: Library -> the modules of this package that register themselves with it when imported.
_REGISTERING_MODULES = {"timm": ("vgg", "vit"), "transformers": ("collective", "individual", "vit")}

__all__ = [
    *_LAZY_NAMES,
    "LearngeneError",
    "ConfigError",
    "DataError",
    "ArtifactError",
    "IncompatibleLearngeneError",
    "HubError",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


def _initializing_modules() -> set[str]:
    """This package's modules that are part-way through their import right now."""
    return {
        name
        for name, module in list(sys.modules.items())
        if name.startswith(__name__ + ".") and getattr(getattr(module, "__spec__", None), "_initializing", False)
    }


class _Registration(importlib.abc.MetaPathFinder):
    """Imports the self-registering model modules once transformers / timm are imported.

    Watches the imports of the libraries (``waiting``) and of this package's own modules. After
    one finishes, every library that is imported but not served yet (``pending``) gets its model
    modules imported, unless another module of this package is still part-way through its import
    (it imports the model modules itself or finishes later, and then this runs again).
    """

    def __init__(self, waiting: set[str]):
        self.waiting = set(waiting)
        self.pending: set[str] = set()
        self.busy = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname not in self.waiting and not fullname.startswith(__name__ + "."):
            return None
        spec = None
        for finder in list(sys.meta_path):
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            if fullname in self.waiting:
                self.waiting.discard(fullname)
                self.pending.add(fullname)
            self.register(finished=fullname)

        spec.loader.exec_module = exec_module
        return spec

    def register(self, finished: str | None = None) -> None:
        if self.busy or not self.pending or _initializing_modules() - {finished}:
            return
        self.busy = True
        try:
            for library in sorted(self.pending):
                for module in _REGISTERING_MODULES[library]:
                    importlib.import_module(f"{__name__}.{module}")
                self.pending.discard(library)
        except Exception as err:  # never break the user's own import
            self.pending.clear()
            warnings.warn(f"learngene_hf could not register its models: {err!r}", stacklevel=2)
        finally:
            self.busy = False
        if not self.waiting and not self.pending and self in sys.meta_path:
            sys.meta_path.remove(self)


def _install_registration() -> None:
    hook = _Registration({library for library in _REGISTERING_MODULES if library not in sys.modules})
    hook.pending = {library for library in _REGISTERING_MODULES if library in sys.modules}
    if hook.waiting or hook.pending:
        sys.meta_path.insert(0, hook)
    hook.register()


_install_registration()
