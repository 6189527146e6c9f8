"""e2wm installed from its wheel, not from this checkout: the package data (recipes, lm-eval task files)
travels with it, and the commands that read them run from any directory."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support.tiny_lm import save_tiny_eval_corpus, save_tiny_lm

from e2wm.training.recipe import RECIPES_DIR, recipe_path

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel of this checkout, installed (without dependencies) into its own folder."""
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", root / "dist", ROOT], check=True
    )
    (wheel,) = (root / "dist").glob("e2wm-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", root / "site", wheel], check=True)
    return root / "site"


def _run(installed: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(installed), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True)


def test_the_wheel_holds_the_recipes_and_the_lm_eval_tasks(installed):
    files = {p.relative_to(installed).as_posix() for p in installed.rglob("*") if p.is_file()}
    recipes = {f"e2wm/recipes/{p.name}" for p in (ROOT / "recipes").glob("*.yaml")}
    tasks = {
        f"e2wm/eval/lm_eval_tasks/e2wm/{p.name}" for p in (ROOT / "e2wm/eval/lm_eval_tasks/e2wm").iterdir()
    }
    configs = {f"e2wm/accelerate_configs/{p.name}" for p in (ROOT / "accelerate_configs").glob("*.yaml")}
    assert len(recipes) >= 7 and len(tasks) >= 17 and len(configs) == 6
    assert recipes | tasks | configs <= files


def test_a_shipped_recipe_is_found_by_name_from_any_directory(installed, tmp_path):
    assert recipe_path("smollm2_ewc_lora_cpu") == str(RECIPES_DIR / "smollm2_ewc_lora_cpu.yaml")
    assert recipe_path(str(tmp_path / "mine.yaml")) == str(tmp_path / "mine.yaml")  # not shipped: as given
    code = "from e2wm.training.recipe import recipe_path; print(recipe_path('recipes/smollm2_ewc_lora_cpu'))"
    proc = _run(installed, tmp_path, "-c", code)
    assert Path(proc.stdout.strip()) == installed / "e2wm" / "recipes" / "smollm2_ewc_lora_cpu.yaml", (
        proc.stderr
    )


def test_the_installed_package_runs_the_lm_eval_backend_outside_the_checkout(installed, tmp_path):
    model, corpus = save_tiny_lm(tmp_path / "model"), save_tiny_eval_corpus(tmp_path / "corpus")
    where = _run(installed, tmp_path, "-c", "import e2wm; print(e2wm.__file__)").stdout.strip()
    assert Path(where).is_relative_to(installed)  # not this checkout
    proc = _run(
        installed, tmp_path, "-m", "e2wm", "eval", "--model", str(model), "--corpus", str(corpus),
        "--backend", "lm-eval", "--suite", "embodied", "--splits", "test_seen", "--tasks", "housework_qa",
        "state_tracking_open", "--limit", "2", "--out", "eval", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    rows = {(r["task"], r["split"], r["n"]) for r in results["results"]}
    assert results["backend"] == "lm-eval"
    assert rows == {("housework_qa", "test_seen", 2), ("state_tracking_open", "test_seen", 2)}


def _requirement_name(requirement: str) -> str:
    name = re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_third_party_import_is_a_declared_dependency():
    """What the package imports is in pyproject's dependencies or one of its extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [
        r for extra in project["optional-dependencies"].values() for r in extra
    ]
    declared = {_requirement_name(r) for r in requirements}
    imported = set()
    for path in (ROOT / "e2wm").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.partition(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.partition(".")[0])
    third_party = sorted(imported - set(sys.stdlib_module_names) - {"e2wm"})
    distributions = importlib.metadata.packages_distributions()
    undeclared = [m for m in third_party if not {_requirement_name(d) for d in distributions[m]} & declared]
    assert len(third_party) >= 20 and not undeclared
