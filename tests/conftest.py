from pathlib import Path

import anndata as ad
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def multiome():
    """500 paired cells of 10x Multiome human bone marrow (NeurIPS 2021 starter): raw RNA and ATAC counts."""
    return ad.read_h5ad(DATA / "multiome_rna.h5ad"), ad.read_h5ad(DATA / "multiome_atac.h5ad")


@pytest.fixture(scope="session")
def cite():
    """600 paired CITE-seq cells of human bone marrow (NeurIPS 2021 starter): raw RNA and ADT counts."""
    return ad.read_h5ad(DATA / "cite_rna.h5ad"), ad.read_h5ad(DATA / "cite_adt.h5ad")


@pytest.fixture(scope="session")
def snare():
    """The 2,000 SNARE-seq cells shipped with the package."""
    import butterfly as bf

    return bf.datasets.snare_mcc_demo()


@pytest.fixture(autouse=True)
def _torch_threads_unchanged():
    """A test that leaves torch's thread count changed makes every later training run another way (the
    module-scoped trained models included), so later exact comparisons can fail far from the cause."""
    import torch

    threads = torch.get_num_threads()
    yield
    after = torch.get_num_threads()
    if after != threads:
        torch.set_num_threads(threads)
        pytest.fail(f"the test left torch's thread count at {after} (it was {threads}); restore it")
