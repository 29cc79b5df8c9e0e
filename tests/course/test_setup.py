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


def test_readme_lists_every_lesson_and_no_missing_one():
    """The README's lesson table links each notebook present, and says of none that it is not
    written."""
    text = _read("README.md").split("## Lessons", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if re.match(r"\| \d\d \|", line)]
    present = sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks"))
                     if re.match(r"\d\d_.*\.ipynb$", f))  # fmt: skip
    assert [r[2:4] for r in rows] == [f[:2] for f in present]
    for row, name in zip(rows, present):
        assert f"(notebooks/{name})" in row, row
    assert "not written" not in text


def test_colab_cell_does_nothing_when_lintutor_is_installed(monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError("the set-up cell must not install anything here")

    monkeypatch.setattr(subprocess, "run", refuse)
    exec(COLAB_SETUP, {})


def _fake_colab(monkeypatch, returncode=0, stderr="", missing=("triton",)):
    """Run COLAB_SETUP as on a Colab runtime where lintutor is not installed yet: pip's calls
    are recorded (and answer `returncode`), and of lintutor's requirements only `missing` are
    absent (Colab's CPU runtime has no triton)."""
    import importlib.metadata
    import importlib.util
    import subprocess
    import types

    calls = []
    real_find_spec, real_version = importlib.util.find_spec, importlib.metadata.version
    requires = tomllib.loads(_read("pyproject.toml"))["project"]["dependencies"]

    def find_spec(name, *args, **kwargs):
        return None if name == "lintutor" else real_find_spec(name, *args, **kwargs)

    def version(name):
        if name in missing:
            raise importlib.metadata.PackageNotFoundError(name)
        return "1.0" if name != "lintutor" else real_version(name)

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(
        importlib.metadata, "requires", lambda name: requires + ["pytest; extra == 'test'"]
    )
    monkeypatch.setattr(subprocess, "run", run)
    monkeypatch.delenv("LINTUTOR_SOURCE", raising=False)
    return calls


def test_colab_cell_installs_this_version_and_only_what_colab_lacks(monkeypatch):
    from lintutor import __version__
    from lintutor.course.notebook import REPO_URL

    calls = _fake_colab(monkeypatch)
    exec(COLAB_SETUP, {})
    installs = [cmd[cmd.index("-q") + 1 :] for cmd in calls]
    assert installs[0] == ["--no-deps", f"git+{REPO_URL}@v{__version__}"]
    assert installs[1:] == [["triton>=3.2"]], installs  # never torch, numpy or ipywidgets


def test_colab_cell_says_what_went_wrong_when_it_cannot_install(monkeypatch):
    import subprocess

    import pytest

    _fake_colab(monkeypatch, returncode=1, stderr="fatal: no tag v0.1.0 in this repository")
    with pytest.raises(RuntimeError) as err:
        exec(COLAB_SETUP, {})
    assert not isinstance(err.value, subprocess.CalledProcessError)
    assert "Could not install" in str(err.value) and "no tag v0.1.0" in str(err.value)
    assert "LINTUTOR_SOURCE" in str(err.value)


def test_the_repository_address_is_set_in_one_place():
    from lintutor.course import notebook

    url = tomllib.loads(_read("pyproject.toml"))["project"]["urls"]["Repository"]
    assert notebook.REPO_URL == url == notebook._REPOSITORY
    assert url in COLAB_SETUP


def test_environment_yml_pins_the_python_ci_tests():
    env = yaml.safe_load(_read("environment.yml"))
    assert "python=3.11" in env["dependencies"]  # CI tests 3.11


def test_declared_packages_are_imported_and_the_lessons_accept_colabs_widgets():
    deps = tomllib.loads(_read("pyproject.toml"))["project"]["dependencies"]
    names = {re.match(r"[A-Za-z0-9_.-]+", d).group().lower() for d in deps}
    assert "einops" not in names
    widgets = next(d for d in deps if d.startswith("ipywidgets"))
    lo = tuple(map(int, re.search(r">=([\d.]+)", widgets).group(1).split(".")))
    assert lo <= (7, 7, 1), "Colab ships ipywidgets 7.7.1"
    code = ""
    for folder in ("lintutor", "notebooks"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, folder)):
            for f in files:
                if f.endswith((".py", ".ipynb")):
                    with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                        code += fh.read()
    import_names = {"scikit-learn": "sklearn"}
    for name in names:
        mod = import_names.get(name, name)
        assert re.search(rf"(import|from) {mod}\b", code), f"{name} is declared, never imported"
