"""Repository-level checks: dependency lists agree, chapters are paired and small, checkpoints are recorded."""

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest
import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.py"))


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ]", requirement, maxsplit=1)[0].lower()


def installed_extras() -> list[str]:
    """The extras `make install` installs (EXTRAS ?= ... in the Makefile)."""
    return re.search(r"^EXTRAS \?= (.+)$", (ROOT / "Makefile").read_text(), re.M).group(1).split(",")


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(installed_extras()) <= set(extras), f"make install names extras pyproject lacks: {installed_extras()}"
    wanted = set(project["dependencies"]).union(*(extras[name] for name in installed_extras()))
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = {r for r in pip_section if not r.startswith("-e")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"
    assert "-e ." in pip_section


def test_every_chapter_has_both_files():
    assert CHAPTERS, "no chapters found"
    for py in CHAPTERS:
        assert py.with_suffix(".ipynb").exists(), f"{py.name} has no .ipynb"
    for nb in (ROOT / "chapters").glob("*.ipynb"):
        assert nb.with_suffix(".py").exists(), f"{nb.name} has no paired .py"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_py_and_ipynb_are_in_sync(py):
    from_py = jupytext.read(py)
    from_nb = nbformat.read(py.with_suffix(".ipynb"), as_version=4)
    cells_py = [(c.cell_type, c.source.strip()) for c in from_py.cells]
    cells_nb = [(c.cell_type, c.source.strip()) for c in from_nb.cells]
    assert cells_py == cells_nb, f"{py.name} and its .ipynb differ: run `jupytext --sync {py}`"


@pytest.mark.parametrize("py", CHAPTERS, ids=lambda p: p.stem)
def test_committed_notebooks_are_small(py):
    assert py.with_suffix(".ipynb").stat().st_size < 2_000_000


def test_shipped_checkpoints_record_how_they_were_made():
    for ckpt in (ROOT / "assets" / "checkpoints").glob("*.pt"):
        if ckpt.name.endswith(".resume.pt"):  # a run's private resume state, never committed
            continue
        record = json.loads(ckpt.with_suffix(".json").read_text())
        for key in ("recipe", "command", "seed", "step", "wall_time_s", "device", "metrics"):
            assert key in record, f"{ckpt.name}: sidecar lacks {key}"
        assert record["command"].startswith("minilineage train"), f"{ckpt.name} was not made by the CLI"
        assert ckpt.stat().st_size < 15_000_000



def _recipe_values_missing_from(wanted: dict, recorded: dict, path: str = "") -> list[str]:
    """Every value the recipe sets (recursively into nested dicts) that the record does not hold."""
    missing = []
    for key, value in wanted.items():
        held = recorded.get(key, "(absent)")
        if isinstance(value, dict) and isinstance(held, dict):
            missing += _recipe_values_missing_from(value, held, f"{path}{key}.")
        elif json.loads(json.dumps(value)) != held:  # tuples as the JSON record holds them, as lists
            missing.append(f"{path}{key}: recipe {value!r}, record {held!r}")
    return missing


def test_shipped_records_are_what_their_recipes_train_now():
    """Every shipped record (a checkpoint's sidecar or a study run's): a recipe changed without retraining would make
    the chapters describe another model. Fields added to TrainConfig since a run are absent from its record."""
    from dataclasses import asdict

    from minilineage.recipes import get_recipe
    from minilineage.recipes.core import merge

    for sidecar in (ROOT / "assets" / "checkpoints").glob("*.json"):
        record = json.loads(sidecar.read_text())
        recipe = get_recipe(record["recipe"])
        preset = recipe.presets[record["preset"]]
        train = asdict(preset.train)
        assert set(record["train_config"]) <= set(train), sidecar.name
        assert record["train_config"] == {k: train[k] for k in record["train_config"]}, \
            f"{sidecar.name} was trained with another TrainConfig than its recipe gives now: retrain it"
        assert record["step"] == train["steps"], f"{sidecar.name}: trained {record['step']} of {train['steps']} steps"
        missing = _recipe_values_missing_from(merge(recipe.model_config, preset.model), record["model_config"])
        assert not missing, f"{sidecar.name} is not what its recipe trains now: {missing}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_lab_serves_the_chapters_even_as_root_and_without_a_browser():
    """`make lab` as this machine runs it (root in CI and Docker): the server must come up and answer."""
    port, token = _free_port(), "minilineage-test"
    env = {**os.environ, "BROWSER": "false"}  # no browser to open, as on a server
    server = subprocess.Popen(["make", "--no-print-directory", "lab", f"LAB_ARGS=--port={port} --ServerApp.token={token}"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents?token={token}", timeout=2) as r:
                    status = json.loads(r.read())
            except OSError:
                time.sleep(0.5)
        assert status is not None, f"the server never answered; it printed:\n{server.stdout.read() if server.poll() is not None else ''}"
        assert {item["name"] for item in status["content"]} >= {p.with_suffix(".ipynb").name for p in CHAPTERS}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
