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
