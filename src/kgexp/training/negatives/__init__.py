"""Negative samplers and the plan of corrupted sides: uniform, SANS, RW-SANS and NSCaching."""

from kgexp.training.negatives.base import Sampler, SamplerSetup
from kgexp.training.negatives.neighbourhood import NeighbourhoodSampler, RWSANSSampler, SANSSampler
from kgexp.training.negatives.nscaching import NSCachingSampler
from kgexp.training.negatives.sampling import (
    SIDE_MODES,
    Corruption,
    NegativeSampling,
    bernoulli_head_probability,
)
from kgexp.training.negatives.uniform import UniformSampler

#: ``sampler=<name>`` of the base samplers: the id distribution, and a side mode it imposes (None:
#: ``sampler.sides`` decides). ``bernoulli`` is uniform ids with Bernoulli-chosen sides.
BASE_SAMPLERS: dict[str, tuple[type[Sampler], str | None]] = {
    "uniform": (UniformSampler, None),
    "bernoulli": (UniformSampler, "bernoulli"),
    "sans": (SANSSampler, None),
    "rw_sans": (RWSANSSampler, None),
    "nscaching": (NSCachingSampler, None),
}

__all__ = [
    "BASE_SAMPLERS",
    "SIDE_MODES",
    "Corruption",
    "NSCachingSampler",
    "NegativeSampling",
    "NeighbourhoodSampler",
    "RWSANSSampler",
    "SANSSampler",
    "Sampler",
    "SamplerSetup",
    "UniformSampler",
    "bernoulli_head_probability",
]
