import numpy as np
import pytest

from butterfly import ButterflyInputError, metrics
from butterfly.benchmark._baselines import (
    KernelRidgeTranslator,
    KNNTranslator,
    LinearTranslator,
    MeanTranslator,
)


def test_baselines_translate_held_out_cells(cite):
    rna, adt = cite
    train, test = np.arange(450), np.arange(450, 600)
    labels = adt.obs["cell_type"].to_numpy()[test]
    for cls in (KNNTranslator, LinearTranslator, KernelRidgeTranslator):
        model = cls(rna[train], adt[train], modalities=("rna", "adt"))
        pred = model.translate(rna[test], "rna", "adt")
        assert pred.shape == (150, 134) and list(pred.var_names) == list(adt.var_names)
        truth = model._model.preprocessors["adt"].transform(adt[test]).X
        # RNA carries real information about surface proteins: clearly positive per-protein correlation
        assert metrics.pearson_per_feature(pred.X, truth) > 0.2, cls.__name__
        assert metrics.cell_heterogeneity(pred.X, labels)["AMI"] > 0.2, cls.__name__


def test_baselines_refuse_bad_names_and_neighbour_counts(cite):
    rna, adt = cite
    knn = KNNTranslator(rna[:200], adt[:200], modalities=("rna", "adt"), k=5)
    linear = LinearTranslator(rna[:200], adt[:200], modalities=("rna", "adt"))
    mean = MeanTranslator(rna[:200], adt[:200], modalities=("rna", "adt"))
    ridge = KernelRidgeTranslator(rna[:200], adt[:200], modalities=("rna", "adt"))
    for model in (knn, linear, mean, ridge):
        with pytest.raises(ButterflyInputError, match="Unknown modality 'atac'"):
            model.translate(rna[200:], source="rna", target="atac")
        with pytest.raises(ButterflyInputError, match="source and target must differ"):
            model.translate(rna[200:], source="rna", target="rna")
    for k in (0, 201, 2.5):
        with pytest.raises(ButterflyInputError, match="k \\(neighbours averaged\\) must be a whole number"):
            KNNTranslator(rna[:200], adt[:200], modalities=("rna", "adt"), k=k)


def test_the_mean_translator_predicts_the_training_mean_for_every_cell(cite):
    rna, adt = cite
    model = MeanTranslator(rna[:450], adt[:450], modalities=("rna", "adt"))
    pred = model.translate(rna[450:], "rna", "adt").X
    expected = model._model.preprocessors["adt"].transform(adt[:450]).X.toarray().mean(0)
    np.testing.assert_allclose(pred, np.tile(expected, (150, 1)), rtol=1e-6)
    assert list(model.translate(adt[450:], "adt", "rna").obs_names) == list(adt.obs_names[450:])


def test_kernel_ridge_is_guanlabs_recipe_fitted_on_training_cells_only(cite):
    """The same numbers as the recipe written out with scikit-learn, the source SVD fitted on the training cells
    (a test cell's translation does not depend on which other cells are translated with it)."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.kernel_ridge import KernelRidge

    rna, adt = cite
    model = KernelRidgeTranslator(rna[:450], adt[:450], modalities=("rna", "adt"))
    assert model.settings_["rna", "adt"] == {
        "source_components": 300, "target_components": 70, "length_scale": 10.0, "alpha": 0.2
    }  # fmt: skip
    assert (
        model.settings_["adt", "rna"]["source_components"] == adt.n_vars - 1
    )  # all proteins (SVD: at most n - 1)
    pre = model._model.preprocessors
    X, Y = pre["rna"].transform(rna[:450]).X, pre["adt"].transform(adt[:450]).X
    source, target = TruncatedSVD(300, random_state=0).fit(X), TruncatedSVD(70, random_state=0).fit(Y)

    def standardised(c):
        return (c - c.mean(1, keepdims=True)) / c.std(1, keepdims=True)

    ridge = KernelRidge(alpha=0.2, kernel="rbf", gamma=1 / 200).fit(
        standardised(source.transform(X)), target.transform(Y)
    )
    test = pre["rna"].transform(rna[450:]).X
    expected = np.clip(target.inverse_transform(ridge.predict(standardised(source.transform(test)))), 0, None)
    got = model.translate(rna[450:], "rna", "adt").X
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)  # float32 SVDs
    np.testing.assert_allclose(model.translate(rna[450:460], "rna", "adt").X, got[:10], rtol=1e-3, atol=1e-4)
    assert got.min() >= 0
