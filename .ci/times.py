"""Where CI's time went: test-seconds per part (summed over the xdist workers, setup included)
from the JUnit XML that .ci/run asks pytest for. Prints nothing when there is no report."""

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

PARTS = {  # issue 14's proofs, then the rest of the suite
    "tests.course.test_notebooks": "lessons run twice (unsolved, solved)",
    "tests.course.test_browser": "JupyterLab in Chromium",
    "tests.course.test_colab_env": "Colab's versions",
    "tests.course.test_site": "static site",
    "tests.course.test_fresh_machine": "fresh clone + README lines",
}


def main(path: str) -> None:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return
    per_module: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for case in root.iter("testcase"):
        parts = (case.get("classname") or "?").split(".")
        while len(parts) > 1 and parts[-1][:1].isupper():  # a test class: count its module
            parts.pop()
        module = ".".join(parts)
        per_module[module] += float(case.get("time") or 0)
        counts[module] += 1
    total = sum(per_module.values())
    if not total:
        return
    print(f"\ntest-seconds by part ({sum(counts.values())} tests, {total:.0f} s summed over "
          "the workers):")  # fmt: skip
    rest = total
    for module, label in PARTS.items():
        s = per_module.get(module, 0.0)
        rest -= s
        print(f"  {label:<40} {s:7.0f} s  {counts.get(module, 0):4d} tests")
    print(f"  {'everything else':<40} {rest:7.0f} s")
    others = sorted((m for m in per_module if m not in PARTS), key=lambda m: -per_module[m])
    print("  slowest other modules: " + ", ".join(
        f"{m.removeprefix('tests.')} {per_module[m]:.0f} s" for m in others[:5]))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".ci-junit.xml")
