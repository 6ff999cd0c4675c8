"""learngene-hf: learngenes (inheritable layers of a collective model) for the Hugging Face ecosystem.

Importing the package registers its configs and models with the transformers Auto classes, so
``AutoConfig`` / ``AutoModel`` / ``AutoModelForImageClassification.from_pretrained`` load saved
collective and individual models.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from .collective import (
    COLLECTIVE_PRESETS,
    CollectiveBaseModel,
    CollectiveConfig,
    CollectiveForImageClassification,
    CollectiveModel,
)
from .individual import IndividualBaseModel, IndividualConfig, IndividualForImageClassification, IndividualModel
from .vgg import VGGBN
from .inheritor import Inheritor
from .learngene import Learngene, LearngeneConfig
from .errors import (
    ArtifactError,
    ConfigError,
    DataError,
    HubError,
    IncompatibleLearngeneError,
    LearngeneError,
)

__version__ = "0.1.0"


def _register(config_cls, base_cls, head_cls) -> None:
    AutoConfig.register(config_cls.model_type, config_cls, exist_ok=True)
    AutoModel.register(config_cls, base_cls, exist_ok=True)
    AutoModelForImageClassification.register(config_cls, head_cls, exist_ok=True)


_register(CollectiveConfig, CollectiveBaseModel, CollectiveForImageClassification)
_register(IndividualConfig, IndividualBaseModel, IndividualForImageClassification)

__all__ = [
    "COLLECTIVE_PRESETS",
    "CollectiveBaseModel",
    "CollectiveConfig",
    "CollectiveForImageClassification",
    "CollectiveModel",
    "IndividualBaseModel",
    "IndividualConfig",
    "IndividualForImageClassification",
    "IndividualModel",
    "VGGBN",
    "Inheritor",
    "Learngene",
    "LearngeneConfig",
    "LearngeneError",
    "ConfigError",
    "DataError",
    "ArtifactError",
    "IncompatibleLearngeneError",
    "HubError",
    "__version__",
]
