"""learngene-hf: learngenes (inheritable layers of a collective model) for the Hugging Face ecosystem.

``import learngene_hf`` imports the model families (``learngene_hf.models``), and they register
themselves as timm's families do: the configs and models with the transformers Auto classes
(``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification``), the VGG-BN and ViT sizes
with timm (``timm.create_model("learngene_vgg_small")``). The other public names below load their
module on first use (PEP 562 ``__getattr__``).

With ``LEARNGENE_HF_DEFER_MODELS=1`` in the environment the model families are not imported
(a command line can then answer ``--help`` before torch is); :func:`import_models` imports them.

Layout, one folder per stage; a lower floor never imports a higher one:
core (``errors``, ``io``, ``logs``, ``stats``) -> ``data``, ``plots`` -> ``models`` -> ``artifact``
-> ``auto``, ``training`` -> ``selection`` -> ``fewshot`` -> ``cli``, ``pipeline``.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from .errors import ArtifactError, ConfigError, DataError, HubError, IncompatibleLearngeneError, LearngeneError

__version__ = "0.1.0"

#: Public name -> the module that defines it (imported on first access).
_LAZY_NAMES = {
    "COLLECTIVE_PRESETS": "models.collective",
    "CollectiveBaseModel": "models.collective",
    "CollectiveConfig": "models.collective",
    "CollectiveForImageClassification": "models.collective",
    "CollectiveModel": "models.collective",
    "IndividualBaseModel": "models.individual",
    "IndividualConfig": "models.individual",
    "IndividualForImageClassification": "models.individual",
    "IndividualModel": "models.individual",
    "VGGBN": "models.vgg",
    "VIT_PRESETS": "models.presets",
    "ViTCollectiveConfig": "models.vit_collective",
    "ViTCollectiveModel": "models.vit_collective",
    "ViTIndividualConfig": "models.vit_individual",
    "ViTIndividualModel": "models.vit_individual",
    "Learngene": "artifact.learngene",
    "LearngeneConfig": "artifact.config",
    "from_learngene": "auto",
    "CollectiveTrainingConfig": "training.config",
    "train_collective": "training.trainer",
    "load_run": "training.run",
    "ClassGaussians": "training.openworld",
    "FeatureBank": "training.openworld",
    "ReplayMemory": "training.replay",
    "Inheritor": "selection.inheritor",
    "ComparisonConfig": "fewshot.config",
    "compare_methods": "fewshot.compare",
    "FewShotConfig": "fewshot.config",
    "FrozenFeatureClassifier": "fewshot.baselines",
    "FrozenViTFeatureClassifier": "fewshot.baselines",
    "weight_selection": "fewshot.baselines",
    "baseline_methods": "fewshot.methods",
    "compare_sizes": "fewshot.compare",
    "compare_vit_depths": "fewshot.compare",
    "DEFAULT_VIT_LR_GRID": "fewshot.config",
}

#: The modules that define (and register) the model families.
MODEL_MODULES = (
    "models.vgg",
    "models.vit",
    "models.collective",
    "models.individual",
    "models.vit_collective",
    "models.vit_individual",
)

__all__ = [
    *_LAZY_NAMES,
    "LearngeneError",
    "ConfigError",
    "DataError",
    "ArtifactError",
    "IncompatibleLearngeneError",
    "HubError",
    "__version__",
    "import_models",
]


def import_models() -> None:
    """Import the model families, which registers them with transformers' Auto classes and with
    timm (``import learngene_hf`` does it, unless ``LEARNGENE_HF_DEFER_MODELS`` is set)."""
    for module in MODEL_MODULES:
        importlib.import_module(f"{__name__}.{module}")


def __getattr__(name: str) -> Any:
    module = _LAZY_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


if not os.environ.get("LEARNGENE_HF_DEFER_MODELS"):
    import_models()
