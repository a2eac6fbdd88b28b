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

__all__ = [
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
