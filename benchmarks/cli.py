"""``python -m benchmarks [--quick] [--out DIR]``: run every section, write the report, print the goals.
``python -m benchmarks report --readme``: regenerate the README's benchmark table from the report JSON."""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import logging
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def training_running() -> bool | None:
    """Whether a teaching-VLM pretraining job runs on this machine (timings beside it are distorted)."""
    try:
        r = subprocess.run(["pgrep", "-f", "pretrain-teaching"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.returncode == 0 and bool(r.stdout.strip())


@contextlib.contextmanager
def _quiet():
    """Silence warnings, logging below ERROR and transformers' progress bars; restored afterwards."""
    from transformers.utils import logging as tlog

    disabled = logging.root.manager.disable
    verbosity, bars = tlog.get_verbosity(), tlog.is_progress_bar_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # bitsandbytes' optional-kernel notice and the like
        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
        try:
            yield
        finally:
            logging.disable(disabled)
            tlog.set_verbosity(verbosity)
            if bars:
                tlog.enable_progress_bar()


def parse(argv=None) -> argparse.Namespace:
    from .report import SECTIONS

    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny settings (about 30 s): every section, few repeats")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the timings (default 1)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes for the --quick section 4 runs (default 1; the full run only reads section 4's committed JSON: measure it with python -m benchmarks.data_efficiency --jobs N)")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    return p.parse_args(argv)


def run(quick: bool = False, out: Path = DEFAULT_OUT, threads: int = 1, jobs: int | None = None,
        only: tuple[str, ...] = (), log=print) -> dict:
    """Run the benchmark sections and write report.json / report.md / figures into ``out``.
    Warning/logging filters and torch's thread count are restored afterwards."""
    import torch

    before = torch.get_num_threads()
    try:
        with _quiet():
            return _run(quick, out, threads, jobs, only, log)
    finally:
        torch.set_num_threads(before)


def _run(quick: bool, out: Path, threads: int, jobs: int | None, only: tuple[str, ...], log) -> dict:
    import torch

    from . import backbone as s_backbone
    from . import compare_path as s_compare
    from . import data_efficiency as s_data
    from . import hotpath as s_hot
    from . import inference as s_inf
    from . import training as s_train
    from .common import scaled_backbone
    from .provenance import provenance
    from .report import SECTIONS, write
    from .settings import full_settings, quick_settings
    from .stats import cpu_info

    unknown = [s for s in only if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown section(s) {unknown}; choose from {', '.join(SECTIONS)}")
    overrides = {"threads": threads} | ({"jobs": jobs} if jobs is not None else {})
    settings = quick_settings(**overrides) if quick else full_settings(**overrides)
    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    t_start = time.perf_counter()
    busy = training_running()
    report: dict = {"meta": {"quick": quick, "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
                             "torch": torch.__version__, "threads": settings.threads, **cpu_info(),
                             "training_running": {True: "yes (timings distorted; ratios are same-run)", False: "no",
                                                  None: "unknown"}[busy],
                             "warnings": [], "errors": {}, "section_s": {}, **provenance()},
                    "settings": settings.as_dict()}
    load = report["meta"].get("load_avg")
    if load and load[0] > 0.5 * (report["meta"].get("cpu_count") or 1):
        report["meta"]["warnings"].append(f"the machine was busy when this run started (1-minute load average {load[0]:.2f} on "
                                          f"{report['meta'].get('cpu_count')} cores): absolute times are inflated and noisier; "
                                          "the ratios compare configurations measured interleaved in the same run.")
    if busy:
        report["meta"]["warnings"].append("a teaching-VLM pretraining job was running during this benchmark: absolute "
                                          "times are inflated and noisier; the ratios compare configurations measured "
                                          "interleaved in the same run.")
    from mmict_core.backbones import TeachingVLM

    bb = TeachingVLM.load(None)
    steps = [
        ("inference", lambda: s_inf.run(bb, settings, scaled_backbone(seed=settings.seed, **settings.scaled_inference))),
        ("training", lambda: s_train.run(bb, settings)),
        ("hotpath", lambda: s_hot.run(bb, settings)),
        ("compare", lambda: s_compare.run(bb, settings)),
        ("backbone", lambda: s_backbone.run(settings)),
        ("data_efficiency", lambda: s_data.run(settings)),  # full: reads the committed JSON; --quick: trains in-process
    ]
    for name, fn in steps:
        if only and name not in only:
            continue
        log(f"[benchmarks] {name} ...")
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as e:  # noqa: BLE001 - a failed section is reported, never hidden
            report["meta"]["errors"][name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
        report["meta"]["section_s"][name] = round(time.perf_counter() - t0, 1)
        log(f"[benchmarks] {name} done in {report['meta']['section_s'][name]:.1f} s")
        if name == "compare" and name in report:
            log("[benchmarks] Compare path, before / after (median, same run): " + ", ".join(
                f"{k} {v:.2f}x" if v is not None else f"{k} n/a" for k, v in report[name]["speedup"].items()))
    report["meta"]["wall_s"] = time.perf_counter() - t_start
    report["meta"]["load_avg_end"] = cpu_info()["load_avg"]
    goal_list = write(report, Path(out))
    for g in goal_list:
        log(g.line())
    log(f"[benchmarks] {sum(g.passed for g in goal_list)}/{len(goal_list)} goals PASS; wall time "
        f"{report['meta']['wall_s']:.1f} s; report: {Path(out) / 'report.md'}")
    return report


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["report"]:  # python -m benchmarks report [--readme | --check]
        from .readme import main as report_main

        return report_main(argv[1:])
    args = parse(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    report = run(quick=args.quick, out=args.out, threads=args.threads, jobs=args.jobs, only=only)
    return 1 if report["meta"]["errors"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
