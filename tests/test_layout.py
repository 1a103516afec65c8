"""The package's layout: subpackages by layer, imports flowing one way (downwards), no import cycles, not
even inside functions; the torch layer imports neither AnnData nor pandas."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "butterfly"

#: Each part of the package and its layer: a part imports only parts of a lower layer, or its own.
LAYERS = {
    "_version": 0,
    "_errors": 0,
    "_progress": 0,
    "_lazy": 0,
    "_validation": 1,
    "io": 2,
    "metrics": 2,
    "datasets": 2,
    "pp": 3,
    "module": 3,
    "train": 4,
    "model": 5,
    "tl": 6,
    "pl": 6,
    "benchmark": 7,
    "cli": 8,
    "__init__": 9,
    "__main__": 9,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _imports(path: Path) -> set[str]:
    """The butterfly modules ``path`` imports, anywhere in it (functions included), but under
    ``if TYPE_CHECKING:``; as dotted names below ``butterfly``."""
    package = _module_name(path).split(".")[:-1]  # for an __init__, the package itself
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
                if node.module:
                    found.add(".".join(target))
                else:
                    found.update(".".join([*target, alias.name]) for alias in node.names)
            elif node.module and node.module.split(".")[0] == "butterfly":
                found.add(".".join(node.module.split(".")[1:]) or "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "butterfly":
                    found.add(".".join(alias.name.split(".")[1:]) or "__init__")
        for child in ast.iter_child_nodes(node):
            visit(child)

    tree = ast.parse(path.read_text())
    visit(tree)
    # a package's _EXPORTS names the modules its __getattr__ imports on first use (butterfly._lazy)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_EXPORTS" for t in node.targets):
            found.update(".".join([*package, value.value]) for value in node.value.values)
    return {f or "__init__" for f in found}


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p).removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(path):
            # "from . import _inference" names a module; "from .pp import X" the package pp (its __init__)
            if target not in modules and target.rsplit(".", 1)[0] in modules:
                target = target.rsplit(".", 1)[0]
            assert target in modules, f"{name} imports {target}, which is not a module of butterfly"
            targets.add(target)
        graph[name] = targets - {name}
    return graph


def _part(module: str) -> str:
    return module.split(".")[0]


def test_every_module_belongs_to_a_layer():
    parts = {_part(m) for m in _graph()}
    assert parts <= set(LAYERS), f"parts without a layer: {sorted(parts - set(LAYERS))}"


@pytest.mark.parametrize("part", sorted(set(LAYERS) - {"__init__", "__main__"}))
def test_imports_flow_downwards(part):
    wrong = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _part(module) == part
        for target in targets
        if _part(target) != part and LAYERS[_part(target)] >= LAYERS[part]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "\n".join(cycles)


def test_torch_layer_imports_neither_anndata_nor_pandas():
    for path in (PACKAGE / "module").glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {
            alias.name.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {
            node.module.split(".")[0]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module
        }
        assert not names & {"anndata", "pandas", "scanpy", "mudata"}, path.name


def _non_defaults(constructor) -> dict:
    """A value other than the default for every argument of ``constructor`` but the data."""
    import dataclasses

    import butterfly as bf

    chosen = {
        "modalities": (dataclasses.replace(bf.pp.RNA, name="gex"), "atac"),
        "layer": None,  # the data's layer: kept as given (None reads X, the only matrix these cells have)
        "pairing": "label",
        "label_key": "cell_type",
        "batch_key": "batch",
        "cluster_resolution": 1.5,
        "cluster_backend": "scvi",
        "cluster_options": {"n_latent": 5},
        "seed": 7,
        "device": "cpu",
        "validation_fraction": 0.25,
        "dropout": 0.2,
        "batch_norm": False,
        "discriminator_layers": 1,
        "names": ("before", "after"),
        "transport_components": 20,
    }
    return {name: chosen[name] for name in _settings(constructor)}


def _settings(constructor) -> list[str]:
    import inspect

    data = {"self", "first", "second", "control", "stimulated"}
    return [name for name in inspect.signature(constructor).parameters if name not in data]


@pytest.mark.parametrize("kind", ["paired", "unpaired", "perturbation"])
def test_every_constructor_argument_round_trips_through_save_and_load(kind, tmp_path):
    """The model records its constructor's arguments once (``init_params_``); save writes that record and load
    rebuilds the model from it, so that no argument can be forgotten on the way."""
    import butterfly as bf

    rna, atac = bf.datasets.snare_mcc_demo()
    rna, atac = rna[:300], atac[:300]
    constructor = {
        "paired": bf.Butterfly,
        "unpaired": bf.Butterfly.unpaired,
        "perturbation": bf.Butterfly.perturbation,
    }[kind]
    arguments = _non_defaults(constructor)
    if kind == "paired":
        arguments["cluster_backend"] = "builtin"  # the scvi backend needs the scvi extra; its options differ
        arguments["cluster_options"] = {"n_components": 10}
        model = bf.Butterfly(rna, atac, **arguments)
    elif kind == "unpaired":
        model = bf.Butterfly.unpaired(rna[:150], atac[150:], **arguments)
    else:
        expression = rna.copy()
        expression.X = expression.X.log1p()  # the perturbation model takes log-normalised expression
        model = bf.Butterfly.perturbation(expression[:150], expression[150:], **arguments)
    record = model.init_params_
    assert set(record) == {"constructor", *_settings(constructor)}, "an argument is not recorded"
    model.save(tmp_path / "model")
    loaded = bf.Butterfly.load(tmp_path / "model", device="cpu")
    assert loaded.init_params_ == record
    for attribute in ("names", "seed", "validation_fraction", "network_options", "pairing", "label_key",
                      "cluster_resolution", "cluster_backend", "cluster_options"):  # fmt: skip
        assert getattr(loaded, attribute) == getattr(model, attribute), attribute
    assert [loaded.specs[n] for n in loaded.names] == [model.specs[n] for n in model.names]
    assert getattr(loaded, "transport_components", None) == getattr(model, "transport_components", None)
    assert loaded.batch_categories_ == model.batch_categories_


def test_library_messages_speak_of_python_arguments():
    """Library code names Python arguments (``overwrite=True``); the command line translates them into its
    options (``--overwrite``, :func:`butterfly.cli._main.as_flags`). A string of the library that names a
    command-line option is allowed only where it quotes a ``butterfly`` command."""
    import re

    option = re.compile(r"(^|[\s(`'])--[a-z]|\(CLI")
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "cli":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
            if text and id(node) not in docstrings and option.search(text) and "`butterfly " not in text:
                found.append(f"{path.name}:{node.lineno}: {text[:80]}")
    assert not found, "\n".join(found)


def test_the_command_line_translates_python_arguments_into_its_options():
    from butterfly.cli._main import as_flags

    assert (
        as_flags("/x exists; pass overwrite=True to replace it.")
        == "/x exists; pass --overwrite to replace it."
    )
    assert as_flags("lower lr, e.g. fit(lr=0.0002)") == "lower lr, e.g. --lr 0.0002"
    assert as_flags("Use device='cpu'.") == "Use --device cpu."
    assert as_flags("fit(cuda_graphs=False) to run") == "--no-cuda-graphs to run"
    assert as_flags("e.g. Butterfly(rna, atac, modalities=('rna', 'atac')).") == "e.g. --modalities rna atac."
    assert as_flags("Pass label_key= one of them") == "Pass --label-key one of them"
    assert as_flags("normalized_to=10000, say") == "--normalized-to 10000, say"
    assert as_flags("np.log1p(x) and a=b stay") == "np.log1p(x) and a=b stay"  # not options of the CLI
