import numpy as np
import pytest
import torch

from butterfly.module._layers import (
    ChromosomeBlockedDecoderLinear,
    ChromosomeBlockedEncoderLinear,
    Dropout,
    InputLinear,
)
from butterfly.module._network import Discriminator, Encoder, Translator, kl_divergence, reconstruction_loss
from butterfly.pp._modalities import PRESETS
from butterfly.train._data import _to_sparse_rows

# 11 features on 3 chromosomes, interleaved as a user's peak order might be
CODES = [2, 0, 0, 1, 2, 0, 1, 1, 1, 0, 2]


def _loop_encoder(layer, x):
    """The reference implementation: one small matmul per chromosome."""
    codes = np.array(CODES)
    outs = []
    for c in range(3):
        features = np.flatnonzero(codes == c)
        outs.append(x[:, features] @ layer.chromosome_weight(c) + layer.bias[c])
    return torch.cat(outs, dim=1)


def _loop_decoder(layer, z):
    codes = np.array(CODES)
    out = torch.zeros(z.shape[0], len(codes), dtype=z.dtype)
    for c in range(3):
        features = np.flatnonzero(codes == c)
        out[:, features] = z[:, c * layer.units : (c + 1) * layer.units] @ layer.chromosome_weight(c).T
    return out + layer.feature_bias()


# the per-chromosome form (CPU default), and the batched form with chunk widths 2 and 3, which split every
# chromosome (4 or 5 features) over several chunks, and 128, which gives one chunk each
FORMS = [(False, 128), (True, 2), (True, 3), (True, 128)]


@pytest.mark.parametrize(("batched", "chunk_width"), FORMS)
def test_blocked_encoder_equals_per_chromosome_loop(batched, chunk_width):
    torch.manual_seed(0)
    layer = ChromosomeBlockedEncoderLinear(CODES, units=4, chunk_width=chunk_width).double()
    layer.batched = batched
    x = torch.randn(5, len(CODES), dtype=torch.float64)
    torch.testing.assert_close(layer(x), _loop_encoder(layer, x))
    torch.testing.assert_close(layer(x.t().contiguous().t()), _loop_encoder(layer, x))  # feature-major input
    # gradients of the gathers' custom backward against finite differences
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda w, b, x: _with(layer, w, b)(x), (layer.weight, layer.bias, x))


