import numpy as np
import pytest
import torch

from butterfly.nn import (
    ChromosomeBlockedDecoderLinear,
    ChromosomeBlockedEncoderLinear,
    Discriminator,
    Translator,
    kl_divergence,
)

# 11 features on 3 chromosomes, interleaved as a user's peak order might be
CODES = [2, 0, 0, 1, 2, 0, 1, 1, 1, 0, 2]


def _loop_encoder(layer, x):
    """The reference implementation: one small matmul per chromosome."""
    codes = np.array(CODES)
    outs = []
    for c in range(3):
        features = np.flatnonzero(codes == c)
        weight = layer.weight[c, : len(features)]  # rows in within-chromosome order
        outs.append(x[:, features] @ weight + layer.bias[c])
    return torch.cat(outs, dim=1)


def _loop_decoder(layer, z):
    codes = np.array(CODES)
    out = torch.zeros(z.shape[0], len(codes))
    for c in range(3):
        features = np.flatnonzero(codes == c)
        out[:, features] = z[:, c * layer.units : (c + 1) * layer.units] @ layer.chromosome_weight(c)
    return out + layer.bias


def test_blocked_encoder_equals_per_chromosome_loop():
    torch.manual_seed(0)
    layer = ChromosomeBlockedEncoderLinear(CODES, units=4)
    x = torch.randn(5, len(CODES))
    torch.testing.assert_close(layer(x), _loop_encoder(layer, x))


def test_blocked_decoder_equals_per_chromosome_loop():
    torch.manual_seed(0)
    layer = ChromosomeBlockedDecoderLinear(CODES, units=4)
    z = torch.randn(5, 3 * 4)
    torch.testing.assert_close(layer(z), _loop_decoder(layer, z))


def test_no_weights_between_chromosomes_and_padding_stays_zero():
    torch.manual_seed(0)
    enc = ChromosomeBlockedEncoderLinear(CODES, units=4)
    x = torch.randn(2, len(CODES))
    changed = x.clone()
    changed[:, 1] += 10.0  # a chromosome-0 feature
    delta = (enc(changed) - enc(x)).abs().view(2, 3, 4).sum(dim=(0, 2))
    assert delta[0] > 0 and delta[1] == 0 and delta[2] == 0
    enc(x).sum().backward()
    assert torch.all(enc.weight.grad[~enc.valid] == 0)
    assert torch.all(enc.weight.detach()[~enc.valid] == 0)


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
