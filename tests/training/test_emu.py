"""EMU: mask statistics, what is and is not mutated, gradients, the loss by hand, composition."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import sampler_setup

from kgexp.config.build import build_negatives
from kgexp.data.filter_index import FilterIndex
from kgexp.kernels import mutation_keep
from kgexp.models import MODELS
from kgexp.training.emu import EMU, EmbeddingMutation, EMULoss, MixTowardsPositive
from kgexp.training.losses import SoftmaxCrossEntropy
from kgexp.training.module import LinkPredictionModule
from kgexp.training.negatives import BASE_SAMPLERS, Corruption, NegativeSampling, UniformSampler


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def candidates(rows=64, columns=33, width=40, seed=1) -> torch.Tensor:
    return torch.randn(rows, columns, width, generator=generator(seed))


def copied_from_positive(original: torch.Tensor, mutated: torch.Tensor) -> torch.Tensor:
    """Boolean mask of coordinates that now equal the positive's and did not before."""
    positive = original[:, :1]
    return (mutated == positive) & (original != positive)


# -- masks --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("keep_prob", [0.39, 0.1, 0.8])
def test_bernoulli_mask_copies_a_fraction_one_minus_q_within_binomial_tolerance(keep_prob):
    original = candidates()
    mutated = EmbeddingMutation(keep_prob=keep_prob)(original, False, generator())
    copied = copied_from_positive(original, mutated)[:, 1:]
    n = copied.numel()
    expected = 1 - keep_prob
    tolerance = 5 * math.sqrt(expected * (1 - expected) / n)
    assert abs(copied.float().mean().item() - expected) < tolerance
    # Independent per negative: rows do not share one mask.
    assert not torch.equal(copied[:, 0], copied[:, 1])


@pytest.mark.parametrize("probability", [0.39, 0.02, 0.97])
def test_hashed_mask_bits_have_the_probability_in_every_position_class(probability):
    levels = round(probability * 2**16)
    keep = mutation_keep(250, 9, 400, (12345, 678), levels, False)[:, 1:]
    p = levels / 2**16
    for lane in range(4):  # no position class is biased (e.g. every 4th coordinate)
        bits = keep[..., lane::4]
        tolerance = 5 * math.sqrt(p * (1 - p) / bits.numel())
        assert abs(bits.float().mean().item() - p) < tolerance


def test_hashed_mask_at_zero_and_one_keeps_nothing_or_everything():
    assert not mutation_keep(7, 9, 8, (1, 2), 0, False)[:, 1:].any()
    assert mutation_keep(7, 9, 8, (1, 2), 2**16, False).all()


def test_hashed_mask_differs_between_seeds_and_is_a_pure_function_of_them():
    first = mutation_keep(20, 5, 16, (1, 2), 2**15, False)
    assert torch.equal(first, mutation_keep(20, 5, 16, (1, 2), 2**15, False))
    assert not torch.equal(first, mutation_keep(20, 5, 16, (1, 3), 2**15, False))
    assert not torch.equal(first, mutation_keep(20, 5, 16, (2, 2), 2**15, False))


def test_mix_gradient_matches_autograd_through_torch_where():
    original = candidates(rows=5, columns=7, width=6).double()
    keep = mutation_keep(5, 7, 6, (3, 4), round(0.4 * 2**16), False)
    weights = torch.randn(original.shape, dtype=torch.float64, generator=generator(4))
    grads = []
    for mix in (MixTowardsPositive.apply, lambda c, k: torch.where(k, c, c[:, :1])):
        leaf = original.clone().requires_grad_()
        (mix(leaf, keep) * weights).sum().backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert torch.autograd.gradcheck(
        lambda c: MixTowardsPositive.apply(c, keep), original.clone().requires_grad_()
    )


def test_fixed_count_copies_exactly_n_p_coordinates_on_every_row():
    original = candidates(width=40)
    mutated = EmbeddingMutation(keep_prob=0.39, mask="fixed_count")(original, False, generator())
    per_candidate = copied_from_positive(original, mutated)[:, 1:].sum(-1)
    assert (per_candidate == round(0.61 * 40)).all()


def test_positive_column_is_never_mutated():
    original = candidates()
    for mutation in ("mask", "mixup", "none"):
        for mask in ("bernoulli", "fixed_count"):
            mutated = EmbeddingMutation(mutation=mutation, mask=mask)(original, True, generator())
            assert torch.equal(mutated[:, 0], original[:, 0])


def test_mutated_coordinates_come_from_the_negative_or_the_positive_only():
    original = candidates()
    mutated = EmbeddingMutation()(original, False, generator())
    from_negative = mutated == original
    from_positive = mutated == original[:, :1]
    assert (from_negative | from_positive).all()


