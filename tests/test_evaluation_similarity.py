"""Similarity of two maps: known answers, then scipy's spearmanr and scikit-image's SSIM."""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from xaiutils.evaluation import similarity as S


@pytest.fixture
def maps():
    g = torch.Generator().manual_seed(0)
    return torch.randn(4, 3, 12, 12, generator=g, dtype=torch.float64), \
        torch.randn(4, 3, 12, 12, generator=g, dtype=torch.float64)


def test_spearman_of_a_map_with_itself_is_one(maps):
    a, _ = maps
    torch.testing.assert_close(S.spearman(a, a), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(S.spearman(a, -a), -torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(S.spearman(a, -a, absolute=True), torch.ones(4, dtype=torch.float64))
    one = a[:, :1]
    torch.testing.assert_close(S.spearman(one, one.exp()), torch.ones(4, dtype=torch.float64))  # monotone map


def test_spearman_matches_scipy_with_ties(maps):
    a, b = maps
    a = a.round(decimals=0)  # many ties
    for absolute in (False, True):
        ours = S.spearman(a, b, absolute=absolute)
        pa, pb = a.sum(1).flatten(1).numpy(), b.sum(1).flatten(1).numpy()  # channels are summed
        if absolute:
            pa, pb = np.abs(pa), np.abs(pb)
        expected = [spearmanr(u, v).statistic for u, v in zip(pa, pb)]
        np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)


def test_spearman_of_a_constant_map_is_nan(maps):
    a, _ = maps
    assert torch.isnan(S.spearman(torch.zeros_like(a), a)).all()


def test_ssim_matches_scikit_image_and_is_symmetric(maps):
    a, b = maps
    ours = S.ssim(a, b)
    pa, pb = a.sum(1).numpy(), b.sum(1).numpy()
    expected = [structural_similarity(u, v, data_range=max(u.max(), v.max()) - min(u.min(), v.min()))
                for u, v in zip(pa, pb)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12)
    torch.testing.assert_close(S.ssim(b, a), ours)
    torch.testing.assert_close(S.ssim(a, a), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(S.ssim(10 * a, 10 * b), ours)  # the joint range makes it scale invariant
    fixed = S.ssim(a, b, data_range=1.0)
    np.testing.assert_allclose(fixed.numpy(), [structural_similarity(u, v, data_range=1.0) for u, v in zip(pa, pb)])
    torch.testing.assert_close(S.ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8)), torch.ones(1, dtype=torch.float64))


def test_top_k_intersection_known_answer():
    a = torch.zeros(1, 1, 4, 4)
    b = torch.zeros(1, 1, 4, 4)
    a[0, 0, 0, :4] = torch.tensor([4.0, 3.0, 2.0, 1.0])
    b[0, 0, 0, :3] = torch.tensor([-5.0, 4.0, 0.5])
    assert S.top_k_intersection(a, b, 2).item() == pytest.approx(1.0)  # by magnitude: the same two pixels
    assert S.top_k_intersection(a, b, 2, absolute=False).item() == pytest.approx(1 / 2)
    assert S.top_k_intersection(a, b, 3).item() == pytest.approx(1.0)
    b[0, 0, 3, 3] = 6.0
    assert S.top_k_intersection(a, b, 3).item() == pytest.approx(2 / 3)
    assert S.top_k_intersection(a, a, 16).item() == 1.0


def test_center_of_mass_known_answer():
    a = torch.zeros(2, 1, 5, 7)
    a[0, 0, 1, 2] = 1.0
    a[0, 0, 3, 2] = -1.0  # magnitudes: the centre is between the two
    a[1, 0, 4, 6] = 2.0
    torch.testing.assert_close(S.center_of_mass(a), torch.tensor([[2.0, 2.0], [4.0, 6.0]]))
    b = torch.roll(a, shifts=(1, 0), dims=(2, 3))
    torch.testing.assert_close(S.center_of_mass_shift(a, b), torch.tensor([1.0, 4.0]))
    assert torch.isnan(S.center_of_mass(torch.zeros(1, 4, 4))).all()


def test_cosine_similarity(maps):
    a, b = maps
    torch.testing.assert_close(S.cosine_similarity(a, 3 * a), torch.ones(4, dtype=torch.float64))
    pa, pb = a.sum(1).flatten(1), b.sum(1).flatten(1)
    torch.testing.assert_close(S.cosine_similarity(a, b), torch.nn.functional.cosine_similarity(pa, pb))


