"""4. Data efficiency trained to convergence, and many-shot M2IV (issue 23, item 2).

Fixed binding, the binding claims' protocol (scripts/measure_binding_claims.py): every adapter (HiFICL,
MimIC, LIVE, M2IV, LoRA) is trained with the starter library's budget
(``casestudy.starter_train_config``: 2,000 steps, lr 5e-3, batch 8, mix-fixed 0.5) with only ``samples``
changed (50 / 100 / 300 / 1,000) from seeds 0, 1, 2, and scored at 0 demos on the same 300 held-out test
episodes (seed 0) as 8-shot ICL and the best ICL that fits (k in 1, 2, 4, 8: the demonstration counts the
teaching VLM was pretrained on; the claims script's definition).  Many-shot: M2IV at 1,000 samples with
its teacher reading 8 demos in 1 context (default), 16 in 2, 32 in 4; and MTV (training-free, one run each:
no training seed) reading the same 8 / 16 / 32 demos of each test episode in 1 / 2 / 4 prompts of 8
(``per_context``).  Each training run records its command (the ``mmict train`` line it equals), train
seconds, and its loss curve summarised with a plateau check (``data_summary.loss_summary``).  One JSON per
run under OUT; an existing JSON is not re-run.

    python -m benchmarks.data_efficiency --jobs 2                 # every run (resumes), then the summary
    python -m benchmarks.data_efficiency --summary --report benchmarks/results   # section 4 of report.md + figures

``python -m benchmarks`` reads the committed JSON (``settings.data_dir``) for its section 4 and says so;
``--quick`` runs this same code in-process at toy sizes.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_DIR = ROOT / "benchmarks" / "results" / "claims" / "binding"
ICL_SHOTS = 8
ICL_FITS = (1, 2, 4, 8)  # as scripts/measure_binding_claims.py: PretrainConfig.max_shots, the counts pretrained on

_BB = None  # the worker's backbone (loaded once per process)
_PROV = None  # the checkpoint hash and git commit (computed once per process)


def _backbone():
    global _BB
    if _BB is None:
        from mmict_core.backbones import load_backbone

        _BB = load_backbone("teaching")
    return _BB


def _provenance() -> dict:
    global _PROV
    if _PROV is None:
        from .provenance import checkpoint, git_state

        _PROV = {"checkpoint": checkpoint(), "git": git_state()}
    return _PROV


# ---------------------------------------------------------------------------------------------
# the plan


def plan(settings) -> list[dict]:
    """Every run: ICL 8-shot, the best ICL that fits, methods x samples x seeds, and M2IV's many-shot
    teachers at the largest sample size (the default teacher's runs serve both curves)."""
    from mmict_core.methods.m2iv import M2IVConfig

    jobs = [{"kind": "icl", "name": "icl"}, {"kind": "icl-fits", "name": "icl-fits"}]
    jobs += [{"kind": "vector", "method": "mtv", "variant": f"mtv-{k}x{sets}", "shots": k,
              "method_config": {"shots": k, "per_context": k // sets, "contexts": sets}, "name": f"mtv-{k}x{sets}"}
             for k, sets in settings.shot_m2iv]
    default = (M2IVConfig().train_shots, M2IVConfig().teacher_sets)
    top = max(settings.data_samples)
    variants = [(m, m, {}, n) for m in settings.data_methods for n in settings.data_samples]
    variants += [("m2iv", f"m2iv-{k}x{sets}", {"train_shots": k, "teacher_sets": sets}, top)
                 for k, sets in settings.shot_m2iv if (k, sets) != default]
    for seed in settings.data_seeds:
        for method, variant, over, n in variants:
            curves = (["samples"] if variant == method else []) + (["shots"] if method == "m2iv" and n == top else [])
            jobs.append({"kind": "train", "method": method, "variant": variant, "samples": n, "seed": seed,
                         "method_config": over, "curves": curves,
                         "name": f"{variant}.n{n}.seed{seed}"})
    return jobs


def train_setup(job: dict, settings):
    """(TrainConfig, command): the starter library's config with ``samples`` (and ``settings.data_train``)
    changed, and the ``mmict train`` command it equals (as the claims script writes it)."""
    from mmict_core.casestudy import StarterEntry, starter_train_config, train_command

    entry = StarterEntry("binding", job["method"], fixed_binding=True)
    base = starter_train_config(entry, job["seed"])
    over = {"samples": job["samples"], **settings.data_train}
    cmd = train_command(entry, job["seed"])
    for k, v in over.items():
        flag = f"--{k.replace('_', '-')}"
        if f"{flag} {getattr(base, k)}" not in cmd:
            raise ValueError(f"the starter command has no '{flag} {getattr(base, k)}' to change: {cmd}")
        cmd = cmd.replace(f"{flag} {getattr(base, k)}", f"{flag} {v}")
    cmd += "".join(f" --{k.replace('_', '-')} {v}" for k, v in job["method_config"].items())
    return replace(base, **over), cmd


def _cost(job: dict) -> float:
    """Rough relative cost, to start the longest runs first."""
    if job["kind"] == "vector":
        return 5.0
    if job["kind"] != "train":
        return 50.0
    teacher = job["method_config"].get("train_shots", {"m2iv": 8, "mimic": 4}.get(job["method"], 0))
    return (1.0 + teacher / 4.0) * (1 + job["seed"] * 1e-3)


# ---------------------------------------------------------------------------------------------
# one run


def _init_worker(threads: int) -> None:
    import logging
    import warnings

    import torch

    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from transformers.utils import logging as tlog

    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def run_one(job: dict, settings_dict: dict) -> dict:
    """Run ``job`` (a worker process or in-process) and return its record."""
    from mmict_core.data import get_task
    from mmict_core.evaluate.claims import wilson_interval
    from mmict_core.evaluate.icl import evaluate_generation
    from mmict_core.methods import create_method
    from mmict_core.train import train

    from .data_summary import loss_summary
    from .settings import Settings

    s = Settings(**settings_dict)
    prov = _provenance()  # the checkpoint and commit this run starts from
    t_start = time.perf_counter()
    bb = _backbone()
    task = get_task("binding", fixed_binding=True)
    n_ep = s.eval_episodes
    rec: dict = {"kind": job["kind"], "task": "binding (fixed)", "name": job["name"], "episodes": n_ep, "seed": 0}
    if job["kind"] == "icl":
        r = evaluate_generation(create_method("icl", bb).generate, task, [ICL_SHOTS], episodes=n_ep, seed=0, progress=False)[0]
        rec.update(method="icl", shots=ICL_SHOTS, accuracy=r.accuracy)
    elif job["kind"] == "icl-fits":
        rs = evaluate_generation(create_method("icl", bb).generate, task, list(ICL_FITS), episodes=n_ep, seed=0, progress=False)
        best = max(range(len(rs)), key=lambda i: rs[i].accuracy)
        rec.update(method="icl", shots=list(ICL_FITS), accuracies=[r.accuracy for r in rs], accuracy=rs[best].accuracy,
                   best_shots=ICL_FITS[best])
    elif job["kind"] == "vector":  # training-free: read the test episodes' own demonstrations
        m = create_method(job["method"], bb, **job["method_config"])
        r = evaluate_generation(m.generate, task, [job["shots"]], episodes=n_ep, seed=0, progress=False)[0]
        rec.update({k: job[k] for k in ("method", "variant", "shots", "method_config")})
        rec.update(accuracy=r.accuracy, command=f"mmict compare --task binding --fixed-binding --episodes {n_ep} "
                                                f"--methods {job['method']}:{job['shots']}"
                                                + "".join(f"@{k}={v}" for k, v in job["method_config"].items() if k != "shots"))
    else:
        tc, cmd = train_setup(job, s)
        m = create_method(job["method"], bb, seed=job["seed"], **job["method_config"])
        t0 = time.perf_counter()
        tr = train(m, tc, progress=False)
        train_s = time.perf_counter() - t0
        r = evaluate_generation(m.generate, task, [0], episodes=n_ep, seed=0, progress=False)[0]
        rec.update({k: job[k] for k in ("method", "variant", "samples", "seed", "method_config", "curves")})
        rec.update(shots=0, accuracy=r.accuracy, command=cmd, train_config=asdict(tc), steps=tr.steps,
                   train_seconds=round(train_s, 1), loss=loss_summary(tr.losses),
                   train_shots=getattr(m.config, "train_shots", None) if job["method"] == "m2iv" else None,
                   teacher_sets=getattr(m.config, "teacher_sets", None) if job["method"] == "m2iv" else None)
    rec["wilson95"] = list(wilson_interval(rec["accuracy"] * n_ep, n_ep))
    rec["seconds"] = round(time.perf_counter() - t_start, 1)  # the whole run: training and scoring
    rec.update(prov)
    return rec


def reused(job: dict, settings, claims_dir: Path = CLAIMS_DIR) -> dict | None:
    """A claims run whose recorded command is byte-identical to this job's, as this job's record (its
    loss curve was not recorded: the plateau check shows 'not checked'); None if there is none."""
    if job["kind"] != "train" or not claims_dir.is_dir():
        return None
    _, cmd = train_setup(job, settings)
    for p in sorted(claims_dir.glob("*.json")):
        c = json.loads(p.read_text())
        if c.get("command") == cmd and c.get("episodes") == settings.eval_episodes:
            rec = {k: job[k] for k in ("kind", "name", "method", "variant", "samples", "seed", "method_config", "curves")}
            rec.update(task=c["task"], episodes=c["episodes"], shots=0, accuracy=c["accuracy"], command=cmd,
                       train_config=None, steps=None, train_seconds=c["train_seconds"], loss=None,
                       train_shots=job["method_config"].get("train_shots", 8) if job["method"] == "m2iv" else None,
                       teacher_sets=job["method_config"].get("teacher_sets", 1) if job["method"] == "m2iv" else None,
                       wilson95=c["wilson95"], reused_from=str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name)
            return rec
    return None


def measure(settings, out: Path, jobs: int = 1, reuse_claims: bool = False, only: tuple[str, ...] = (),
            log=print) -> list[dict]:
    """Every planned run whose JSON is not under ``out`` yet (``only``: those whose name matches one of
    these shell patterns, e.g. ``lora.n50.*``), in ``jobs`` worker processes (longest first); each JSON
    is written as soon as its run ends.  A failed run is logged and left out."""
    from fnmatch import fnmatch

    out.mkdir(parents=True, exist_ok=True)
    todo = [j for j in plan(settings) if not (out / f"{j['name']}.json").exists()
            and (not only or any(fnmatch(j["name"], pat) for pat in only))]
    log(f"[data-efficiency] {len(todo)} run(s) to do under {out}")

    def save(job, rec):
        (out / f"{job['name']}.json").write_text(json.dumps(rec, indent=1))
        log(f"[data-efficiency] {job['name']}: accuracy {rec['accuracy']:.3f}, {rec.get('seconds', '?')} s"
            + (f" (training {rec['train_seconds']} s)" if rec.get("train_seconds") is not None else "")
            + (f", plateau {rec['loss']['plateau']}" if rec.get("loss") else ""))

    if reuse_claims:
        for j in list(todo):
            rec = reused(j, settings)
            if rec is not None:
                save(j, rec)
                todo.remove(j)
    todo.sort(key=_cost, reverse=True)
    sd = settings.as_dict()
    if jobs <= 1:
        for j in todo:
            save(j, run_one(j, sd))
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker,
                                 initargs=(settings.threads,)) as pool:
            futures = {pool.submit(run_one, j, sd): j for j in todo}
            for f in as_completed(futures):
                try:
                    save(futures[f], f.result())
                except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
                    log(f"[data-efficiency] {futures[f]['name']} FAILED: {type(e).__name__}: {e}")
    from .data_summary import load_runs

    return load_runs(out)


def _shown(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def run(settings) -> dict:
    """Section 4 of ``python -m benchmarks``: the full run summarises the committed JSON under
    ``settings.data_dir`` (it trains nothing: `python -m benchmarks.data_efficiency` does); --quick runs
    the plan in-process at its toy sizes in a temporary folder."""
    from .data_summary import load_runs, summarise

    if settings.quick:
        with tempfile.TemporaryDirectory() as tmp:
            runs = measure(settings, Path(tmp), jobs=settings.jobs, log=lambda *a: None)
        de = summarise(runs, source="a --quick in-process run at toy sizes (not a measurement)", seeds=settings.data_seeds)
    else:
        folder = ROOT / settings.data_dir
        de = summarise(load_runs(folder) if folder.is_dir() else [], source=_shown(folder), seeds=settings.data_seeds)
    de["quick"] = settings.quick
    return de


def write_report(report_dir: Path, de: dict) -> list[str]:
    """Replace section 4 of ``report_dir/report.json`` with ``de``: rewrite report.json and report.md, write
    section 4's figures and delete a stale one the summary no longer has (the other sections' files are
    left as they are).  Returns the figure files written."""
    from .data_summary import FIGURES, figures
    from .report import _clean, goals, markdown

    report_dir = Path(report_dir)
    path = report_dir / "report.json"
    report = json.loads(path.read_text())
    report["data_efficiency"] = de
    figs = figures(de)
    for name in FIGURES:
        if name not in figs and (report_dir / name).exists():
            (report_dir / name).unlink()
    for name, fig in figs.items():
        fig.write_html(report_dir / name, include_plotlyjs="directory")
    report["figures"] = [f for f in report.get("figures", []) if f not in FIGURES] + list(figs)
    goal_list = goals(report)
    report["goals"] = [g.as_dict() for g in goal_list]
    path.write_text(json.dumps(_clean(report), indent=1))
    (report_dir / "report.md").write_text(markdown(report, goal_list))
    return list(figs)


def main(argv=None) -> int:
    from .data_summary import load_runs, markdown, summarise
    from .settings import full_settings

    ap = argparse.ArgumentParser(prog="python -m benchmarks.data_efficiency", description=__doc__.split("\n\n")[0])
    s = full_settings()
    ap.add_argument("--out", type=Path, default=ROOT / s.data_dir, help=f"per-run JSON folder (default {s.data_dir})")
    ap.add_argument("--jobs", type=int, default=s.jobs, help=f"worker processes, one torch thread each (default {s.jobs})")
    ap.add_argument("--summary", action="store_true", help="run nothing: print section 4 from the JSON in --out")
    ap.add_argument("--reuse-claims", action="store_true",
                    help="take a binding-claims run whose command is byte-identical instead of re-running it "
                         "(its loss curve was not recorded: its plateau check shows 'not checked')")
    ap.add_argument("--only", default="", help="comma-separated run-name patterns to run (e.g. 'lora.n50.seed0,icl*')")
    ap.add_argument("--report", type=Path, default=None,
                    help="also put the summary into DIR/report.json as section 4 and rewrite DIR/report.md + figures")
    a = ap.parse_args(argv)
    if not a.summary:
        _init_worker(s.threads)
        from . import data_efficiency as this  # under -m this file is __main__: workers get the package's functions

        only = tuple(p.strip() for p in a.only.split(",") if p.strip())
        this.measure(s, a.out, jobs=a.jobs, reuse_claims=a.reuse_claims, only=only)
    de = summarise(load_runs(a.out) if a.out.is_dir() else [], source=_shown(a.out), seeds=s.data_seeds)
    de["quick"] = False
    print("\n".join(markdown(de)))
    if a.report is not None:
        write_report(a.report, de)
        print(f"[data-efficiency] section 4 of {a.report / 'report.md'} rewritten from {a.out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