def test_complex_halves_get_independent_bits_by_default_and_shared_bits_by_option():
    original = candidates(width=40)
    for share, expect_equal in ((False, False), (True, True)):
        mutated = EmbeddingMutation(share_complex_mask=share)(original, True, generator())
        copied = copied_from_positive(original, mutated)[:, 1:]
        real, imaginary = copied.chunk(2, dim=-1)
        assert torch.equal(real, imaginary) is expect_equal


def test_fixed_count_with_shared_complex_bits_counts_complex_coordinates():
    original = candidates(width=40)
    mutated = EmbeddingMutation(mask="fixed_count", share_complex_mask=True)(original, True, generator())
    real, _ = copied_from_positive(original, mutated)[:, 1:].chunk(2, dim=-1)
    assert (real.sum(-1) == round(0.61 * 20)).all()


def test_mixup_mixes_each_candidate_with_one_beta_2_1_weight():
    original = candidates(rows=200, columns=65, width=8).double()
    mutated = EmbeddingMutation(mutation="mixup")(original, False, generator())
    positive = original[:, :1]
    # mutated = λ·neg + (1 − λ)·pos, so λ = (mutated − pos) / (neg − pos), the same on every coordinate.
    weights = (mutated - positive)[:, 1:] / (original - positive)[:, 1:]
    assert torch.allclose(weights, weights[..., :1].expand_as(weights), atol=1e-4)
    lam = weights[..., 0].flatten()
    assert abs(lam.mean().item() - 2 / 3) < 0.01  # E[Beta(2, 1)] = 2/3
    assert abs((lam < 0.5).float().mean().item() - 0.25) < 0.01  # P(λ < 1/2) = (1/2)^2


def test_masks_come_from_the_seeded_generator():
    original = candidates()
    mutation = EmbeddingMutation()
    assert torch.equal(mutation(original, False, generator(5)), mutation(original, False, generator(5)))
    assert not torch.equal(mutation(original, False, generator(5)), mutation(original, False, generator(6)))


def test_mutated_negatives_are_more_cosine_similar_to_the_positive():
    original = candidates(rows=128, columns=65, width=64)
    mutated = EmbeddingMutation()(original, False, generator())
    positive = original[:, :1]
    before = F.cosine_similarity(original[:, 1:], positive, dim=-1).mean()
    after = F.cosine_similarity(mutated[:, 1:], positive, dim=-1).mean()
    assert after > before + 0.3


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"keep_prob": 1.5}, "sampler.keep_prob"),
        ({"mask": "gaussian"}, "sampler.mask"),
        ({"mutation": "swap"}, "sampler.mutation"),
    ],
)
def test_bad_mutation_options_name_the_key(options, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        EmbeddingMutation(**options)


# -- loss by hand -------------------------------------------------------------------------------------
VANILLA = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.3]]
MUTATED = [[1.5, 1.0, 0.2], [-0.5, 0.4, 0.1]]


def soft_ce_by_hand(scores, targets):
    total = 0.0
    for row, target in zip(scores, targets, strict=True):
        log_z = math.log(sum(math.exp(s) for s in row))
        total += -sum(y * (s - log_z) for s, y in zip(row, target, strict=True))
    return total / len(scores)


