"""Scorers by name."""

from kgexp.models.base import KGEModel
from kgexp.models.bilinear import ComplEx, DistMult
from kgexp.models.translational import RotatE, TransE

MODELS: dict[str, type[KGEModel]] = {cls.name: cls for cls in (TransE, DistMult, ComplEx, RotatE)}

__all__ = ["MODELS", "ComplEx", "DistMult", "KGEModel", "RotatE", "TransE"]
