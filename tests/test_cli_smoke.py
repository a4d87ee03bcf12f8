"""The happy path of every `mmict` subcommand, with tiny settings (the whole file runs in about a minute).

Each test checks what the command promises against something independent of its printout: the
files it wrote (loaded back), the task registry, the library's own listing, an HTTP answer.
`mmict app` is started in a subprocess on a free port, polled until it answers HTTP, then killed.
"""
from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from mmict_core.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _subcommands() -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return set(sub.choices)


SMOKED = {"eval", "demo", "tasks", "train", "compare", "vlibrary", "case-study", "starter-library",
          "pretrain-teaching", "preset", "app"}


def test_every_subcommand_has_a_smoke_test():
    assert _subcommands() == SMOKED, "a new `mmict` subcommand needs a smoke test here"


def test_tasks_lists_every_task(capsys):
    from mmict_core.data import task_names

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in task_names())


def test_eval_writes_its_json(tmp_path):
    out = tmp_path / "e.json"
    assert main(["eval", "--task", "binding", "--shots", "0,1", "--episodes", "2", "--quiet", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    assert [r["shots"] for r in rep["results"]] == [0, 1] and all(r["n"] == 2 for r in rep["results"])


def test_demo_prints_a_table_per_task(capsys):
    """`mmict demo` used to crash (the eval namespace it built lacked `split`)."""
    assert main(["demo", "--episodes", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    for task in ("shapes-vqa", "binding", "format", "operator"):
        assert f"\n{task}  (method icl" in out
    assert out.count("accuracy") >= 4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    rc = main(["train", "--method", "lora", "--task", "binding", "--out", str(out), "--steps", "2", "--samples", "4",
               "--batch-size", "2", "--set", "r=2"])
    assert rc == 0
    return out


def test_train_saves_a_loadable_adapter(trained):
    from mmict_core.backbones import load_backbone
    from mmict_core.methods import get_method

    log = json.loads((trained / "train_log.json").read_text())
    assert log["steps"] == 2 and len(log["losses"]) == 2
    m = get_method("lora").load(trained / "adapter", load_backbone("teaching"))
    assert m.config.r == 2


def test_vlibrary_add_list_show_search_remove(trained, tmp_path, capsys):
    root = str(tmp_path / "lib")
    assert main(["vlibrary", "add", "smoke-lora", "--from", str(trained / "adapter"), "--task", "binding",
                 "--description", "smoke test adapter", "--root", root]) == 0
    assert main(["vlibrary", "list", "--root", root]) == 0
    assert "smoke-lora" in capsys.readouterr().out
    assert main(["vlibrary", "show", "smoke-lora", "--root", root]) == 0
    assert json.loads(capsys.readouterr().out)["method"] == "lora"
    assert main(["vlibrary", "search", "smoke", "--root", root]) == 0
    assert "smoke-lora" in capsys.readouterr().out
    assert main(["vlibrary", "remove", "smoke-lora", "--root", root]) == 0
    from mmict_core.vlibrary import VLibrary

    assert VLibrary(root).list() == []


def test_compare_writes_rows_for_each_method(tmp_path):
    out = tmp_path / "c.json"
    assert main(["compare", "--task", "binding", "--methods", "icl:1,lora", "--episodes", "2", "--steps", "2",
                 "--samples", "4", "--batch-size", "2", "--cache", str(tmp_path / "cache"), "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert rows[0]["method"] == "icl:1" and rows[0]["shots"] == 1 and any(r["method"].startswith("lora") for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_starter_library_and_case_study(tmp_path, monkeypatch):
    """`starter-library --only` builds one entry (with a 2-step budget) that `case-study --library` then uses."""
    import mmict_core.casestudy as cs

    monkeypatch.setattr(cs, "STARTER_TRAIN", {k: dict(steps=2, lr=1e-3, batch_size=2, samples=4)
                                              for k in cs.STARTER_TRAIN})
    entry = next(e for e in cs.STARTER_ENTRIES if e.method == "vanilla-ft" and e.task == "ft-vqa")
    lib = tmp_path / "lib"
    assert main(["starter-library", "--out", str(lib), "--only", entry.name, "--episodes", "2"]) == 0
    from mmict_core.vlibrary import VLibrary

    entries = VLibrary(lib).list()
    assert [e["name"] for e in entries] == [entry.name] and entries[0]["metrics"]["steps"] == 2
    out = tmp_path / "case.json"
    assert main(["case-study", "--task", "vqa", "--methods", "vanilla-ft", "--episodes", "2", "--library", str(lib),
                 "--json", str(out), "--quiet"]) == 0
    case = json.loads(out.read_text())
    assert [a["method"] for a in case["accuracy"]] == ["vanilla-ft"] and case["accuracy"][0]["n"] == 2


def test_starter_library_on_another_teaching_folder_goes_beside_it(tmp_path, monkeypatch):
    """`starter-library --backbone FOLDER` trains on that checkpoint and, without --out, stores the library in
    FOLDER/library (never in the shipped one); an unknown --only name is refused with the list of entries."""
    import shutil

    import mmict_core.casestudy as cs
    from mmict_core.backbones import load_backbone
    from mmict_core.vlibrary import VLibrary

    with pytest.raises(SystemExit, match="unknown starter-library entries: nope.mmict; the entries are: ft-vqa"):
        main(["starter-library", "--only", "nope.mmict"])
    monkeypatch.setattr(cs, "STARTER_TRAIN", {k: dict(steps=2, lr=1e-3, batch_size=2, samples=4)
                                              for k in cs.STARTER_TRAIN})
    folder = tmp_path / "tvlm"
    folder.mkdir()
    for f in Path(cs.STARTER_DIR).parent.iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)
    shipped_before = sorted(p.name for p in Path(cs.STARTER_DIR).iterdir())
    assert main(["starter-library", "--backbone", str(folder), "--only", "ft-vqa.vanilla-ft", "--episodes", "2"]) == 0
    entries = VLibrary(folder / "library").list()
    assert [e["name"] for e in entries] == ["ft-vqa.vanilla-ft"]
    assert entries[0]["backbone"] == load_backbone(str(folder)).fingerprint()
    assert sorted(p.name for p in Path(cs.STARTER_DIR).iterdir()) == shipped_before


def test_pretrain_teaching_saves_a_loadable_vlm(tmp_path, monkeypatch):
    import mmict_core.teaching as teaching
    from mmict_core.backbones import TeachingVLM

    # the recipe's probes (900 scenes, 32 eval episodes) dominate a 1-step run; shrink them
    monkeypatch.setattr(teaching, "PretrainConfig", functools.partial(teaching.PretrainConfig, probe_scenes=30,
                                                                      eval_episodes=0))
    out = tmp_path / "tvlm"
    assert main(["pretrain-teaching", "--out", str(out), "--steps", "1", "--vision-steps", "1", "--hub-steps", "1",
                 "--batch", "2", "--threads", "1"]) == 0
    from mmict_core.data import make_episode

    vlm = TeachingVLM.load(out)
    outs = vlm.generate([make_episode("binding", 1, seed=0, index=0, split="test")], max_new_tokens=2)
    assert len(outs) == 1 and isinstance(outs[0], str)


def test_preset_list_show_and_tiny_dry_run(tmp_path, capsys):
    assert main(["preset", "list"]) == 0
    assert "hificl-idefics2-vqav2" in capsys.readouterr().out
    assert main(["preset", "show", "hificl-idefics2-vqav2"]) == 0
    assert "hificl" in capsys.readouterr().out
    assert main(["preset", "run", "hificl-idefics2-vqav2", "--tiny", "--dry-run", "--out", str(tmp_path), "--quiet"]) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_serves_http(tmp_path):
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "-m", "mmict_core.cli", "app", "--port", str(port), "--workdir",
                             str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline, body = time.time() + 60, None
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    body = r.read().decode("utf-8", "replace")
                    break
            except OSError:
                time.sleep(0.5)
        assert body is not None, f"the app did not answer: {proc.stdout.read().decode() if proc.poll() is not None else ''}"
        assert "MMICT Studio" in body
    finally:
        proc.kill()
        proc.wait(10)
