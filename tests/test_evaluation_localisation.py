"""Localisation and complexity: hand-made masks and maps first, then Quantus with identical settings."""
import numpy as np
import pytest
import torch
from torch import nn

from xaiutils.evaluation import complexity as C
from xaiutils.evaluation import localisation as L


@pytest.fixture
def square():
    """A 6x6 image whose mask is the 2x2 square at rows 1-2, columns 3-4."""
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.bool)
    mask[0, 0, 1:3, 3:5] = True
    return mask


def test_pointing_game_hand_made(square):
    attr = torch.zeros(2, 1, 6, 6)
    attr[0, 0, 2, 4] = 1.0   # maximum inside
    attr[1, 0, 5, 0] = 1.0   # maximum far outside
    mask = square.expand(2, -1, -1, -1)
    assert L.pointing_game(attr, mask).tolist() == [1.0, 0.0]
    near = torch.zeros(1, 1, 6, 6)
    near[0, 0, 4, 4] = 1.0   # two pixels below the square
    assert L.pointing_game(near, square).item() == 0.0
    assert L.pointing_game(near, square, tolerance=1.5).item() == 0.0
    assert L.pointing_game(near, square, tolerance=2.0).item() == 1.0
    tie = torch.zeros(1, 1, 6, 6)
    tie[0, 0, 5, 5] = tie[0, 0, 1, 3] = 1.0  # one of the maxima is inside
    assert L.pointing_game(tie, square).item() == 1.0


def test_relevance_mass_and_rank_hand_made(square):
    attr = torch.zeros(1, 1, 6, 6)
    attr[0, 0, 1, 3] = 3.0           # inside
    attr[0, 0, 2, 4] = 1.0           # inside
    attr[0, 0, 0, 0] = 2.0           # outside
    attr[0, 0, 5, 5] = 1.5           # outside
    attr[0, 0, 4, 0] = -4.0          # negative: not counted
    assert L.relevance_mass_accuracy(attr, square).item() == pytest.approx(4.0 / 7.5)
    assert L.relevance_mass_accuracy(attr, square, positive=False).item() == pytest.approx(4.0 / 3.5)
    # K = 4 mask pixels; the top 4 relevances are 3, 2, 1.5, 1: two of them inside
    assert L.relevance_rank_accuracy(attr, square).item() == pytest.approx(2 / 4)
    perfect = square.double() * torch.arange(1, 37, dtype=torch.float64).view(1, 1, 6, 6)
    assert L.relevance_rank_accuracy(perfect, square).item() == 1.0
    assert L.relevance_mass_accuracy(perfect, square).item() == 1.0
    assert L.auc(perfect, square).item() == 1.0
    assert L.auc(-perfect, square).item() == 0.0


def test_auc_equals_scikit_learn_with_ties(square):
    from sklearn.metrics import roc_auc_score

    attr = torch.randint(0, 4, (3, 1, 6, 6), generator=torch.Generator().manual_seed(0)).double()  # many ties
    mask = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(1)) > 0.6
    expected = [roc_auc_score(m.flatten().numpy(), a.flatten().numpy()) for a, m in zip(attr, mask)]
    np.testing.assert_allclose(L.auc(attr, mask).numpy(), expected, rtol=1e-12)


def test_channels_are_summed_and_masks_may_lack_the_channel_dim(square):
    attr = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    for fn in (L.pointing_game, L.relevance_mass_accuracy, L.relevance_rank_accuracy, L.auc):
        torch.testing.assert_close(fn(attr, square), fn(attr.sum(1, keepdim=True), square[:, 0]))


def test_on_the_shapes_masks():
    from xaiutils.data import shapes

    data = shapes("test")
    mask = data.mask[:4]
    assert (L.pointing_game(mask.double(), mask) == 1).all()
    assert (L.relevance_mass_accuracy(mask.double(), mask) == 1).all()
    assert (L.relevance_rank_accuracy(mask.double(), mask) == 1).all()


def test_bad_input(square):
    attr = torch.rand(1, 1, 6, 6)
    with pytest.raises(ValueError, match="empty"):
        L.pointing_game(attr, torch.zeros_like(square))
    with pytest.raises(ValueError, match="empty"):
        L.relevance_mass_accuracy(attr.expand(2, -1, -1, -1), torch.cat([square, torch.zeros_like(square)]))
    with pytest.raises(ValueError, match="whole image"):
        L.auc(attr, torch.ones_like(square))
    with pytest.raises(ValueError, match="same"):
        L.relevance_rank_accuracy(torch.rand(1, 1, 5, 6), square)
    with pytest.raises(ValueError, match="tolerance"):
        L.pointing_game(attr, square, tolerance=-1)
    with pytest.raises(TypeError, match="mask"):
        L.auc(attr, [[1]])


