import numpy as np
import pytest

from butterfly import ButterflyInputError, metrics
from butterfly.baselines import KNNTranslator, LinearTranslator


def test_baselines_translate_held_out_cells(cite):
    rna, adt = cite
    train, test = np.arange(450), np.arange(450, 600)
    labels = adt.obs["cell_type"].to_numpy()[test]
    for cls in (KNNTranslator, LinearTranslator):
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
    for model in (knn, linear):
        with pytest.raises(ButterflyInputError, match="Unknown modality 'atac'"):
            model.translate(rna[200:], source="rna", target="atac")
        with pytest.raises(ButterflyInputError, match="source and target must differ"):
            model.translate(rna[200:], source="rna", target="rna")
    for k in (0, 201, 2.5):
        with pytest.raises(ButterflyInputError, match="k \\(neighbours averaged\\) must be a whole number"):
            KNNTranslator(rna[:200], adt[:200], modalities=("rna", "adt"), k=k)
