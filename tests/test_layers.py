"""The package's layers: every import inside ``lightning_svi`` goes down (or sideways within one
package, without cycles), so a reader can learn the code bottom-up."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lightning_svi"

# Lowest first. A module may import from its own layer or any layer before it.
LAYERS = [
    "errors",
    "lightning_state",
    "config",
    "core",
    "compile",
    "analysis",
    "models",
    "data",
    "checkpointing",
    "logging",
    "training",
    "cli",
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def imported_modules(path: Path) -> set[str]:
    """Every ``lightning_svi`` module a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lightning_svi"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(
                    candidate if (PACKAGE.parent / (candidate.replace(".", "/") + ".py")).exists() else node.module
                )
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lightning_svi"))
    return found


MODULES = {module_name(path): imported_modules(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_package_is_a_known_layer():
    unknown = {layer_of(name) for name in MODULES} - set(LAYERS) - {"__init__"}
    assert not unknown, f"packages missing from LAYERS: {sorted(unknown)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_go_down(module):
    if module == "lightning_svi":
        return
    rank = LAYERS.index(layer_of(module))
    upward = sorted(
        target for target in MODULES[module] if target != "lightning_svi" and LAYERS.index(layer_of(target)) > rank
    )
    assert not upward, f"{module} imports from a higher layer: {upward}"


def test_no_import_cycles():
    graph = {
        name: {target for target in targets if target in MODULES and target != name}
        for name, targets in MODULES.items()
    }
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == 1:
                cycle = [*stack[stack.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name)


def test_the_inference_layers_load_without_lightning_or_tensorboard():
    """Estimators, programs, compiled steps and posterior analysis are plain torch and Pyro: they can be
    used (and tested) without a Trainer, and a change that drags Lightning or TensorBoard in fails here."""
    code = (
        "import sys\n"
        "import lightning_svi.core.estimators, lightning_svi.core.programs.build\n"
        "import lightning_svi.compile.compiled_step, lightning_svi.analysis.posterior, lightning_svi.models.gmm\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'pytorch_lightning', 'lightning', 'tensorboard'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
