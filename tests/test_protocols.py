import numpy as np
import pytest

from butterfly import ButterflyInputError
from butterfly.benchmark._protocols import folds_by_batch, folds_by_cell, folds_by_cell_type


def _check_partition(folds, n):
    tested = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(tested), np.arange(n))  # every cell tested exactly once
    for train, test in folds:
        assert len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == n


def test_folds_by_cell_partition_and_seed():
    folds = folds_by_cell(103, 5, seed=1)
    _check_partition(folds, 103)
    assert [len(t) for _, t in folds] == [21, 21, 21, 20, 20]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, folds_by_cell(103, 5, seed=1), strict=True))
    assert not np.array_equal(folds[0][1], folds_by_cell(103, 5, seed=2)[0][1])


@pytest.mark.parametrize("make, key, k", [(folds_by_cell_type, "cell_type", 3), (folds_by_batch, "batch", 4)])
def test_group_folds_keep_groups_whole_on_real_data(snare, make, key, k):
    rna, _ = snare
    groups = rna.obs[key].astype(str).to_numpy()
    folds = make(groups, k, seed=0)
    assert len(folds) == k
    _check_partition(folds, rna.n_obs)
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])  # no test group seen in training
    sizes = [len(t) for _, t in folds]
    assert max(sizes) < 2 * min(sizes)  # balanced


def test_too_many_folds_is_refused():
    with pytest.raises(ButterflyInputError, match=r"between 2 and the number of batches \(2\)"):
        folds_by_batch(["a", "b"], 4)


def test_step_matched_budget_divides_epochs_by_the_augmentation():
    from butterfly.benchmark._protocols import _step_matched

    options = {"pretrain_epochs": 60, "epochs": 90, "patience": 20, "batch_size": 256}
    assert _step_matched(options) == {"pretrain_epochs": 20, "epochs": 30, "patience": 7, "batch_size": 256}
    assert _step_matched({}) == {
        "pretrain_epochs": 33,
        "epochs": 67,
        "patience": 17,
    }  # from the paper's defaults
    assert options["epochs"] == 90  # not modified
