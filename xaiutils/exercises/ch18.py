"""Self-checks for the exercises of chapter 18, catching a Clever Hans (notebooks/ch18_clever_hans.ipynb).

Every exercise of this chapter retrains the chapter's MLP with the "right for the right reasons" penalty,
which takes longer than a check may. The checks therefore read the learner's table (a DataFrame, or a
dict of rows) and test it for what the retrained models must show whatever the CPU: that the columns
are fractions, that the penalty has reached the patch, and the comparisons the exercise asks about,
with the margins of the chapter's own claims. They do not retrain anything, and they cannot tell a
table typed by hand from a computed one.
"""
from __future__ import annotations

from . import exercise, not_yet, right

LAMBDAS = (0.01, 0.1, 1.0, 100.0)
CORNERS = ("top left", "top right", "bottom left", "bottom right")


def _table(answer, what, columns):
    """A DataFrame with the given columns from a DataFrame or a dict of rows {row: {column: value}}."""
    import pandas as pd

    if isinstance(answer, dict):
        answer = pd.DataFrame(answer).T
    if not isinstance(answer, pd.DataFrame):
        raise TypeError(f"{what} should be a pandas DataFrame (or a dict of rows), got {type(answer).__name__}")
    missing = [c for c in columns if c not in answer.columns]
    if missing:
        raise KeyError(f"{what} has no column {', '.join(repr(c) for c in missing)}; its columns are "
                       f"{', '.join(repr(c) for c in answer.columns)}")
    table = answer[list(columns)].astype(float)
    if ((table < 0) | (table > 1)).any().any():
        raise ValueError(f"{what} should hold fractions between 0 and 1 (accuracies and shares), not percentages")
    return table


@exercise("ch18.1", "The strength of the penalty",
          hint="Train mlp() once per lambda with loss_fn=gradient_regularised_loss(lam, mask=corners.float(), "
               "of='log_probs'), the chapter's TRAIN settings, and read the accuracies with scores(model) and the "
               "mass on the patch with E.relevance_mass_accuracy of |gradient x input| on the 200 test images.")
def _check_sweep(sweep):
    """``sweep``: one row per lambda (0.01, 0.1, 1, 100), columns 'decoy train', 'decoy test', 'clean test' and
    'mass on patch'."""
    table = _table(sweep, "sweep", ["decoy train", "decoy test", "clean test", "mass on patch"])
    index = [float(v) for v in table.index]
    if sorted(index) != sorted(LAMBDAS):
        return not_yet(f"sweep should have one row per lambda, indexed by the lambdas {', '.join(map(str, LAMBDAS))}; "
                       f"its index is {index}.")
    table.index = index
    if (table["mass on patch"] > 0.01).any():
        heavy = ", ".join(str(lam) for lam in table.index[table["mass on patch"] > 0.01])
        return not_yet(f"for lambda = {heavy} gradient x input still puts more than 1% of its mass on the patch: the "
                       "penalty has not reached it. Pass the loss to models.train (loss_fn=...) with the mask of the "
                       "four corners and of='log_probs', and explain each retrained model, not mlp_decoy.")
    gap = (table["decoy test"] - table["clean test"]).abs()
    if (gap > 0.02).any() or (table["decoy test"] < 0.85).any():
        return not_yet("with the patch unused, the accuracy on the decoy test images should match that on clean "
                       "digits (within 0.02) at every lambda and be close to the control's; compare your two test "
                       "columns row by row, and check that each row comes from its own retrained model.")
    others = table.drop(index=100.0)["decoy train"].min()
    if not table.loc[100.0, "decoy train"] < others - 0.01:
        return not_yet("look at the cost of a large lambda: the training accuracy at lambda = 100 should be visibly "
                       "(more than a point) below that of the smaller lambdas. Is 'decoy train' the accuracy on "
                       "decoy.x_train for each retrained model?")
    return right("Already the smallest lambda removes the shortcut; lambda = 100 only costs training accuracy, "
                 "because the optimiser spends its steps on the penalty.")


