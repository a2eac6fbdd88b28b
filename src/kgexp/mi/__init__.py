"""MI-KGE: a mutual-information regulariser between (h, r) and t and between (r, t) and h."""

from kgexp.mi.regularizer import MutualInformation

__all__ = ["MutualInformation"]