@pytest.mark.parametrize(
    ("options", "targets", "scale"),
    [
        ({}, [1.0, 0.53, 0.53], 1 / 2),  # reference: ULS, c = 1/N
        ({"scale": "none"}, [1.0, 0.53, 0.53], 1.0),  # paper Eq. 5
        ({"beta": 0.0}, [1.0, 0.0, 0.0], 1 / 2),  # "without Unbounded-LS"
        ({"labels": "ls", "label_smoothing": 0.2}, [0.8, 0.1, 0.1], 1 / 2),  # plain label smoothing
        ({"beta": 0.3, "alpha": 0.5}, [1.0, 0.3, 0.3], 1 / 2),
    ],
)
def test_emu_loss_equals_hand_computation(options, targets, scale):
    loss = EMULoss(**options)
    alpha = options.get("alpha", 0.11)
    expected = soft_ce_by_hand(MUTATED, [targets] * 2) * scale + alpha * soft_ce_by_hand(
        VANILLA, [[1, 0, 0]] * 2
    )
    value = loss(torch.tensor(VANILLA, dtype=torch.float64), torch.tensor(MUTATED, dtype=torch.float64))
    assert value.item() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("options", "key"), [({"beta": -1}, "sampler.beta"), ({"scale": "sqrt"}, "sampler.scale")]
)
def test_bad_loss_options_name_the_key(options, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        EMULoss(**options)


# -- in the training step -----------------------------------------------------------------------------
def make_module(model_name: str, emu: EMU | None, num_entities=30, dim=6) -> LinkPredictionModule:
    model = MODELS[model_name](num_entities, 4, dim=dim)
    negatives = NegativeSampling(UniformSampler(num_negatives=7))
    module = LinkPredictionModule(
        model, negatives, SoftmaxCrossEntropy(), None, {"name": "adam", "lr": 0.1}, emu=emu
    )
    module.generator = generator(3)
    module.train_index = None
    return module


def test_gradients_reach_the_positive_and_the_negative_rows_through_mixed_coordinates():
    module = make_module("distmult", EMU(alpha=0.0, resample=False), dim=64)  # P(all 64 copied) ~ 1e-14
    positives = torch.tensor([[0, 1, 2]])
    negatives = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    loss = module._corruption_loss(positives, torch.ones(1), Corruption("tail", torch.tensor([0]), negatives))
    loss.backward()
    grad = module.model.entity.weight.grad
    assert grad[2].abs().sum() > 0  # the positive tail, through the copied coordinates too
    assert (grad[5:12].abs().sum(-1) > 0).all()  # every negative
    untouched = [e for e in range(30) if e not in (0, 2, *range(5, 12))]
    assert grad[untouched].abs().sum() == 0


def test_relation_and_kept_entity_are_not_mutated():
    """The mutated scores equal scores of the unmutated query against mutated tail embeddings."""
    module = make_module("rotate", EMU(resample=False))
    positives = torch.tensor([[0, 1, 2], [3, 2, 4]])
    negatives = torch.randint(30, (2, 7), generator=generator(1))
    model = module.model
    seen = {}
    original = module.emu.loss.__call__

    def spy(vanilla, mutated):
        seen["mutated"] = mutated
        return original(vanilla, mutated)

    module.emu.loss = spy
    module.generator = generator(9)
    module._corruption_loss(positives, torch.ones(2), Corruption("tail", torch.arange(2), negatives))
    ids = torch.cat([positives[:, 2:], negatives], dim=1)
    expected_candidates = EmbeddingMutation()(model.entity(ids), True, generator(9))
    expected = model.score_embeddings(positives[:, 0], positives[:, 1], "tail", expected_candidates)
    # The fused kernel sums the moduli in another order than the tensor ops: float tolerance.
    torch.testing.assert_close(seen["mutated"], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen["mutated"][:, 0], model.score_triples(*positives.T), rtol=1e-4, atol=1e-5)


def test_resample_draws_fresh_negatives_for_the_emu_term():
    calls = []

    class CountingSampler(UniformSampler):
        def sample(self, *args, **kwargs):
            calls.append(1)
            return super().sample(*args, **kwargs)

    for resample, expected_calls in ((True, 1), (False, 0)):
        calls.clear()
        module = make_module("complex", EMU(resample=resample))
        module.negatives = NegativeSampling(CountingSampler(num_negatives=7))
        negatives = torch.randint(30, (1, 7), generator=generator(1))
        module._corruption_loss(
            torch.tensor([[0, 1, 2]]), torch.ones(1), Corruption("head", torch.tensor([0]), negatives)
        )
        assert len(calls) == expected_calls


@pytest.mark.parametrize("model_name", sorted(MODELS))
@pytest.mark.parametrize("base", sorted(BASE_SAMPLERS))
def test_sampler_emu_composes_with_every_model_and_base_sampler(model_name, base, tmp_path):
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(
        {"sampler": {"name": "emu", "base": base, "num_negatives": 5, "filtered": True, "sides": "both"}}
    )
    negatives, emu = build_negatives(cfg)
    assert isinstance(emu, EMU)
    assert negatives.side_mode == ("bernoulli" if base == "bernoulli" else "both")
    module = make_module(model_name, emu)
    module.negatives = negatives
    train = torch.tensor([[0, 1, 2], [3, 2, 4], [5, 0, 6], [7, 3, 8]])
    negatives.fit(sampler_setup(train, 30, 4, tmp_path))
    module.train_index = FilterIndex(train, 30, 4)
    total = 0.0
    model = module.model
    for corruption in negatives.corrupt(train, 0, 30, module.train_index, module.generator, model):
        loss = module._corruption_loss(train[corruption.rows], torch.ones(len(corruption.rows)), corruption)
        loss.backward()
        total += loss.item()
    assert math.isfinite(total) and total > 0
    assert module.model.entity.weight.grad.abs().sum() > 0
