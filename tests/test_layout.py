"""The package's layout holds: the core does not import the demo or the tests' scaffolding, the reward registry
knows no demo name, and no module of the package reads another object's private members."""

import ast
import os
import subprocess
import sys

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "diffusers_nft")
# Objects of this package that other modules hold: their private members stay theirs.
OURS = {"trainer", "policy", "family", "collector", "objective", "publisher", "run_log", "engine", "checkpointer",
        "scorer", "rewards", "plan", "args", "config", "rollouts", "credit"}


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


@pytest.mark.slow  # subprocess imports; the other layout tests read the source
def test_the_core_imports_neither_the_demo_nor_test_scaffolding():
    code = ("import sys; import diffusers_nft.trainer, diffusers_nft.evaluate, diffusers_nft.hub, "
            "diffusers_nft.publisher, diffusers_nft.run_log, diffusers_nft.rewards, diffusers_nft.generation; "
            "bad = [m for m in sys.modules if m.startswith('diffusers_nft.demo') or m.split('.')[0] in "
            "('tiny_pipelines', 'conftest')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not os.path.exists(os.path.join(PACKAGE, "testing_utils.py"))
    for path in _modules():
        text = open(path).read()
        assert "tiny_pipelines" not in text and "conftest" not in text, path


def test_the_reward_registry_names_no_demo_reward_and_imports_by_no_string():
    text = open(os.path.join(PACKAGE, "rewards", "registry.py")).read()
    assert "digit" not in text and "import_module" not in text
    from diffusers_nft.rewards import available_rewards

    assert {"digit_eval", "digit_judge"} <= set(available_rewards())  # registered by the demo, as a plugin


def test_no_module_reads_another_objects_private_members():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(open(path).read())):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                    and isinstance(node.value, ast.Name) and node.value.id in OURS):
                found.append(f"{os.path.relpath(path, PACKAGE)}:{node.lineno} {node.value.id}.{node.attr}")
    assert not found, found


def test_the_card_and_the_hub_take_plain_values():
    for name in ("hub.py", "publisher.py", "run_log.py", "generation.py"):
        tree = ast.parse(open(os.path.join(PACKAGE, name)).read())
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names} | {node.module for node in ast.walk(tree)
                                                if isinstance(node, ast.ImportFrom) and node.module}
        assert "trainer" not in imported and "NFTTrainer" not in imported, name
        args = {a.arg for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) for a in node.args.args}
        assert "trainer" not in args, name
