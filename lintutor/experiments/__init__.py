"""Experiments: every run whose results are stored in assets/ for a lesson to read.

Each experiment module has `run(...) -> dict`, which measures and writes
`assets/<name>_<device>.json`, and `table()` / `figure()`, which read that JSON back without a
GPU; `python -m lintutor.experiments.<name> --help` lists its options. Nothing here is imported
by lesson code or models; the tutor (`lintutor.course`) only calls `kernel_bench` for
`lintutor bench`.

Lesson 08's benchmark is split by job: `kernel_bench` (the sweeps and `lintutor bench`),
`kernel_providers` (what is timed, its inputs and references), `kernel_tune` (`--tune`),
`lm_curves` (the training runs), `results` (stored JSON back into tables and figures) and
`_gpu` (versions, roofs, timers). Lesson 05's ablation is `mlla_ablation`.
"""
