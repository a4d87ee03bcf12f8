"""Training jobs owned by the workbench (TrainJob): events, cancel while queued and while running,
the model lock, sessions that end mid-run; and two users of the running app, one of whom closes the
tab mid-training while the other trains VanillaICT and MMICT."""
from __future__ import annotations

import os
import socket
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

from mmict_core.backbones import TeachingVLM  # noqa: E402
from mmict_core.workbench import Session, TrainRequest, train_adapter  # noqa: E402
from mmict_core.workbench_jobs import CANCELLED, FINISHED, model_lock  # noqa: E402


@pytest.fixture(scope="module")
def vlm():
    return TeachingVLM.create(seed=0)


def _req(steps=3, method="lora"):
    return TrainRequest(method=method, task="binding", samples=4, steps=steps, batch_size=2, rank=2 if method == "lora" else None)


def test_job_events_result_and_adapter_name(vlm, tmp_path):
    s = Session(vlm, library_root=tmp_path / "lib", pool_size=4)
    job = s.start_training(_req(3))
    events = list(job.events())
    out = job.wait(60)
    assert [e.step for e in events] == [1, 2, 3] and all(e.total == 3 for e in events)
    assert [e.loss for e in events] == out.result.losses  # the job reports what the trainer computed
    assert events[-1].eta_seconds == 0.0 and all(e.eta_seconds >= 0 for e in events)
    assert job.state == FINISHED and job.adapter_name == "lora-binding-3s"
    assert s.adapters[job.adapter_name] is out.method and [e["name"] for e in s.library.list()] == ["lora-binding-3s"]
    # the same request trained by the plain library call gives the same losses
    assert train_adapter(vlm, _req(3)).result.losses == pytest.approx(out.result.losses, rel=1e-5)


def test_cancel_while_queued_never_starts(vlm, tmp_path):
    s = Session(vlm, library_root=tmp_path / "lib", pool_size=4)
    lock = model_lock(vlm)
    lock.acquire()  # another job holds the model
    try:
        job = s.start_training(_req(3))
        time.sleep(0.3)
        assert job.state == "queued" and not job.done
        assert job.cancel() == "cancelled: the queued training will not start"
    finally:
        lock.release()
    assert job.wait(10) is None and job.state == CANCELLED and job.losses == []
    assert s.adapters == {} and s.library.list() == []


def test_cancel_while_running_stops_after_the_current_step(vlm, tmp_path):
    s = Session(vlm, library_root=tmp_path / "lib", pool_size=4)
    # deterministic: cancelled from the step hook of step 2, it stops right there
    job = s.new_job(_req(2000), on_step=lambda step, total, loss: step == 2 and s.job.cancel())
    out = job.start(threaded=False).wait()
    assert out.cancelled and out.result.steps == 2 and job.state == CANCELLED
    assert job.adapter_name in s.adapters  # a cancelled run keeps what it learned
    # from another thread: at most one more step after the cancel is seen
    job = s.start_training(_req(2000))
    for ev in job.events():
        if ev.step >= 2:
            assert "cancelling" in job.cancel()
            seen = len(job.losses)
            break
    out = job.wait(60)
    assert out.cancelled and seen <= out.result.steps <= seen + 1 and job.state == CANCELLED
    assert not model_lock(vlm).locked()


def test_a_closed_session_stops_its_job_and_gets_nothing_written(vlm, tmp_path):
    s = Session(vlm, library_root=tmp_path / "lib", pool_size=4)
    job = s.start_training(_req(2000))
    next(iter(job.events()))  # running
    s.close()
    with pytest.raises(ValueError, match="closed while training; nothing was saved"):
        job.wait(60)
    assert job.losses and len(job.losses) < 2000
    assert s.adapters == {} and not (tmp_path / "lib").exists() or VLibraryEmpty(tmp_path / "lib")
    assert not model_lock(vlm).locked()
    with pytest.raises(ValueError, match="closed"):
        s.start_training(_req(2))


