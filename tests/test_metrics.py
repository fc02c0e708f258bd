"""Classification metrics against hand-computed values (scikit-learn's definitions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from formerkit.metrics import accuracy, confusion_matrix, f1_per_class, macro_f1


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix([0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0], 3)
    np.testing.assert_array_equal(matrix, [[1, 0, 1], [0, 1, 0], [0, 1, 2]])


def test_macro_f1_matches_hand_computation():
    pred, true = [0, 1, 1, 2, 2, 2], [0, 1, 2, 2, 2, 0]
    # class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 1, fn 0 -> 2/3;
    # class 2: tp 2, fp 1, fn 1 -> 2/3
    assert macro_f1(pred, true, 3) == pytest.approx(2 / 3)
    # a class absent from both is left out of the mean (as scikit-learn)
    assert macro_f1(pred, true, 5) == pytest.approx(2 / 3)
    np.testing.assert_allclose(f1_per_class(np.array([[2, 0], [0, 0]])), [1.0, 0.0])
    assert macro_f1([0, 0, 1, 1], [0, 0, 0, 0]) == pytest.approx((2 * 2 / 6 + 0) / 2)


def test_accuracy_ignores_minus_100_and_accepts_tensors():
    assert accuracy(torch.tensor([1, 2, 3, 4]), torch.tensor([1, -100, 0, 4])) == \
        pytest.approx(2 / 3)
    assert accuracy([], []) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        accuracy([1, 2], [1])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)