@pytest.mark.parametrize(("batched", "chunk_width"), FORMS)
def test_blocked_decoder_equals_per_chromosome_loop(batched, chunk_width):
    torch.manual_seed(0)
    layer = ChromosomeBlockedDecoderLinear(CODES, units=4, chunk_width=chunk_width).double()
    layer.batched = batched
    z = torch.randn(5, 3 * 4, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(layer(z), _loop_decoder(layer, z))
    # an input without gradient (its gradient is then not computed): the weights' gradient is unchanged
    frozen = z.detach()
    ours = torch.autograd.grad(layer(frozen).pow(2).sum(), layer.weight)[0]
    loop = torch.autograd.grad(_loop_decoder(layer, frozen).pow(2).sum(), layer.weight)[0]
    torch.testing.assert_close(ours, loop)
    assert torch.autograd.gradcheck(lambda w, b, z: _with(layer, w, b)(z), (layer.weight, layer.bias, z))


@pytest.mark.filterwarnings("ignore:torch.is_autocast_cpu_enabled:DeprecationWarning")  # the old name, today
@pytest.mark.parametrize("old_torch", [False, True])
def test_blocked_layers_choose_the_batched_form_on_cpu_only_under_autocast(old_torch):
    """Per-chromosome form on a CPU, batched under bfloat16 autocast; also with torch before 2.4, whose
    ``is_autocast_enabled`` takes no device (the supported releases start at 2.1)."""
    if old_torch and not hasattr(torch, "is_autocast_cpu_enabled"):
        pytest.skip("this torch no longer has the pre-2.4 name")
    layer = ChromosomeBlockedDecoderLinear(CODES, units=4)
    z = torch.randn(5, 3 * 4)

    def chosen():
        if not old_torch:
            return layer.use_batched(z)
        with pytest.MonkeyPatch.context() as patch:  # not around autocast itself, which calls it
            patch.setattr(torch, "is_autocast_enabled", lambda: False)
            return layer.use_batched(z)

    assert chosen() is False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert chosen() is True
        layer.batched = False  # an explicit choice wins
        assert chosen() is False


def _with(layer, weight, bias):
    """``layer`` computing with the given weight and bias tensors (for gradcheck)."""

    def run(inputs):
        return torch.func.functional_call(layer, {"weight": weight, "bias": bias}, (inputs,))

    return run


@pytest.mark.parametrize("codes", [None, CODES])
def test_encoders_read_sparse_rows_as_the_dense_matrix(codes):
    # the blocked weights' rows are in chromosome order, the sparse columns in user order: CODES interleaves
    """Sparse minibatches (as training feeds them) give the dense product's output and gradients."""
    import scipy.sparse as sp

    torch.manual_seed(0)
    dense = sp.random(6, len(CODES), density=0.3, random_state=1, dtype=np.float32).toarray()
    dense[3] = 0  # a cell with no stored entries
    X = sp.csr_matrix(dense)
    encoder = Encoder(
        len(CODES), hidden=(8,), latent=4, codes=codes, chromosome_units=2, dropout=0.0
    ).double()
    first = encoder.net[0] if codes is not None else encoder.net[0][0]
    rows = _to_sparse_rows(X, torch.device("cpu"))
    rows = type(rows)(rows.rows, rows.columns, rows.values.double(), rows.offsets, rows.shape)
    torch.testing.assert_close(rows.dense(), torch.tensor(X.toarray(), dtype=torch.float64))
    dense_out = first(rows.dense())
    dense_grad = torch.autograd.grad(dense_out.pow(2).sum(), first.weight)[0]
    sparse_out = first(rows)
    sparse_grad = torch.autograd.grad(sparse_out.pow(2).sum(), first.weight)[0]
    torch.testing.assert_close(sparse_out, dense_out)
    torch.testing.assert_close(sparse_grad, dense_grad)
    torch.testing.assert_close(encoder(rows), encoder(rows.dense()))


def test_input_linear_is_nn_linear_stored_input_major():
    """Same initial draws as nn.Linear, the same map (dense and sparse input), gradients transposed."""
    import scipy.sparse as sp

    torch.manual_seed(3)
    reference = torch.nn.Linear(40, 7)
    torch.manual_seed(3)
    layer = InputLinear(40, 7)
    assert layer.weight.shape == (40, 7) and layer.weight.is_contiguous()
    torch.testing.assert_close(layer.weight, reference.weight.t(), rtol=0, atol=0)
    torch.testing.assert_close(layer.bias, reference.bias, rtol=0, atol=0)
    X = sp.random(9, 40, density=0.2, random_state=0, format="csr", dtype=np.float32)
    dense = torch.tensor(X.toarray())
    for x in (dense, _to_sparse_rows(X, torch.device("cpu"))):
        out = layer(x)
        torch.testing.assert_close(out, reference(dense))
        grads = torch.autograd.grad(out.pow(2).sum(), layer.weight)[0]
        expected = torch.autograd.grad(reference(dense).pow(2).sum(), reference.weight)[0]
        torch.testing.assert_close(grads, expected.t())


@pytest.mark.parametrize(("batched", "chunk_width"), FORMS)
def test_chromosome_io_is_the_same_map_on_columns_in_chromosome_order(batched, chunk_width):
    """Training's mode: inputs and outputs in chromosome order give the user-order results, reordered."""
    import scipy.sparse as sp

    torch.manual_seed(0)
    enc = ChromosomeBlockedEncoderLinear(CODES, units=4, chunk_width=chunk_width).double()
    dec = ChromosomeBlockedDecoderLinear(CODES, units=4, chunk_width=chunk_width).double()
    order = np.argsort(CODES, kind="stable")
    x = sp.random(5, len(CODES), density=0.4, random_state=0, format="csr")
    z = torch.randn(5, 12, dtype=torch.float64)
    expected = (enc(torch.from_numpy(x.toarray())), dec(z)[:, order])
    for layer in (enc, dec):
        layer.batched, layer.chromosome_io = batched, True
    rows = _to_sparse_rows(x[:, order].tocsr(), torch.device("cpu"))
    rows = type(rows)(rows.rows, rows.columns, rows.values.double(), rows.offsets, rows.shape)
    torch.testing.assert_close(enc(torch.from_numpy(x[:, order].toarray())), expected[0])
    torch.testing.assert_close(enc(rows), expected[0])
    torch.testing.assert_close(dec(z), expected[1])


@pytest.mark.parametrize("batched", [False, True])
def test_no_weights_between_chromosomes(batched):
    torch.manual_seed(0)
    enc = ChromosomeBlockedEncoderLinear(CODES, units=4, chunk_width=2)
    enc.batched = batched
    x = torch.randn(2, len(CODES))
    changed = x.clone()
    changed[:, 1] += 10.0  # a chromosome-0 feature
    delta = (enc(changed) - enc(x)).abs().view(2, 3, 4).sum(dim=(0, 2))
    assert delta[0] > 0 and delta[1] == 0 and delta[2] == 0
    dec = ChromosomeBlockedDecoderLinear(CODES, units=4, chunk_width=2)
    dec.batched = batched
    z = torch.zeros(2, 12)
    z[:, 4:8] = 1.0  # only chromosome 1's units
    moved = (dec(z) - dec(torch.zeros(2, 12))).abs().sum(dim=0)
    assert torch.all((moved > 0) == torch.tensor(np.array(CODES) == 1))


@pytest.mark.parametrize("codes", [[1, 1, 0, 0], [0, 0, 1, 1]])
def test_blocked_layers_keep_the_user_feature_order(codes):
    """Swapped chromosome blocks (whose sort order is its own inverse) and already-grouped peaks."""
    torch.manual_seed(0)
    enc, dec = ChromosomeBlockedEncoderLinear(codes, units=2), ChromosomeBlockedDecoderLinear(codes, units=2)
    x, z = torch.randn(3, 4), torch.randn(3, 4)
    for c in range(2):
        features = np.flatnonzero(np.array(codes) == c)
        expected = x[:, features] @ enc.chromosome_weight(c) + enc.bias[c]
        torch.testing.assert_close(enc(x)[:, 2 * c : 2 * c + 2], expected)
        expected = z[:, 2 * c : 2 * c + 2] @ dec.chromosome_weight(c).T + dec.feature_bias()[features]
        torch.testing.assert_close(dec(z)[:, features], expected)


def test_blocked_layers_load_format_1_padded_grids():
    """Model files of format 1 stored the weights as one zero-padded [chromosome, width, units] grid."""
    torch.manual_seed(0)
    codes = np.array(CODES)
    width = np.bincount(codes).max()
    for cls in (ChromosomeBlockedEncoderLinear, ChromosomeBlockedDecoderLinear):
        layer = cls(CODES, units=4)
        grid = torch.zeros(3, width, 4)
        for c in range(3):
            grid[c, : (codes == c).sum()] = layer.chromosome_weight(c)
        if cls is ChromosomeBlockedDecoderLinear:
            grid = grid.transpose(1, 2)  # format 1's decoder grid was [chromosome, units, width]
        # format 1's decoder bias was in user order, like its features
        bias = layer.feature_bias() if cls is ChromosomeBlockedDecoderLinear else layer.bias
        fresh = cls(CODES, units=4)
        fresh.load_state_dict({"weight": grid, "bias": bias.detach()})
        torch.testing.assert_close(fresh.weight, layer.weight)
        torch.testing.assert_close(fresh.bias, layer.bias)


def test_translator_heads_are_shared_by_both_sources():
    translator = Translator(["rna", "atac"])
    assert set(translator.heads.keys()) == {"rna", "atac"}
    h = torch.randn(4, 128)
    mean_r, _ = translator.encode(h, "rna")
    mean_a, _ = translator.encode(h, "atac")
    assert not torch.allclose(mean_r, mean_a)  # separate mean blocks per source
    # the "to-atac" block is one module whatever the source: same z gives the same embedding
    torch.testing.assert_close(translator(mean_r, "atac"), translator.heads["atac"](mean_r))


def test_discriminator_is_two_layers_with_logit_output():
    disc = Discriminator()
    linears = [m for m in disc.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(128, 128), (128, 1)]
    assert disc(torch.randn(7, 128)).shape == (7,)


def test_kl_divergence_hand_case():
    mean = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, np.log(2.0)]], dtype=torch.float32)
    # per dimension: 0.5 * (mu^2 + var - 1 - logvar) = [0.5, 0.5 * (1 - log 2)]
    per_dim = np.array([0.5, 0.5 * (1 - np.log(2))])
    assert kl_divergence(mean, logvar, "sum").item() == pytest.approx(per_dim.sum(), rel=1e-6)
    assert kl_divergence(mean, logvar, "mean").item() == pytest.approx(per_dim.mean(), rel=1e-6)
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0