def VLibraryEmpty(root) -> bool:
    from mmict_core.vlibrary import VLibrary

    return VLibrary(root).list() == []


def test_one_job_per_session(vlm, tmp_path):
    s = Session(vlm, pool_size=4)
    job = s.start_training(_req(2000))
    try:
        with pytest.raises(ValueError, match="already going"):
            s.start_training(_req(2))
    finally:
        job.cancel()
        job.wait(60)


# ---------------------------------------------------------------------------------------------
# two users of the running app


def _free_port() -> int:
    with socket.socket() as sck:
        sck.bind(("127.0.0.1", 0))
        return sck.getsockname()[1]


class Req:
    def __init__(self, h):
        self.session_hash = h


def test_one_user_closes_the_tab_mid_training_the_other_trains_vanilla_ict_and_mmict(tmp_path):
    from gradio_client import Client

    from app.main import launch

    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path / "gradio")
    demo, url, studio = launch(block=False, port=_free_port(), workdir=tmp_path / "work")
    c1, c2 = Client(url, verbose=False), Client(url, verbose=False)
    try:
        j1 = c1.submit("lora", "binding", 8, 3000, 5e-3, 2, 0, api_name="/train")
        deadline = time.time() + 60
        while time.time() < deadline:  # wait until user 1's job is training
            s1 = studio.sessions.get(c1.session_hash)
            if s1 is not None and s1.job is not None and s1.job.losses:
                break
            time.sleep(0.1)
        s1 = studio.sessions[c1.session_hash]
        job1 = s1.job
        folder1 = tmp_path / "work" / "sessions" / "".join(ch for ch in c1.session_hash if ch.isalnum())[:64]
        assert job1.state == "running"
        j2a = c2.submit("vanilla-ict", "binding", 8, 3, 1e-3, None, 0, api_name="/train")
        studio.drop_session(Req(c1.session_hash))  # what demo.unload does when the tab closes
        r2a = j2a.result(timeout=120)
        r2b = c2.predict("mmict", "binding", 8, 3, 1e-3, None, 0, api_name="/train")
        assert "finished: 3 steps" in r2a[0] and "vanilla-ict-binding-3s" in r2a[0]
        assert "finished: 3 steps" in r2b[0] and "mmict-binding-3s" in r2b[0]
        assert job1.done and job1.state == "failed" and len(job1.losses) < 3000  # stopped, not run to the end
        deadline = time.time() + 30
        while folder1.exists() and time.time() < deadline:
            time.sleep(0.1)
        assert not folder1.exists(), "the dropped session's folder must go"
        assert c1.session_hash not in studio.sessions
        assert not any(t.name == "mmict-train" and t.is_alive() for t in threading.enumerate())
        with pytest.raises(Exception):
            j1.result(timeout=30)
    finally:
        c1.close()
        c2.close()
        demo.close()


def test_app_cancel_pressed_while_the_train_request_waits_in_the_queue(tmp_path):
    """The Train button first marks the run as requested (unqueued), then /train waits in the queue:
    a Cancel in between is remembered and the run never starts."""
    from app.handlers import Studio

    studio = Studio(workdir=tmp_path, pool_size=4)
    r = Req("queued-user")
    assert studio.cancel(r) == "nothing is training"
    assert studio.request_training(r)[0].startswith("queued")
    assert studio.cancel(r) == "cancelled: the queued training will not start"
    outs = list(studio.train("lora", "binding", 8, 3, 5e-3, 2, 0, request=r, progress=lambda *a, **k: None))
    assert outs[-1][0] == "cancelled before it started"
    assert studio.session(r).adapters == {} and studio.session(r).job is None
    # the next Train runs normally
    studio.request_training(r)
    outs = list(studio.train("lora", "binding", 8, 3, 5e-3, 2, 0, request=r, progress=lambda *a, **k: None))
    assert "finished: 3 steps" in outs[-1][0]
