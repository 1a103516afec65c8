import numpy as np
import pandas as pd
import pytest

from butterfly import ButterflyInputError
from butterfly.pp._genome import (
    PeakCoordinates,
    chromosome_order,
    chromosome_sort_key,
    group_by_chromosome,
    overlap_matrix,
    parse_peaks,
)


@pytest.mark.parametrize("name", ["chr1:100-200", "chr1-100-200", "chr1_100_200"])
def test_parse_name_formats(name):
    coords = parse_peaks(pd.DataFrame(index=[name]))
    assert coords.chrom[0] == "chr1" and coords.start[0] == 100 and coords.end[0] == 200
    assert coords.names[0] == "chr1:100-200"


def test_an_anndata_or_its_peak_names_parse_as_its_var(multiome):
    atac = multiome[1]
    expected = parse_peaks(atac.var).names
    np.testing.assert_array_equal(parse_peaks(atac).names, expected)
    np.testing.assert_array_equal(parse_peaks(atac.var_names).names, expected)
    np.testing.assert_array_equal(parse_peaks(list(atac.var_names)).names, expected)
    assert list(parse_peaks(["1:100-200", "X_5_9"]).chrom) == ["1", "X"]  # Ensembl's names, no 'chr'


def test_parse_contig_with_underscore_and_dot():
    coords = parse_peaks(pd.DataFrame(index=["chrUn_GL000220v1_5_90", "GL000205.2:67850-68750"]))
    assert list(coords.chrom) == ["chrUn_GL000220v1", "GL000205.2"]
    assert list(coords.start) == [5, 67850]


def test_var_columns_win_and_aliases_work():
    var = pd.DataFrame(
        {"seqnames": ["chr2", "chr1"], "chromStart": [5, 7], "chromEnd": [9, 11]}, index=["p1", "p2"]
    )
    coords = parse_peaks(var)
    assert list(coords.names) == ["chr2:5-9", "chr1:7-11"]


def test_unparseable_names_are_quoted():
    with pytest.raises(ButterflyInputError, match=r"2 of 3 peak name.*'peak_a'.*'GeneX'"):
        parse_peaks(pd.DataFrame(index=["peak_a", "chr1:1-2", "GeneX"]))


def test_natural_chromosome_order():
    names = ["chrX", "chr10", "chr2", "chrM", "chr1", "chrY", "GL000205.2"]
    assert sorted(names, key=chromosome_sort_key) == [
        "chr1",
        "chr2",
        "chr10",
        "chrX",
        "chrY",
        "GL000205.2",
        "chrM",
    ]


def test_grouping_permutation_round_trips(multiome):
    _, atac = multiome
    coords = parse_peaks(atac.var)
    chromosomes, codes = group_by_chromosome(coords.chrom)
    assert chromosomes[:3] == ["chr1", "chr2", "chr3"] and chromosomes[-1] == "GL000205.2"
    order = chromosome_order(codes)
    assert np.all(np.diff(codes[order]) >= 0)  # grouped
    x = np.arange(len(codes))
    assert np.array_equal(x[order][np.argsort(order)], x)  # back to the user's order


def test_overlap_matrix_matches_a_brute_force_comparison():
    """Random intervals on three chromosomes, nested and overlapping ones included, named with and without 'chr'."""
    rng = np.random.default_rng(0)

    def peaks(n, prefix):
        chrom = np.array([f"{prefix}{c}" for c in rng.integers(1, 4, n)], dtype=object)
        start = rng.integers(0, 20_000, n)
        return PeakCoordinates(chrom=chrom, start=start, end=start + rng.integers(1, 3_000, n))

    query, reference = peaks(400, ""), peaks(300, "chr")
    same_chrom = query.chrom[:, None] == np.char.replace(reference.chrom.astype(str), "chr", "")[None, :]
    overlapping = (reference.start[None, :] < query.end[:, None]) & (
        reference.end[None, :] > query.start[:, None]
    )
    got = overlap_matrix(query, reference).toarray()
    np.testing.assert_array_equal(got, (same_chrom & overlapping).astype(np.float32))
    assert got.sum() > 400  # the comparison is not vacuous