def test_dropout_zeroes_a_fraction_p_and_scales_the_rest():
    layer = Dropout(0.3)
    x = torch.ones(400, 500, requires_grad=True)
    torch.manual_seed(0)
    out = layer(x)
    kept = out != 0
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.005  # 200,000 draws: sd 0.001
    torch.testing.assert_close(out[kept], torch.full((int(kept.sum()),), 1 / 0.7))
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, out.detach())  # the gradient goes through the same mask
    torch.manual_seed(0)
    torch.testing.assert_close(layer(x), out)  # drawn from the global generator: a seed repeats it
    layer.eval()
    assert layer(x) is x
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


@pytest.mark.parametrize("feature_major", [False, True])
def test_bce_reconstruction_loss_equals_torch_bce(feature_major):
    torch.manual_seed(0)
    logits = (torch.randn(64, 300) * 8).requires_grad_()  # saturated logits too
    target = (torch.rand(64, 300) < 0.1).float()
    if feature_major:  # the chromosome-blocked decoder's layout, and the minibatches' for ATAC
        logits = logits.detach().t().contiguous().t().requires_grad_()
        target = target.t().contiguous().t()
    ours = reconstruction_loss(PRESETS["atac"], logits, target)
    reference = torch.nn.functional.binary_cross_entropy_with_logits(logits, target)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=0)
    grads = [torch.autograd.grad(loss, logits)[0] for loss in (ours, reference)]
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-10)
