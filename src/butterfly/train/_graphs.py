"""Training steps replayed from CUDA graphs.

These networks are small: on a GPU a training step waits on Python and kernel launches (about 1,000 small
operations per integrative step), not on arithmetic. A CUDA graph records a step's kernels once and replays
them with one launch. :class:`GraphedStep` records a whole step (forward, backward, optimizer steps) and
replays it on every later minibatch of the same shape; a minibatch of another shape (an epoch's last,
smaller one) runs eagerly, as does everything on a CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Eager steps of the recorded shape before recording: they set up the optimizers' state, cuBLAS's
#: workspaces and autograd's streams, as torch's CUDA-graph guide asks.
WARMUP_STEPS = 3

Tensors = dict[str, torch.Tensor]


def graphs_supported(device: torch.device) -> bool:
    """Whether this torch can record training steps on ``device``: CUDA graphs whose random draws may come
    from a generator of the caller's (``CUDAGraph.register_generator_state``, torch 2.5 on)."""
    return device.type == "cuda" and hasattr(torch.cuda.CUDAGraph, "register_generator_state")


class GraphedStep:
    """``step(tensors)`` run through a CUDA graph.

    ``step`` takes a dict of device tensors (one minibatch) and returns a tuple of device tensors (its losses);
    it must launch the same kernels whatever the tensors hold: no ``.item()``, no branch on a value, no
    shape that depends on the data. Its random draws must come from torch's default CUDA generator or from
    ``generators``. Values it reads that change between calls (a KL warm-up factor) must be device tensors
    changed in place.

    The first minibatch fixes the recorded shape. The first ``WARMUP_STEPS`` steps of that shape run
    eagerly on a side stream; the next is recorded and replayed, and every later one of that shape copies
    its tensors into the recorded inputs and replays. The returned tensors are the graph's own outputs,
    overwritten by the next replay: read them (or copy them) before the next call.
    """

    def __init__(self, step: Callable[[Tensors], tuple[torch.Tensor, ...]], generators=()) -> None:
        self.step, self.generators = step, tuple(generators)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.shapes: dict | None = None
        self.inputs: Tensors = {}
        self.outputs: tuple[torch.Tensor, ...] = ()
        self.eager_steps = 0  # warm-up steps before recording (other shapes' eager steps are not counted)
        self.replays = 0

    def __call__(self, tensors: Tensors) -> tuple[torch.Tensor, ...]:
        shapes = {name: (t.shape, t.stride(), t.dtype) for name, t in tensors.items()}
        if self.shapes is None:
            self.shapes = shapes
        if shapes != self.shapes:
            return self.step(tensors)
        if self.graph is None and self.eager_steps < WARMUP_STEPS:
            self.eager_steps += 1
            return self._on_side_stream(tensors)
        if self.graph is None:
            self._record(tensors)
        else:
            for name, t in tensors.items():
                self.inputs[name].copy_(t)
        self.graph.replay()
        self.replays += 1
        return self.outputs

    def _on_side_stream(self, tensors: Tensors) -> tuple[torch.Tensor, ...]:
        current = torch.cuda.current_stream()
        side = torch.cuda.Stream()
        side.wait_stream(current)
        with torch.cuda.stream(side):
            for t in tensors.values():  # made on the current stream, read on this one
                t.record_stream(side)
            out = tuple(self.step(tensors))
        current.wait_stream(side)
        for t in out:  # made on the side stream, read on the current one
            t.record_stream(current)
        return out

    def _record(self, tensors: Tensors) -> None:
        self.inputs = {name: t.clone() for name, t in tensors.items()}
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph):
                self.outputs = tuple(self.step(self.inputs))
        except RuntimeError as error:  # an operation this torch, driver or GPU cannot record
            raise RuntimeError(
                f"Recording the training step as a CUDA graph failed ({error}). Train with "
                "fit(cuda_graphs=False) to run every step eagerly."
            ) from error
        self.graph = graph  # recording ran nothing: the caller's replay runs this step
