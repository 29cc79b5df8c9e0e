"""`lintutor doctor` and the course map name exactly the lessons whose notebooks are present."""

import nbformat

from lintutor.course import doctor


def _lesson(folder, name, title, code=""):
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(code),
        nbformat.v4.new_markdown_cell(f"# {title}\n\ntext"),
    ]
    nbformat.write(nb, str(folder / name))


def _folder(tmp_path):
    _lesson(tmp_path, "00_start_here.ipynb", "00 · Start here")
    _lesson(tmp_path, "01_softmax_attention.ipynb", "01 · Softmax attention", "import torch")
    _lesson(
        tmp_path, "08_triton_kernels.ipynb", "08 · Triton kernels", "import lintutor.kernels as K"
    )
    (tmp_path / "notes.ipynb").write_text("not a lesson")
    return str(tmp_path)


def test_lessons_are_read_from_the_notebooks_present(tmp_path):
    found = doctor.lessons(_folder(tmp_path))
    assert [le["number"] for le in found] == ["00", "01", "08"]
    assert [le["title"] for le in found] == ["Start here", "Softmax attention", "Triton kernels"]
    assert [le["triton"] for le in found] == [False, False, True]
    # lesson 01's exercises exist in the package: counted with their minutes
    assert found[1]["exercises"] >= 3 and found[1]["minutes"] > 0
    assert found[0]["exercises"] == 0


def test_course_map_lists_only_present_lessons(tmp_path):
    table = doctor.course_map(_folder(tmp_path))
    rows = [line for line in table.splitlines() if line.startswith("| 0")]
    assert [r.split("|")[1].strip() for r in rows] == ["00", "01", "08"]
    assert "Triton" in rows[2] and "any CPU" in rows[1]
    assert "No lesson notebooks" in doctor.course_map(str(tmp_path / "missing"))


def test_report_names_only_present_lessons(tmp_path, monkeypatch):
    folder = _folder(tmp_path)
    monkeypatch.setattr(doctor, "lesson_folder", lambda: folder)
    monkeypatch.setattr(doctor, "triton_status", lambda: ("interpreter", "canary stub"))
    works = doctor.report().split("What works here:")[1]
    assert "lessons 00-01: everything" in works
    assert "lesson 08 (Triton kernels): kernels run in Triton's CPU interpreter" in works
    for absent in ("02", "05", "07", "09"):
        assert absent not in works, works


def test_numbers_are_written_as_runs():
    assert doctor._numbers(["00", "01", "02", "05", "07", "08"]) == "00-02, 05, 07-08"
    assert doctor._numbers(["03"]) == "03"
