"""Training steps replayed from CUDA graphs (``TrainingConfig.cuda_graphs``). The GPU test is skipped on a CPU;
``benchmarks/cuda_check.py`` makes the same comparison with the spread of two eager runs beside it."""

import contextlib

import numpy as np
import pytest
import torch

import butterfly as bf
from butterfly._validation import ButterflyInputError
from butterfly.train import _trainer as training
from butterfly.train._graphs import graphs_supported

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_graphs_setting_is_checked_and_off_on_a_cpu(snare_split):
    with pytest.raises(ButterflyInputError, match="cuda_graphs= must be True or False, got 'yes'"):
        bf.train.TrainingConfig(cuda_graphs="yes")
    assert not graphs_supported(torch.device("cpu"))
    rna, atac, _, _ = snare_split
    model = bf.Butterfly(rna[:300], atac[:300], seed=0, device="cpu")
    train, validation = model._training_pairs()
    model.training_config = bf.train.TrainingConfig(cuda_graphs=True)
    trainer = model._trainer(train, validation, progress=False)
    # a CPU trains eagerly, with its sparse first layers, whatever the setting
    assert not trainer.graphs and trainer.sparse_inputs == {"rna", "atac"}


@needs_cuda
def test_graph_replayed_training_matches_eager_training(snare_split, monkeypatch):
    rna, atac, rna_test, atac_test = snare_split
    graphed_steps = []

    class Counted(training.GraphedStep):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            graphed_steps.append(self)

    monkeypatch.setattr(training, "GraphedStep", Counted)

    def fit(graphs):
        model = bf.Butterfly(rna, atac, seed=0, device="cuda")
        history = model.fit(2, 3, batch_size=200, patience=100, kl_warmup_epochs=2, progress=False,
                            sparse_inputs=False, cuda_graphs=graphs)  # fmt: skip
        return history, model.translate(atac_test, source="atac", target="rna").X

    eager, eager_rna = fit(False)
    assert not graphed_steps
    graphed, graphed_rna = fit(True)
    # 1,280 training pairs: six batches of 200 an epoch (the last of 80 runs eagerly); the first three of
    # a phase run eagerly before the step is recorded, the rest are replays
    assert [s.eager_steps for s in graphed_steps] == [3, 3, 3]
    assert [s.replays for s in graphed_steps] == [9, 9, 15]
    # the same random draws and the same function: the epochs' losses agree as closely as two eager runs'
    # (some CUDA kernels sum in a varying order: on an H200, eager vs eager 0.0009 apart, graphs 0.0019)
    columns = ["train_loss", "train_recon", "val_loss", "val_recon"]
    np.testing.assert_allclose(graphed[columns], eager[columns], rtol=2e-3, atol=1e-4)
    # translations after five epochs: eager vs eager up to 0.10 apart there, graphs vs eager 0.055-0.083
    assert np.abs(graphed_rna - eager_rna).max() < 0.25


def test_a_step_that_cannot_be_recorded_names_the_way_out(monkeypatch):
    class Graph:
        def register_generator_state(self, generator):
            pass

    class Capture:  # what torch raises when a step does something a CUDA graph cannot hold
        def __init__(self, graph):
            pass

        def __enter__(self):
            raise RuntimeError("operation not permitted when stream is capturing")

        def __exit__(self, *args):
            return False

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    step = training.GraphedStep(lambda tensors: (tensors["x"].sum(),))
    with pytest.raises(RuntimeError, match=r"not permitted .*fit\(cuda_graphs=False\)"):
        step._record({"x": torch.ones(3)})


def test_graphed_step_records_once_replays_with_each_batch_and_runs_other_shapes_eagerly(monkeypatch):
    """GraphedStep's bookkeeping on a CPU, torch's CUDA-graph calls stood in for: recording runs the step once
    (as the caller's replay after a real recording would), each replay runs it on the recorded inputs, which
    must hold that batch, and writes into the recorded outputs. A plain SGD step then trains exactly as the
    same steps called directly do."""
    graphs = []

    class Graph:
        def __init__(self):
            self.fresh, self.owner = False, None  # owner: the GraphedStep whose step this graph replays
            graphs.append(self)

        def register_generator_state(self, generator):
            pass

        def replay(self):
            if self.fresh:  # recording ran the step already
                self.fresh = False
                return
            owner = self.owner
            for recorded, new in zip(owner.outputs, owner.step(owner.inputs), strict=True):
                recorded.copy_(new)

    class Capture:
        def __init__(self, graph):
            self.graph = graph

        def __enter__(self):
            return None

        def __exit__(self, *args):
            self.graph.fresh = True
            return False

    class Stream:
        def wait_stream(self, other):
            pass

    monkeypatch.setattr(torch.cuda, "CUDAGraph", Graph)
    monkeypatch.setattr(torch.cuda, "graph", Capture)
    monkeypatch.setattr(torch.cuda, "Stream", Stream)
    monkeypatch.setattr(torch.cuda, "current_stream", Stream)
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(torch.Tensor, "record_stream", lambda self, stream: None, raising=False)

    def trainer():
        torch.manual_seed(0)
        layer = torch.nn.Linear(4, 1)
        optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)

        def step(tensors):
            loss = ((layer(tensors["x"]) - tensors["y"]) ** 2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return (loss.detach(),)

        return layer, step

    generator = torch.Generator().manual_seed(1)
    batches = [{"x": torch.randn(n, 4, generator=generator), "y": torch.randn(n, 1, generator=generator)}
               for n in (8, 8, 8, 8, 8, 3, 8, 8)]  # fmt: skip
    direct_layer, direct_step = trainer()
    direct = [direct_step(batch)[0].item() for batch in batches]
    layer, step = trainer()
    graphed = training.GraphedStep(step)
    monkeypatch.setattr(graphed, "_record", _recording(graphed))
    losses = [graphed(batch)[0].item() for batch in batches]
    assert losses == direct
    assert torch.equal(layer.weight, direct_layer.weight)
    # three eager steps of the first shape, one recording, four replays (the recorded step's own among them);
    # the batch of 3 ran eagerly
    assert graphed.eager_steps == 3 and len(graphs) == 1 and graphed.replays == 4


def _recording(graphed):
    """GraphedStep._record, with the stand-in graph told whose step it replays."""
    record = graphed._record

    def run(tensors):
        record(tensors)
        graphed.graph.owner = graphed

    return run
