"""The README's Python examples run against the current API, on real data with the README's placeholders
filled in (short trainings: the examples show calls, the other tests check what training reaches), and
every command line it and ``butterfly --help`` show parses."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import scanpy as sc

import butterfly as bf

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
#: The README and the user guide it links: their examples are the documented ones.
DOCUMENTS = "\n".join((ROOT / name).read_text() for name in ("README.md", "docs/guide.md"))
BLOCKS = re.findall(r"```python\n(.*?)```", DOCUMENTS, re.S)
#: How each example begins (the tests below fill in its placeholders).
STARTS = (
    "import butterfly",
    "import scanpy",
    "bf.Butterfly(rna, atac, pairing",
    "control = ",
    "first = ",
    "model = bf.Butterfly(rna, atac, batch_key",
    "adapted = model.map_query",
)


@pytest.fixture
def short_fits(monkeypatch, tmp_path):
    """Every fit in the examples trains 2 + 3 epochs; files the examples save land in ``tmp_path``."""
    fit = bf.Butterfly.fit

    def short(self, *args, **options):
        options.update(pretrain_epochs=2, epochs=3, progress=False)
        return fit(self, **options)

    monkeypatch.setattr(bf.Butterfly, "fit", short)
    monkeypatch.chdir(tmp_path)


def _run(block: str, names: dict) -> dict:
    if importlib.util.find_spec("scvi") is None:  # the optional extra's line
        block = "\n".join(line for line in block.splitlines() if 'cluster_backend="scvi"' not in line)
    names = {"bf": bf, **names}
    exec(compile(block, "README.md", "exec"), names)
    return names


def _block(start: str) -> str:
    (block,) = [b for b in BLOCKS if b.startswith(start)]  # STARTS has it
    return block


def test_every_python_example_is_checked():
    """A new example in the README needs its placeholders filled in below."""
    matched = [[start for start in STARTS if block.startswith(start)] for block in BLOCKS]
    assert [len(m) for m in matched] == [1] * len(BLOCKS), BLOCKS
    assert sorted(m[0] for m in matched) == sorted(STARTS)


def test_the_main_example(short_fits, snare):
    rna, atac = snare
    logged = rna[1500:].copy()
    sc.pp.normalize_total(logged, target_sum=1e4)
    sc.pp.log1p(logged)
    new_atac = atac[1500:].copy()
    names = _run(
        _block("import butterfly"),
        {"new_atac": new_atac, "new_rna": rna[1500:].copy(), "atac_only_cells": atac[1500:].copy(),
         "labelled_rna": rna[:1500].copy(), "logged_rna": logged},
    )  # fmt: skip
    model, rna_pred = names["model"], names["rna_pred"]
    assert list(rna_pred.var_names) == list(model.preprocessors["rna"].features_)
    assert list(rna_pred.obs_names) == list(new_atac.obs_names)
    assert new_atac.obsm["X_butterfly_joint"].shape[0] == new_atac.n_obs
    assert names["labels"].index.equals(new_atac.obs_names)
    assert set(names["labels"]["label"]) <= set(rna.obs["cell_type"])
    assert names["atac_pred"].shape == (500, model.preprocessors["atac"].n_features)
    again = model.translate(new_atac, source="atac", target="rna", progress=False)  # the loaded model
    np.testing.assert_array_equal(again.X, rna_pred.X)


def test_the_other_examples(short_fits, snare):
    rna, atac = snare
    model = bf.Butterfly(rna[:1500], atac[:1500], seed=0)
    model.fit()
    names = _run(_block("import scanpy"), {"model": model, "rna_only": rna[1500:].copy()})
    assert "leiden" in names["rna_only"].obs

    _run(
        _block("bf.Butterfly(rna, atac, pairing"),
        {"rna": rna[:600].copy(), "atac": atac[:600].copy(), "rna_cells": rna[:500].copy(),
         "atac_cells": atac[500:1000].copy()},
    )  # fmt: skip

    kang = bf.datasets.kang_pbmc_demo()
    held = kang.obs["cell_type"] == kang.obs["cell_type"].iloc[0]
    names = _run(
        _block("control = "),
        {"adata": kang[~held].copy(),
         "control_b_cells": kang[held & (kang.obs["condition"] == "control")].copy(),
         "measured_stimulated_b_cells": kang[held & (kang.obs["condition"] == "stimulated")].copy()},
    )  # fmt: skip
    assert names["predicted"].n_obs == int((held & (kang.obs["condition"] == "control")).sum())

    names = _run(
        _block("first = "),
        {"multiome_rna": bf.datasets.multiome_bmmc_demo()[0], "multiome_atac": bf.datasets.multiome_bmmc_demo()[1],
         "cite_rna": bf.datasets.cite_bmmc_demo()[0], "cite_adt": bf.datasets.cite_bmmc_demo()[1],
         "atac_only_cells": bf.datasets.multiome_bmmc_demo()[1][:50].copy()},
    )  # fmt: skip
    assert names["proteins"].shape == (50, names["second"].preprocessors["adt"].n_features)


def _documented_commands() -> list[str]:
    """Every command line of the README (its shell blocks and inline code) and of ``butterfly --help``'s
    examples, without comments; those with placeholders (``...``, ``a|b``) or no options left out."""
    from butterfly.cli._parser import EXAMPLES

    readme = DOCUMENTS
    shell = "\n".join(re.findall(r"```bash\n(.*?)```", readme, re.S))
    lines = [line.split("#")[0].strip() for line in (shell + "\n" + EXAMPLES).splitlines()]
    inline = re.findall(r"`((?:torchrun .*?-m )?butterfly [a-z][^`]*)`", readme.replace("\n", " "))
    commands = [c for c in lines + inline if re.match(r"(torchrun .*-m )?butterfly [a-z]", c)]
    return [c for c in commands if "..." not in c and "|" not in c and len(c.split()) > 2]


def test_documented_command_lines_parse():
    from butterfly.cli._parser import build_parser

    commands = _documented_commands()
    assert len(commands) > 20
    for command in commands:
        args = shlex.split(command.split("-m butterfly ")[-1].removeprefix("butterfly "))
        try:
            build_parser().parse_args(args)
        except SystemExit:
            pytest.fail(f"the documented command does not parse: {command}")


def test_the_new_lab_example(short_fits, snare):
    rna, atac = snare
    known = rna.obs["batch"].isin(["09A", "09B", "09C", "09D", "09E", "09F"]).to_numpy()
    names = _run(
        _block("model = bf.Butterfly(rna, atac, batch_key"), {"rna": rna[known], "atac": atac[known]}
    )
    new_atac = atac[~known][:300].copy()
    names = _run(_block("adapted = model.map_query"), {"model": names["model"], "new_atac": new_atac})
    assert names["rna_of_new_cells"].n_obs == 300 and names["adapted"].query_["modality"] == "atac"
