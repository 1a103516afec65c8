"""Cut the small real datasets committed to the repo from ../shared/data (run once; documents provenance).

    python benchmarks/make_fixtures.py --shared ../shared/data

Writes the data shipped in the package (bf.datasets), in src/butterfly/datasets/data/:
snare_mcc_2k_{rna,atac}.h5ad, multiome_bmmc_500_{rna,atac}.h5ad, cite_bmmc_600_{rna,adt}.h5ad and
kang_pbmc_1k.h5ad; and tests/data/multiome_200.h5mu, a MuData file written by mudata itself.
"""

import argparse
from pathlib import Path

import anndata as ad
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "butterfly" / "datasets" / "data"


def _write(adata: ad.AnnData, path: Path) -> None:
    adata = adata.copy()
    adata.uns = {k: v for k, v in adata.uns.items() if isinstance(v, str)}
    for frame in (adata.obs, adata.var):
        for col in frame.columns:
            if frame[col].dtype == object:
                frame[col] = frame[col].astype(str).astype("category")
    adata.write_h5ad(path, compression="gzip")
    print(f"{path.relative_to(ROOT)}: {adata.n_obs} x {adata.n_vars}, {path.stat().st_size / 1e6:.2f} MB")


def _write_mudata(folder: Path, path: Path) -> None:
    """The first 200 multiome cells as a MuData file, as muon users keep them: modalities "rna" and "atac",
    the cell types in the MuData's own obs only."""
    try:
        import mudata
    except ImportError:
        print(f"{path.relative_to(ROOT)}: skipped (needs mudata)")
        return
    mods = {}
    for name in ("rna", "atac"):
        data = ad.read_h5ad(folder / f"{name}.h5ad")[:200].copy()
        data.layers, data.uns = {}, {}
        mods[name] = data
    cell_types = mods["rna"].obs["cell_type"].astype(str).to_numpy()
    for data in mods.values():
        data.obs = data.obs[["batch"]].astype(str).astype("category")
    mdata = mudata.MuData(mods)
    mdata.obs["cell_type"] = cell_types
    mdata.write(path, compression="gzip")
    print(f"{path.relative_to(ROOT)}: {mdata.n_obs} cells, {path.stat().st_size / 1e6:.2f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args()

    rna = ad.read_h5ad(args.shared / "snare_mcc" / "rna.h5ad")
    atac = ad.read_h5ad(args.shared / "snare_mcc" / "atac.h5ad")
    cells = np.sort(np.random.RandomState(0).choice(rna.n_obs, 2000, replace=False))
    for name, data in (("rna", rna), ("atac", atac)):
        sub = data[cells].copy()
        sub.uns["source"] = "SNARE-seq adult mouse cortex (Chen et al. 2019, GSE126074), 2,000 random cells"
        _write(sub, SHIPPED / f"snare_mcc_2k_{name}.h5ad")

    for folder, names, prefix in (
        ("multiome_bmmc_starter", ("rna", "atac"), "multiome_bmmc_500"),
        ("cite_bmmc_neurips_starter", ("rna", "adt"), "cite_bmmc_600"),
    ):
        for name in names:
            data = ad.read_h5ad(args.shared / folder / f"{name}.h5ad")
            data.layers = {}
            _write(data, SHIPPED / f"{prefix}_{name}.h5ad")

    _write_mudata(args.shared / "multiome_bmmc_starter", ROOT / "tests" / "data" / "multiome_200.h5mu")

    # Kang IFN-beta PBMC (scGen's log-normalised file): 1,000 random cells, the 1,000 most variable genes
    kang = ad.read_h5ad(args.shared / "pt_pbmc_kang" / "perturb.h5ad")
    cells = np.sort(np.random.RandomState(0).choice(kang.n_obs, 1000, replace=False))
    X = kang.X.tocsc()
    variance = np.asarray(X.multiply(X).mean(0)).ravel() - np.asarray(X.mean(0)).ravel() ** 2
    genes = np.sort(np.argsort(-variance, kind="stable")[:1000])
    sub = kang[cells, genes].copy()
    sub.obsm = {}
    sub.uns["source"] = (
        "Kang et al. 2018 IFN-beta PBMC (scGen valid split), 1,000 cells x 1,000 most variable genes"
    )
    _write(sub, SHIPPED / "kang_pbmc_1k.h5ad")


if __name__ == "__main__":
    main()
