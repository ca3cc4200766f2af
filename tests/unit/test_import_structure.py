"""The import structure the design relies on: no import circle among ScanQ's own
modules (counting imports inside functions, which only postpone a circle), and a web
process that never imports TensorFlow or the training code."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("models", "db", "web", "worker", "cli", "scanq")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node but those under `if TYPE_CHECKING:` (imports for annotations only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            test = child.test if isinstance(child, ast.If) else None
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                todo.extend(child.orelse)
            else:
                todo.append(child)


def _imports(path: Path, known: set[str]) -> set[str]:
    """ScanQ modules `path` imports anywhere in its body at run time (`from pkg import
    mod` counts as importing pkg.mod when that is a module)."""
    found = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    known = set(files)
    # A package's __init__ importing nothing of its own is the common case; a module is
    # not said to import its own package.
    return {
        name: {dep for dep in _imports(path, known) if not name.startswith(dep + ".")}
        for name, path in files.items()
    }


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_among_scanq_modules():
    graph = _graph()
    assert "models.train" in graph and "models.recipes" in graph["models.train"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_web_process_imports_no_tensorflow_nor_training_code(tmp_path):
    """The web app with every blueprint registered, in a fresh interpreter. (It reads the
    training options and the recipe table, which import neither.)"""
    probe = (
        "import sys\n"
        "from web.app import create_app\n"
        "create_app()\n"
        "heavy = ('tensorflow', 'keras', 'models.train', 'sklearn')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    env = {"SCANQ_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"the web process imported {done.stdout.strip()}"


def test_a_cpu_worker_scoring_an_export_imports_no_tensorflow(tmp_path):
    """A CPU worker process scoring the shipped X-ray model's checked export, with its
    lung share, as worker.runtime loads it, in a fresh interpreter. TensorFlow is for
    training, heat-map tasks and GPUs; here it would only cost memory and threads."""
    from worker.runtime import GPU_DRIVER_FILES

    if any(Path(f).exists() for f in GPU_DRIVER_FILES):
        pytest.skip("a GPU driver is present: TensorFlow is asked about the device")
    probe = (
        "import sys\n"
        "import numpy as np\n"
        "from scanq.settings import load_settings\n"
        "from worker.runtime import predictor_for\n"
        "from models.lung.share import shares_for_scoring\n"
        "p = predictor_for(load_settings(), 1, 'builtin/xray', 1.0, 'efficientnet_lite0')\n"
        "x = np.random.default_rng(0).uniform(0, 255, (3, 256, 256, 1)).astype('float32')\n"
        "probs, verdicts, maps = p.predict_judge_and_map(x)\n"
        "shares = shares_for_scoring(p, x, maps)\n"
        "assert p.runtime == 'onnx' and len(probs) == 3 and all(s is not None for s in shares)\n"
        "print(','.join(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))\n"
    )
    env = {"SCANQ_DATA_DIR": str(tmp_path), "SCANQ_RUNTIME": "auto", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "", f"the worker imported {done.stdout.strip()}"