@exercise("ch18.2", "An incomplete mask",
          hint="The mask is zero everywhere except the 4 x 4 pixels of the top-left corner (rows 0-3, columns "
               "0-3). The corner shares come from mean_map(model): the average normalised |gradient x input| "
               "over the validation images, summed over each 4 x 4 corner.")
def _check_one_corner(one_corner):
    """``one_corner``: three rows, in this order: the decoy model, RRR on the top-left corner only, RRR on all
    four corners; columns 'decoy test' and the four corner shares."""
    table = _table(one_corner, "one_corner", ["decoy test", *CORNERS])
    if len(table) != 3:
        return not_yet("one_corner should have three rows, in this order: the decoy model, RRR on the top left only, "
                       f"RRR on all four corners; it has {len(table)}.")
    unmasked, partial, full = (table.iloc[i] for i in range(3))
    dark = [c for c in CORNERS if partial[c] < 0.005]
    if dark != ["top left"]:
        seen = ", ".join(dark) if dark else "none"
        return not_yet(f"in the second row (RRR on one corner) the corners with almost no relevance are: {seen}. "
                       "Only the penalised top-left corner should go dark: check which rows and columns your mask "
                       "covers (top left is [..., :4, :4]) and the order of the rows.")
    others = [c for c in CORNERS if c != "top left"]
    if not all(0.1 * unmasked[c] < partial[c] < 0.9 * unmasked[c] for c in others):
        return not_yet("the three unpenalised corners should keep part of their relevance, less than in the decoy "
                       "model (first row) but not none; compare the second row's corner shares with the first's.")
    if not unmasked["decoy test"] + 0.05 < partial["decoy test"] < full["decoy test"] - 0.02:
        return not_yet("the decoy test accuracy of the one-corner model should lie between the decoy model's and the "
                       "four-corner model's; check the order of the rows and that each accuracy is on decoy.x_test.")
    return right("The penalised corner goes dark, the other three keep part of their relevance, and the test accuracy "
                 "recovers only part of the way: a mask must cover the whole shortcut. (Your prediction is for "
                 "you to compare; the check reads only the measurements.)")


@exercise("ch18.3", "Per-image annotations",
          hint="gradient_regularised_loss(LAMBDA, mask=lambda xb: corners & (xb > 0), of='log_probs') marks, in "
               "each training batch, the lit pixels of the corners, which are that image's patch; train mlp() with "
               "it and put its scores() and mass on the patch next to mlp_rrr's.")
def _check_per_image(compare):
    """``compare``: two rows, the chapter's four-corner model and the per-image-mask model, with columns
    'decoy test', 'clean test' and 'mass on patch'."""
    table = _table(compare, "compare", ["decoy test", "clean test", "mass on patch"])
    if len(table) != 2:
        return not_yet(f"compare should have two rows (four corners, each image's own patch); it has {len(table)}.")
    per_image = table.iloc[1]
    if per_image["decoy test"] < 0.85:
        return not_yet("the per-image model is far less accurate than the four-corner one: does your mask mark only "
                       "the lit pixels of the corners (corners & (xb > 0)), not every lit pixel (xb > 0), which "
                       "forbids the digit itself?")
    if per_image["mass on patch"] > 0.005 or abs(per_image["decoy test"] - per_image["clean test"]) > 0.02:
        return not_yet("the per-image model still uses the patch (mass on the patch above 0.005, or decoy and clean "
                       "test accuracies apart): check that the loss_fn with the callable mask reached models.train.")
    if abs(table.iloc[0]["decoy test"] - per_image["decoy test"]) > 0.02:
        return not_yet("the two rows should be close (within 0.02 on the decoy test set); is the first row the "
                       "chapter's mlp_rrr?")
    return right("Both masks remove the shortcut: every corner holds a patch in about a quarter of the training "
                 "images, so the per-image penalty still reaches every corner pixel.")
