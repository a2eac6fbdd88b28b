"""Norm regularisers: L2 / L3 on the batch or the whole tables, N3 (Lacroix et al. 2018)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import Tensor

from kgexp import kernels
from kgexp.models.base import KGEModel
from kgexp.options import Count, NonNegativeFloat, OneOf, checked

SCOPES = ("batch", "table")


@checked("regularizer")
class NormRegularizer:
    """``weight * sum |x|^p`` over the embeddings of a batch (averaged over positives) or whole tables.

    With ``complex_modulus``, the ``[re | im]`` halves of complex embeddings are combined to the modulus
    first, so ``p = 3`` gives the N3 regulariser of Lacroix et al. (2018).
    """

    def __init__(
        self,
        weight: NonNegativeFloat,
        p: Count,
        scope: Annotated[str, OneOf(SCOPES)] = "batch",
        complex_modulus: bool = False,
    ):
        self.weight, self.p, self.scope, self.complex_modulus = weight, p, scope, complex_modulus

    def _norm(self, x: Tensor, factor: int) -> Tensor:
        modulus = self.complex_modulus and factor == 2
        if x.dim() == 2 and kernels.usable(x):  # one pass each way, no temporaries of the table's size
            return kernels.power_sum(x, self.p, modulus)
        if modulus:
            re, im = x.chunk(2, dim=-1)
            x = torch.sqrt(re**2 + im**2 + 1e-30)
        return x.abs().pow(self.p).sum()

    def __call__(self, model: KGEModel, triples: Tensor) -> Tensor:
        if self.scope == "table":
            terms = [
                (model.entity.weight, model.entity_factor),
                (model.relation.weight, model.relation_factor),
            ]
            return self.weight * sum(self._norm(x, f) for x, f in terms)
        h, r, t = triples.unbind(1)
        terms = [
            (model.entity(h), model.entity_factor),
            (model.relation(r), model.relation_factor),
            (model.entity(t), model.entity_factor),
        ]
        return self.weight * sum(self._norm(x, f) for x, f in terms) / len(triples)


#: ``regularizer=<name>``: presets of the one norm regulariser (their p, scope and modulus are in
#: ``conf/regularizer/<name>.yaml``); ``regularizer=none`` builds none.
REGULARIZERS: dict[str, type[NormRegularizer]] = dict.fromkeys(("l2", "l3", "n3"), NormRegularizer)
