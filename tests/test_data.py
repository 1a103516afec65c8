import numpy as np
import scipy.sparse as sp
import torch

from butterfly.train._data import PairedRows, minibatches, split_validation


def test_minibatches_cover_pairs_and_mask_only_non_zeros():
    X = sp.random(200, 50, density=0.1, format="csr", random_state=0, dtype=np.float32)
    X.data += 1.0
    pairs = PairedRows({"a": np.arange(200), "b": np.arange(200)[::-1].copy()})
    seen, kept, stored = 0, 0, 0
    rng = np.random.default_rng(0)
    for clean, masked in minibatches({"a": X, "b": X}, pairs, 64, torch.device("cpu"), rng, {"a": 0.3}):
        assert clean["b"] is masked["b"]  # no mask for b
        nonzero = clean["a"] != 0
        assert torch.all(masked["a"][~nonzero] == 0)  # zeros stay zeros
        assert torch.all((masked["a"][nonzero] == 0) | (masked["a"][nonzero] == clean["a"][nonzero]))
        kept += int((masked["a"] != 0).sum())
        stored += int(nonzero.sum())
        seen += clean["a"].shape[0]
    assert seen == 200
    assert abs(1 - kept / stored - 0.3) < 0.05  # about 30% of the non-zeros were zeroed


def test_ordered_batches_follow_pair_rows():
    X = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(6, 2))
    pairs = PairedRows({"a": np.array([5, 0]), "b": np.array([1, 1])})
    ((clean, _),) = list(minibatches({"a": X, "b": X}, pairs, 10, torch.device("cpu")))
    assert clean["a"].tolist() == [[10, 11], [0, 1]] and clean["b"].tolist() == [[2, 3], [2, 3]]


def test_feature_major_batches_hold_the_same_values():
    X = sp.random(30, 7, density=0.3, format="csr", random_state=0, dtype=np.float32)
    pairs = PairedRows({"a": np.arange(30), "b": np.arange(30)})
    batches = minibatches(
        {"a": X, "b": X}, pairs, 8, torch.device("cpu"), np.random.default_rng(0), {"a": 0.5},
        feature_major={"a"},
    )  # fmt: skip
    for clean, masked in batches:
        assert clean["a"].t().is_contiguous() and masked["a"].t().is_contiguous()
        assert clean["b"].is_contiguous()
        torch.testing.assert_close(clean["a"], clean["b"])


def test_validation_split():
    train, val = split_validation(100, 0.2, np.random.default_rng(0))
    assert len(val) == 20 and len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == 100
