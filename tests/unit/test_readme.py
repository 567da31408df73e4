"""The README's code is code: its Python blocks compile, import what exists, and its extras exist."""

from __future__ import annotations

import ast
import importlib
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_has_python_blocks() -> None:
    assert len(PYTHON_BLOCKS) >= 8


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda block: block.splitlines()[0][:40])
def test_each_python_block_compiles_and_imports_names_that_exist(block: str) -> None:
    tree = compile(block, "README.md", "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("aiojobs_redis"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_the_first_example_imports_every_exception_it_raises() -> None:
    first = ast.parse(PYTHON_BLOCKS[0])
    nodes = list(ast.walk(first))
    imported = {alias.name for node in nodes if isinstance(node, ast.ImportFrom) for alias in node.names}
    calls = [node.exc for node in nodes if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)]
    raised = {call.func.id for call in calls if isinstance(call.func, ast.Name)}
    assert raised >= {"PermanentFailure", "RetryLater"}
    assert raised <= imported


def test_every_extra_is_listed_in_the_install_section() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    listed = set(re.findall(r"^\| `([a-z]+)` \|", section("Install"), re.M))
    assert set(extras) <= listed


def test_the_install_section_installs_from_a_path_not_an_index() -> None:
    lines = [line for line in section("Install").splitlines() if line.startswith(("pip install", "cd "))]
    assert lines
    for line in lines:
        target = line.split("pip install", 1)[1].split("#")[0].strip().strip("'")
        assert target.startswith(("./", "-e '.", "-e .")), line


def test_the_test_command_ci_runs_is_the_readmes() -> None:
    assert "\n```\nmake test\n```\n" in section("Tests")
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()


def test_every_link_to_a_section_finds_its_heading() -> None:
    headings = re.findall(r"^#{2,3} (.+)$", README, re.M)
    anchors = {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}
    links = set(re.findall(r"\]\(#([a-z0-9-]+)\)", README))
    assert links
    assert links <= anchors