def test_channels_are_summed():
    a = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    one = a.sum(1, keepdim=True)
    for fn in (S.spearman, S.ssim, S.cosine_similarity, S.center_of_mass_shift):
        torch.testing.assert_close(fn(a, a.flip(-1)), fn(one, one.flip(-1)))


def test_bad_input(maps):
    a, b = maps
    with pytest.raises(ValueError, match="same shape"):
        S.spearman(a, b[:, :1])
    with pytest.raises(ValueError, match="k must be"):
        S.top_k_intersection(a, b, 145)
    with pytest.raises(ValueError, match="k must be"):
        S.top_k_intersection(a, b, 0)
    with pytest.raises(ValueError, match="7x7"):
        S.ssim(a[..., :5, :5], b[..., :5, :5])
    with pytest.raises(ValueError, match="image maps"):
        S.ssim(a.flatten(1), b.flatten(1))
    with pytest.raises(ValueError, match="data_range"):
        S.ssim(a, b, data_range=-1.0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        S.cosine_similarity([1, 2], [1, 2])
    with pytest.raises(ValueError, match="batch"):
        S.cosine_similarity(torch.ones(3), torch.ones(3))


def test_top_k_agreement_known_answer():
    # features ordered by magnitude: a -> 0, 1, 2, 3; b -> 1, 0, 2, 5 (feature 2 with the other sign)
    a = torch.tensor([[4.0, -3.0, 2.0, 1.0, 0.0, 0.0]])
    b = torch.tensor([[3.0, 4.0, -2.0, 0.0, 0.0, 1.5]])
    expected = {  # k: (feature, rank, sign, signed_rank)
        1: (0.0, 0.0, 0.0, 0.0),
        2: (1.0, 0.0, 1 / 2, 0.0),  # the same two features, in swapped order; feature 1 changes sign
        3: (1.0, 1 / 3, 1 / 3, 0.0),  # feature 2 is third in both, with opposite signs
        4: (3 / 4, 1 / 4, 1 / 4, 0.0),
    }
    for k, values in expected.items():
        for measure, value in zip(S.AGREEMENTS, values):
            assert S.top_k_agreement(a, b, k, measure=measure).item() == pytest.approx(value), (k, measure)


def test_top_k_agreement_identities(maps):
    a, b = maps
    for measure in S.AGREEMENTS:
        torch.testing.assert_close(S.top_k_agreement(a, a, 10, measure=measure), torch.ones(4, dtype=torch.float64))
    # "feature" is the top-k intersection by magnitude; channels are summed in both
    torch.testing.assert_close(S.top_k_agreement(a, b, 10), S.top_k_intersection(a, b, 10))
    # the measures are nested, and a sign flip leaves feature and rank agreement unchanged but kills the signed ones
    values = {m: S.top_k_agreement(a, b, 30, measure=m) for m in S.AGREEMENTS}
    assert (values["signed_rank"] <= values["rank"]).all() and (values["rank"] <= values["feature"]).all()
    assert (values["signed_rank"] <= values["sign"]).all() and (values["sign"] <= values["feature"]).all()
    torch.testing.assert_close(S.top_k_agreement(a, -a, 10, measure="rank"), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(S.top_k_agreement(a, -a, 10, measure="sign"), torch.zeros(4, dtype=torch.float64))


def test_top_k_agreement_of_random_maps_is_at_chance_level():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4000, 20, generator=g), torch.randn(4000, 20, generator=g)
    assert S.top_k_agreement(a, b, 5).mean().item() == pytest.approx(5 / 20, abs=0.01)
    assert S.top_k_agreement(a, b, 5, measure="rank").mean().item() == pytest.approx(1 / 20, abs=0.005)
    assert S.top_k_agreement(a, b, 5, measure="sign").mean().item() == pytest.approx(5 / 20 / 2, abs=0.01)


def test_top_k_agreement_rejects_bad_arguments(maps):
    a, b = maps
    with pytest.raises(ValueError, match="measure"):
        S.top_k_agreement(a, b, 3, measure="kendall")
    for k in (0, 145, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            S.top_k_agreement(a, b, k)
