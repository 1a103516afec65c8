import numpy as np

from butterfly import metrics
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
