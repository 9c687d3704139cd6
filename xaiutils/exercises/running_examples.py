"""Self-checks for the exercises of "The running examples" (notebooks/01_running_examples.ipynb).

1. the confusion matrix of ``mnist-standard`` on the test set and its most frequent mistake;
2. the shapes recoloured inside their masks, and the accuracy before and after.

The references are computed here, with the shipped model on the book's fixed test sets.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from . import exercise, not_yet, right


@lru_cache(maxsize=1)
def _mnist_confusion() -> torch.Tensor:
    """The reference: rows are the true class, columns the class ``mnist-standard`` predicts."""
    from .. import data, zoo

    mnist = data.mnist()
    with torch.no_grad():
        predicted = zoo.load("mnist-standard")(mnist.x_test).argmax(1)
    confusion = torch.zeros(10, 10, dtype=torch.long)
    for true, guess in zip(mnist.y_test.tolist(), predicted.tolist()):
        confusion[true, guess] += 1
    return confusion


@lru_cache(maxsize=1)
def _shapes_test():
    from .. import data

    return data.shapes("test")


@lru_cache(maxsize=1)
def _shapes_model():
    from .. import zoo

    return zoo.load("shapes-standard")


def _shapes_accuracy(x: torch.Tensor) -> float:
    from .. import models

    return models.accuracy(_shapes_model(), x, _shapes_test().y, batch_size=100)


@lru_cache(maxsize=1)
def _original_accuracy() -> float:
    return _shapes_accuracy(_shapes_test().x)


def _as_matrix(value) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


@exercise("running_examples.1", "Which digits are confused",
          hint="Predict every test digit with mnist_model(mnist.x_test).argmax(1), then count each "
               "(true label, prediction) pair: rows for the true class, columns for the predicted one. "
               "The mistakes are the entries off the diagonal.")
def check_confusion(confusion, most_confused) -> object:
    """``confusion``: 10x10 counts on the 1,000 test digits; ``most_confused``: (true, predicted).

    The matrix may differ from the reference by at most two digits moved to another cell (an
    argmax between two nearly equal logits can flip with the batch size or the CPU).
    """
    matrix = _as_matrix(confusion)
    if matrix.shape != (10, 10):
        return not_yet(f"`confusion` should be 10×10 (one row per true class, one column per predicted "
                       f"class); yours has shape {tuple(matrix.shape)}.")
    total = matrix.sum().item()
    if abs(total - 1) < 1e-6 or bool(torch.allclose(matrix.sum(1), torch.ones(10, dtype=torch.float64), atol=1e-6)):
        return not_yet("`confusion` should hold counts of digits, not fractions.")
    if round(total) == 4000:
        return not_yet("Your matrix counts 4,000 digits: that is the training set; use the 1,000 test "
                       "digits, mnist.x_test and mnist.y_test.")
    if round(total) != 1000:
        return not_yet(f"Your matrix counts {round(total)} digits; it should count each of the 1,000 test "
                       "digits once.")
    reference = _mnist_confusion().double()
    if (matrix - reference).abs().sum() > 4:
        if (matrix.T - reference).abs().sum() <= 4:
            return not_yet("Rows and columns are swapped: row i should count the digits whose true class is i, "
                           "column j those the model reads as j.")
        if torch.equal(matrix.sum(1), reference.sum(1)):
            return not_yet("The number of digits per true class is right, but the predictions differ from "
                           "mnist-standard's: predict with mnist_model(mnist.x_test).argmax(1) (the class with "
                           "the largest logit).")
        return not_yet("The matrix does not match mnist-standard's predictions on the test digits: count each "
                       "pair (mnist.y_test[i], predicted[i]) once.")
    try:
        true, guess = (int(v) for v in most_confused)
    except (TypeError, ValueError):
        return not_yet("`most_confused` should be a pair of class indices: (true class, predicted class).")
    if not (0 <= true < 10 and 0 <= guess < 10):
        return not_yet("`most_confused` should hold two classes between 0 and 9.")
    if true == guess:
        return not_yet("The diagonal counts the digits read correctly; the mistakes are the entries off the "
                       "diagonal.")
    mistakes = reference - torch.diag(torch.diag(reference))
    if mistakes[true, guess] == mistakes.max():
        return right("The matrix matches mnist-standard's predictions on the 1,000 test digits, and your pair "
                     "is its most frequent mistake.")
    if mistakes[guess, true] == mistakes.max():
        return not_yet("The matrix is right, but the pair is reversed: give (true class, predicted class).")
    return not_yet("The matrix is right, but another cell off the diagonal holds more digits than the one you "
                   "picked.")


@exercise("running_examples.2", "Geometry, not colour",
          hint="Clone test.x and, for each image i, set the pixels where test.mask[i, 0] is True to one new "
               "colour (three numbers). Compare models.accuracy on the original and the recoloured images.")
def check_recolour(recoloured, original_accuracy, recoloured_accuracy) -> object:
    """``recoloured``: the 500 shapes test images with new object colours; the two accuracies as fractions."""
    test = _shapes_test()
    recoloured = torch.as_tensor(recoloured).detach().float()
    if recoloured.shape != test.x.shape:
        return not_yet(f"`recoloured` should have the shape of the test images, {tuple(test.x.shape)}; yours has "
                       f"{tuple(recoloured.shape)}.")
    if recoloured.min() < 0 or recoloured.max() > 1:
        return not_yet("Some recoloured pixels are outside [0, 1]: the new colours should be pixel values in [0, 1].")
    inside = test.mask.expand_as(test.x)
    changed = (recoloured - test.x).abs() > 1e-6
    if changed[~inside].any():
        return not_yet("Pixels outside the objects changed: recolour only the pixels where test.mask is True, "
                       "and start from a copy of test.x (test.x.clone()).")
    objects_changed = changed.flatten(1).any(1).float().mean().item()
    if objects_changed < 0.9:
        return not_yet(f"Only {objects_changed:.0%} of the objects got a new colour: set the masked pixels of "
                       "every test image.")
    accuracies = {"original_accuracy": float(original_accuracy), "recoloured_accuracy": float(recoloured_accuracy)}
    if any(value > 1 for value in accuracies.values()):
        return not_yet("Give the accuracies as fractions in [0, 1], not in percent.")
    if abs(accuracies["original_accuracy"] - _original_accuracy()) > 0.003:
        return not_yet("`original_accuracy` is not shapes-standard's accuracy on the unchanged test images, "
                       "models.accuracy(shapes_model, test.x, test.y).")
    actual = _shapes_accuracy(recoloured)
    if abs(accuracies["recoloured_accuracy"] - actual) > 0.003:
        if abs(accuracies["recoloured_accuracy"] - _original_accuracy()) <= 0.003:
            return not_yet("`recoloured_accuracy` is the accuracy on the original images: evaluate the model on "
                           "`recoloured`.")
        return not_yet("`recoloured_accuracy` is not the model's accuracy on your `recoloured` images.")
    if abs(actual - _original_accuracy()) >= 0.02:
        return not_yet("With your colours the accuracy moved by 2 points or more. The objects are drawn with each "
                       "channel between 0.45 and 1 (see make_shapes), brighter than the background: pick new "
                       "colours in that range.")
    return right("New colours inside the masks change the accuracy by less than 2 points: the model recognises "
                 "the shapes by their geometry.")