# ---------------------------------------------------------------------------- complexity
def test_sparseness_and_complexity_known_answers():
    n = 64
    uniform = torch.ones(1, 1, 8, 8, dtype=torch.float64)
    one_hot = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    one_hot[0, 0, 3, 5] = -2.0
    assert C.sparseness(uniform).item() == pytest.approx(0.0, abs=1e-12)
    assert C.sparseness(one_hot).item() == pytest.approx(1 - 1 / n)
    assert C.entropy(uniform).item() == pytest.approx(np.log(n))
    assert C.entropy(one_hot).item() == pytest.approx(0.0, abs=1e-12)
    half = torch.zeros(1, 64, dtype=torch.float64)
    half[0, :32] = 1.0
    assert C.entropy(half).item() == pytest.approx(np.log(32))
    # Hurley and Rickard's form of the Gini index, as Chalasani et al. write it
    a = torch.rand(3, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = a.sort(1).values
    k = torch.arange(1, 51, dtype=torch.float64)
    gini = 1 - 2 * ((s / s.sum(1, keepdim=True)) * (50 - k + 0.5) / 50).sum(1)
    torch.testing.assert_close(C.sparseness(a), gini)
    assert torch.isnan(C.sparseness(torch.zeros(1, 5))).all() and torch.isnan(C.entropy(torch.zeros(1, 5))).all()


# ---------------------------------------------------------------------------- Quantus
def _quantus(cls, attr, mask=None, **options):
    x = np.random.default_rng(0).random((attr.shape[0], 3, *attr.shape[2:]))
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].size, 2)).double()
    metric = cls(normalise=False, disable_warnings=True, **options)
    return np.array(metric(model=model, x_batch=x, y_batch=np.zeros(len(x), dtype=int), a_batch=attr.numpy().copy(),
                           s_batch=None if mask is None else mask.numpy().astype(float), device="cpu"), dtype=float)


@pytest.fixture
def random_maps():
    g = torch.Generator().manual_seed(1)
    attr = torch.randn(5, 1, 16, 16, generator=g, dtype=torch.float64)
    mask = torch.zeros(5, 1, 16, 16, dtype=torch.bool)
    for i in range(5):
        mask[i, 0, i:i + 6, 2 * i:2 * i + 5] = True
    return attr, mask


@pytest.mark.parametrize("name, ours", [
    ("PointingGame", L.pointing_game), ("RelevanceRankAccuracy", L.relevance_rank_accuracy), ("AUC", L.auc)])
def test_localisation_matches_quantus(random_maps, name, ours):
    import quantus

    attr, mask = random_maps
    for a in (attr, attr.abs()):
        np.testing.assert_allclose(ours(a, mask).numpy(), _quantus(getattr(quantus, name), a, mask, abs=False),
                                   rtol=1e-12)


def test_relevance_mass_accuracy_matches_quantus_on_non_negative_maps_and_differs_on_signed(random_maps):
    import quantus

    attr, mask = random_maps
    quantus_rma = lambda a: _quantus(quantus.RelevanceMassAccuracy, a, mask, abs=False)
    np.testing.assert_allclose(L.relevance_mass_accuracy(attr.abs(), mask).numpy(), quantus_rma(attr.abs()),
                               rtol=1e-12)
    # Quantus sums the signed relevance (its docstring says "positive"); Arras et al. count positive relevance
    np.testing.assert_allclose(L.relevance_mass_accuracy(attr, mask, positive=False).numpy(), quantus_rma(attr),
                               rtol=1e-12)
    assert not np.allclose(L.relevance_mass_accuracy(attr, mask).numpy(), quantus_rma(attr))


def test_sparseness_and_complexity_match_quantus(random_maps):
    import quantus

    attr, _ = random_maps
    # Quantus adds 1e-7 to |a| (sparseness) and 1e-12 inside the log (complexity)
    np.testing.assert_allclose(C.sparseness(attr).numpy(), _quantus(quantus.Sparseness, attr, abs=True), atol=1e-6)
    np.testing.assert_allclose(C.sparseness(attr + 0).numpy(),
                               _quantus(quantus.Sparseness, attr.abs() - 1e-7, abs=False), rtol=1e-10)
    np.testing.assert_allclose(C.entropy(attr).numpy(), _quantus(quantus.Complexity, attr, abs=True), rtol=1e-10)
