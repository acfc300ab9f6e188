"""The model registry: sample models, torchvision architectures and user files.

``list_models()`` names what the registry offers; ``load_model(name_or_path)`` loads
a registry entry or a model file (ONNX, TorchScript, torch.export .pt2, or a
state_dict with ``arch=``) into a :class:`Model`, refusing files that would run code
when loaded.
"""

from workbench.models.model import SOURCES, Model, weights_fingerprint
from workbench.models.registry import list_models, load_model

__all__ = ["SOURCES", "Model", "list_models", "load_model", "weights_fingerprint"]
