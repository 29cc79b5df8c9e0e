"""Set-up files agree with each other: pyproject, environment.yml, README, .ci/run, and the
Colab cell."""

import os
import re
import sys

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

from lintutor.course.notebook import COLAB_SETUP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_environment_yml_installs_what_pyproject_declares():
    project = tomllib.loads(_read("pyproject.toml"))["project"]
    declared = set(project["dependencies"]) | set(project["optional-dependencies"]["lab"])
    env = yaml.safe_load(_read("environment.yml"))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip
    assert set(pip) - {"-e ."} == declared


def test_torch_range_admits_ci_version_and_triton_is_linux_only():
    deps = tomllib.loads(_read("pyproject.toml"))["project"]["dependencies"]
    torch_req = next(d for d in deps if d.startswith("torch"))
    lo, hi = re.match(r"torch>=([\d.]+),<([\d.]+)", torch_req).groups()
    assert tuple(map(int, lo.split("."))) <= (2, 13) < tuple(map(int, hi.split(".")))
    assert any(d.startswith("triton") and "sys_platform == 'linux'" in d for d in deps)


def _readme_block(title):
    text = _read("README.md")
    block = text.split(title, 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [line for line in block.strip().splitlines() if not line.startswith("#")]


def test_ci_runs_exactly_the_readme_test_command():
    test_cmd = _readme_block("### Run the tests")[-1].strip()
    assert "pytest" in test_cmd
    ci = [line.strip() for line in _read(".ci/run").splitlines()]
    assert test_cmd in ci, f"{test_cmd!r} not in .ci/run"
    assert any("pip install" in line and "torch==2.13.0" in line for line in ci)
    assert ci.index(test_cmd) > next(i for i, line in enumerate(ci) if "torch==2.13.0" in line)


def test_readme_has_the_open_command():
    assert any("lintutor lab" in line for line in _readme_block("### Open the lessons"))


def test_colab_cell_does_nothing_when_lintutor_is_installed(monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError("the set-up cell must not install anything here")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(COLAB_SETUP, {})


def test_colab_cell_keeps_colab_packages():
    assert "--no-deps" in COLAB_SETUP
    for name in ("torch", "numpy", "ipywidgets"):
        assert f'"{name}"' not in COLAB_SETUP
