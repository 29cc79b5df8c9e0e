"""The learner's workspace: a folder of their own that holds their copy of every lesson and a
small progress file. The course's lessons (notebooks/ in a checkout, or the copy inside an
installed package) stay untouched, so the project's own tests keep reading the originals.

    ~/lintutor-lessons/              (or `--dir`, or $LINTUTOR_HOME)
        01_softmax_attention.ipynb   copied once by `lintutor lab`, never overwritten
        ...
        progress.json                which exercises pass (`lintutor check`, and `check()` in
                                     a lesson that runs here)
        backups/20261202-141500/     what `lintutor update` replaced, kept before replacing

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import datetime
import filecmp
import glob
import json
import os
import shutil
import time

PROGRESS = "progress.json"
BACKUPS = "backups"
LESSON_GLOB = "[0-9][0-9]_*.ipynb"


def default_dir() -> str:
    """$LINTUTOR_HOME, else ~/lintutor-lessons."""
    return os.path.abspath(
        os.path.expanduser(os.environ.get("LINTUTOR_HOME") or "~/lintutor-lessons")
    )


def course_lessons() -> list[str]:
    """The course's lesson notebooks (NN_name.ipynb), in order, from the first of
    `lesson_dirs()` that has them."""
    from lintutor.course.notebook import lesson_dirs

    for d in lesson_dirs():
        found = sorted(glob.glob(os.path.join(d, LESSON_GLOB)))
        if found:
            return found
    return []


class Workspace:
    """The learner's folder `root` (created on first use)."""

    def __init__(self, root: str | None = None):
        self.root = os.path.abspath(os.path.expanduser(root)) if root else default_dir()

    def __repr__(self) -> str:
        return f"Workspace({self.root!r})"

    @property
    def progress_path(self) -> str:
        return os.path.join(self.root, PROGRESS)

    def exists(self) -> bool:
        return os.path.isdir(self.root) and any(
            os.path.exists(os.path.join(self.root, os.path.basename(p))) for p in course_lessons()
        )

    # --- copying --------------------------------------------------------------------------

    def plan(self) -> list[tuple[str, str, str]]:
        """[(action, lesson name, why)] for the course's lessons: "copy" (not here yet), "keep"
        (here, same as the course's), "changed" (here, differs: yours or an older version)."""
        out = []
        for src in course_lessons():
            name = os.path.basename(src)
            dst = os.path.join(self.root, name)
            if not os.path.exists(dst):
                out.append(("copy", name, "not in the workspace yet"))
            elif filecmp.cmp(src, dst, shallow=False):
                out.append(("keep", name, "same as the course's"))
            else:
                out.append(("changed", name, "differs from the course's (your work, or older)"))
        return out

    def ensure(self, dry_run: bool = False, say=print) -> list[str]:
        """Copy the lessons that are not here yet; never touch one that is. Returns the names
        copied (or that would be, with dry_run)."""
        todo = [name for action, name, _ in self.plan() if action == "copy"]
        sources = {os.path.basename(p): p for p in course_lessons()}
        if not todo:
            return []
        if dry_run:
            say(f"would copy {len(todo)} lesson(s) to {self.root}: {', '.join(todo)}")
            return todo
        os.makedirs(self.root, exist_ok=True)
        if not os.path.exists(self.progress_path):  # marks the folder as a workspace
            self.record([], by="lintutor lab")
        for name in todo:
            shutil.copy2(sources[name], os.path.join(self.root, name))
        say(f"copied {len(todo)} lesson(s) to {self.root}")
        return todo

    def update(self, dry_run: bool = False, say=print) -> list[str]:
        """Bring every lesson to the course's version: missing ones are copied, and each one that
        differs is first copied to backups/<YYYYmmdd-HHMMSS>/, then replaced. Returns the names
        replaced (or that would be)."""
        sources = {os.path.basename(p): p for p in course_lessons()}
        changed = [name for action, name, _ in self.plan() if action == "changed"]
        self.ensure(dry_run=dry_run, say=say)
        if not changed:
            say("every lesson in the workspace is the course's version")
            return []
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = os.path.join(self.root, BACKUPS, stamp)
        if dry_run:
            say(f"would back up and replace {', '.join(changed)} (backups in {backup})")
            return changed
        n = 1
        while os.path.exists(backup):  # two updates in one second
            backup = os.path.join(self.root, BACKUPS, f"{stamp}-{n}")
            n += 1
        os.makedirs(backup)
        for name in changed:
            dst = os.path.join(self.root, name)
            shutil.copy2(dst, os.path.join(backup, name))
            shutil.copy2(sources[name], dst)
            say(f"updated {name}; your version is in {os.path.relpath(backup, self.root)}/")
        return changed

    # --- which file is the learner's ------------------------------------------------------

    def lesson(self, key: str) -> str:
        """The workspace's copy of a lesson, by number ("01", "1") or name
        ("01_softmax_attention"): exactly the course's file name, never a JupyterLab
        duplicate ("...-Copy1.ipynb") or any other notebook. FileNotFoundError says why."""
        key = key.removesuffix(".ipynb")
        names = [os.path.basename(p) for p in course_lessons()]
        if key.isdigit():
            hits = [n for n in names if n[:2] == f"{int(key):02d}"]
        else:
            hits = [n for n in names if n.removesuffix(".ipynb") == key] or [
                n for n in names if n.startswith(key)
            ]
        if not hits:
            raise FileNotFoundError(
                f"no lesson matches {key!r}; the lessons are {', '.join(n[:2] for n in names)}"
            )
        path = os.path.join(self.root, hits[0])
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{hits[0]} is not in your workspace {self.root}: `lintutor lab` copies the "
                "lessons there (or pass the path of the notebook to check)"
            )
        return path

    def duplicates(self, path: str) -> list[str]:
        """Other notebooks in the workspace whose names start like this lesson's (JupyterLab's
        "Duplicate" makes NN_name-Copy1.ipynb): they are not graded, and the learner is told."""
        stem = os.path.basename(path).removesuffix(".ipynb")
        return sorted(p for p in glob.glob(os.path.join(self.root, stem + "*.ipynb")) if p != path)

    def holds(self, path: str) -> bool:
        """Whether `path` is one of this workspace's lesson copies."""
        names = {os.path.basename(p) for p in course_lessons()}
        p = os.path.abspath(path)
        return os.path.dirname(p) == self.root and os.path.basename(p) in names

    # --- progress -------------------------------------------------------------------------

    def progress(self) -> dict:
        """{exercise id: {"status": ..., "when": ISO time, "by": ...}} from progress.json ({}
        when there is none, or it cannot be read)."""
        try:
            with open(self.progress_path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError):
            return {}
        ex = data.get("exercises", {}) if isinstance(data, dict) else {}
        return ex if isinstance(ex, dict) else {}

    def record(self, results, by: str) -> None:
        """Store each result's status (CheckResult or (id, status) pairs) in progress.json."""
        if not os.path.isdir(self.root):
            return
        when = datetime.datetime.now().isoformat(timespec="seconds")
        with _locked(os.path.join(self.root, ".progress.lock")):
            data = self.progress()
            for r in results:
                ex_id, status = (r.exercise, r.status) if hasattr(r, "exercise") else r
                entry = {"status": status, "when": when, "by": by}
                if status == "pass" or data.get(ex_id, {}).get("passed"):
                    entry["passed"] = data.get(ex_id, {}).get("passed") or when
                data[ex_id] = entry
            tmp = os.path.join(self.root, ".progress.json.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"version": 1, "exercises": data}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.progress_path)


@contextlib.contextmanager
def _locked(path: str):
    """An exclusive lock on `path` where the platform has one (two kernels may check at once)."""
    try:
        import fcntl
    except ImportError:  # Windows: the atomic replace is all we get
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def current() -> Workspace | None:
    """The workspace a running lesson is in: $LINTUTOR_WORKSPACE (set by `lintutor lab` for
    its kernels), else the current folder when it holds progress.json or lesson copies of
    the default workspace; None elsewhere (a checkout's notebooks/, a test)."""
    env = os.environ.get("LINTUTOR_WORKSPACE")
    if env:
        return Workspace(env)
    cwd = os.path.abspath(os.getcwd())
    if os.path.exists(os.path.join(cwd, PROGRESS)) or cwd == default_dir():
        return Workspace(cwd)
    return None


def record_check(result) -> None:
    """Called by `check()`: remember the verdict when the lesson runs in a workspace. Never
    raises (progress is a convenience, never a reason for a check to fail)."""
    try:
        ws = current()
        if ws is not None and os.path.isdir(ws.root):
            ws.record([result], by="notebook")
    except Exception:  # noqa: BLE001
        pass
