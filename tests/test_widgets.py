"""The notebook panels, driven headless: setting ``.value`` and calling ``.click()`` must fire the
workbench calls, and what the widgets show must equal an independent computation."""
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

from mmict_core.data import Episode, get_task
from mmict_core.data.selection import select_demos
from mmict_core.evaluate.exact_match import exact_match
from mmict_core.widgets import AttentionExplorer, ComparisonPanel, DemoPicker, Studio, TrainingPanel, backbone_lock
from mmict_core.workbench import (Session, TrainRequest, make_method, method_label, task_pool, train_adapter,
                                  training_free_methods)


@pytest.fixture()
def session(vlm, tmp_path):
    return Session(vlm, library_root=tmp_path / "lib", task="binding", pool_size=10, seed=0)


@pytest.fixture(scope="module")
def hificl_session(vlm, tmp_path_factory):
    """A session with a (briefly) trained HiFICL adapter and a few picked demos."""
    s = Session(vlm, library_root=tmp_path_factory.mktemp("lib"), task="binding", pool_size=10, seed=1)
    s.train(TrainRequest(method="hificl", steps=3, samples=8, batch_size=2))
    for i in (4, 1, 6):
        s.toggle(i)
    return s


def _decode_png(data) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(bytes(data))).convert("RGB"))


def _lm_len(vlm, demos, query) -> int:
    return int(vlm.assemble_episodes([Episode(demos=list(demos), query=query)], with_answer=False).inputs_embeds.shape[1])


# ---------------------------------------------------------------- picker


def test_picker_toggles_select_in_click_order(session, vlm):
    p = DemoPicker(session)
    assert len(p.thumbs) == len(p.toggles) == len(session.items) == 10
    for i in (7, 2, 5):
        p.toggles[i].value = True
    assert session.selected == [7, 2, 5]
    p.toggles[2].value = False  # pressing again deselects
    assert session.selected == [7, 5]
    assert [p.toggles[i].description.split()[0] for i in (7, 5)] == ["#1", "#2"]
    assert not p.toggles[2].value and p.toggles[2].description == session.items[2].answer
    # the summary's token count equals the assembled LM input with and without the demos
    demos = [session.items[i] for i in (7, 5)]
    extra = _lm_len(vlm, demos, session.query) - _lm_len(vlm, [], session.query)
    assert f"add {extra} LM tokens" in p.summary.value
    p.clear_button.click()
    assert session.selected == [] and not any(t.value for t in p.toggles)


def test_picker_thumbnails_are_the_pool_images(session):
    p = DemoPicker(session, thumb_px=64)
    for img, ex in zip(p.thumbs, session.items):
        arr = _decode_png(img.value)
        src = ex.images[0]
        f = arr.shape[0] // src.shape[0]
        assert f >= 2 and arr.shape[:2] == (src.shape[0] * f, src.shape[1] * f)
        assert np.array_equal(arr[::f, ::f], src)  # nearest upscale: every f-th pixel is the original
    q = _decode_png(p.query_image.value)
    assert np.array_equal(q[:: q.shape[0] // 32, :: q.shape[1] // 32], session.query.images[0])


@pytest.mark.parametrize("strategy", ["random", "balanced", "similarity"])
def test_picker_fill_equals_the_selection_strategy(session, vlm, strategy):
    p = DemoPicker(session)
    p.strategy.value, p.k.value, p.seed.value = strategy, 4, 3
    p.fill.click()
    expect = select_demos(strategy, session.items, session.query, 4, np.random.default_rng(3),
                          embed_fn=vlm.retrieval_embedding if strategy == "similarity" else None)
    assert session.selected == expect
    assert [i for i, t in enumerate(p.toggles) if t.value] == sorted(expect)
    assert all(p.toggles[i].description.startswith(f"#{n + 1} ") for n, i in enumerate(expect))


def test_picker_new_pool_and_query(session):
    p = DemoPicker(session)
    p.toggles[0].value = True
    p.task.value, p.pool_size.value, p.seed.value = "operator", 6, 2
    p.new_pool.click()
    pool, query = task_pool("operator", 6, seed=2)
    assert session.task == "operator" and [e.answer for e in session.pool] == [e.answer for e in pool]
    assert session.query.answer == query.answer and session.selected == []
    assert len(p.toggles) == 6 and p.k.max == 6 and not any(t.value for t in p.toggles)
    p.query_index.value = 3
    p.use_as_query.click()
    assert session.query.prompt == pool[3].prompt and session.query.answer == pool[3].answer
    assert pool[3].prompt in p.query_text.value
    p.set_query_from(99)  # out of range: reported, not raised
    assert "no gallery item 99" in p.error


def test_picker_status_follows_manual_clicks(session):
    p = DemoPicker(session)
    p.strategy.value, p.k.value = "balanced", 3
    p.fill.click()
    assert "balanced selection of 3" in p.status.value
    free = next(i for i in range(len(session.items)) if i not in session.selected)
    p.toggles[free].value = True  # a manual click after the fill: the status says what it did
    assert "balanced" not in p.status.value
    assert f"added item {free}" in p.status.value and "#4" in p.status.value and "4 demonstration(s)" in p.status.value
    first = session.selected[0]
    p.toggles[first].value = False
    assert f"removed item {first}" in p.status.value and "3 demonstration(s)" in p.status.value


def test_use_as_query_takes_the_item_out_of_the_demos(session):
    p = DemoPicker(session)
    p.toggles[3].value = True
    p.query_index.value = 3
    p.use_as_query.click()
    assert session.query_item == 3 and 3 not in session.selected
    assert p.toggles[3].disabled and p.toggles[3].description == "query" and not p.toggles[3].value
    p.toggles[3].value = True  # a click on it (if the browser let one through) is refused and undone
    assert 3 not in session.selected and not p.toggles[3].value and "is the query" in p.error
    with pytest.raises(ValueError, match="is the query"):
        session.toggle(3)
    # Fill: never the query's item, even when k asks for every other item
    assert p.k.max == len(session.items) - 1
    for strategy in ("random", "balanced", "similarity"):
        p.strategy.value, p.k.value = strategy, len(session.items) - 1
        p.fill.click()
        assert sorted(session.selected) == [i for i in range(len(session.items)) if i != 3], strategy
    p.k.value = 2
    p.fill.click()
    assert len(session.selected) == 2 and 3 not in session.selected and session.demo_warnings() == []
    session.set_query(prompt=session.query.prompt)  # the user's own query: item 3 is selectable again
    assert session.query_item is None
    p._sync()
    assert not p.toggles[3].disabled
    session.toggle(3)
    assert 3 in session.selected


# ---------------------------------------------------------------- training


def test_training_panel_curve_equals_the_losses(session, vlm):
    t = TrainingPanel(session, threaded=False, min_plot_interval=0)
    t.method.value, t.steps.value, t.samples.value, t.batch_size.value, t.lr.value = "hificl", 4, 8, 2, 1e-2
    live = []  # the curve as it stood after each step: updated in place while training
    t.on_step.append(lambda step, total, loss: live.append((step, t.progress.value, list(t.figure.data[0].y))))
    t.train_button.click()
    out = t.outcome
    assert [(s, p, len(y)) for s, p, y in live] == [(s, s, s) for s in (1, 2, 3, 4)]
    assert live[1][2] == out.result.losses[:2]
    assert out is not None and not out.cancelled and out.result.steps == 4
    assert list(t.figure.data[0].y) == out.result.losses == t.losses
    assert list(t.figure.data[0].x) == [1, 2, 3, 4]
    ema = [out.result.losses[0]]
    for v in out.result.losses[1:]:
        ema.append(0.9 * ema[-1] + 0.1 * v)
    assert np.allclose(t.figure.data[1].y, ema)
    assert t.progress.value == t.progress.max == 4
    assert t.adapter_name in session.adapters and session.adapters[t.adapter_name] is out.method
    assert t.adapter_name in [e["name"] for e in session.library.list()]
    assert "finished" in t.status.value and not t.train_button.disabled and t.cancel_button.disabled
    # the panel trained exactly what the library call trains for the same request
    again = train_adapter(vlm, t.request())
    assert again.result.losses == pytest.approx(out.result.losses, rel=1e-5)


def test_training_panel_rank_goes_to_the_method(session):
    t = TrainingPanel(session, threaded=False)
    t.method.value = "mimic"
    assert t.rank.disabled  # MimIC has no rank field
    t.method.value, t.rank.value, t.steps.value, t.samples.value, t.batch_size.value = "hificl", 3, 1, 2, 2
    assert not t.rank.disabled and t.request().rank == 3
    t.train_button.click()
    assert t.outcome.method.config.rank == 3


def test_training_panel_cancel_in_the_callback_stops_at_that_step(session):
    t = TrainingPanel(session, threaded=False)
    t.steps.value, t.samples.value, t.batch_size.value = 50, 8, 2
    t.on_step.append(lambda step, total, loss: step == 2 and t.cancel_button.click())
    t.train_button.click()
    assert t.outcome.cancelled and t.outcome.result.steps == 2 and len(t.losses) == 2
    assert list(t.figure.data[0].y) == t.outcome.result.losses
    assert "cancelled after 2 steps" in t.status.value


def test_training_runs_in_a_thread_and_cancel_stops_it(session):
    studio = Studio(session, threaded=True)
    t = studio.training
    t.steps.value, t.samples.value, t.batch_size.value = 2000, 8, 2
    t.train_button.click()
    assert t.running and t.thread is not None and t.thread.is_alive()  # the click returned at once
    assert t.train_button.disabled and not t.cancel_button.disabled
    deadline = time.monotonic() + 60
    while t.progress.value < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert t.progress.value >= 2
    # the backbone is taken: a comparison is refused instead of running beside the training
    studio.comparison.run_button.click()
    assert "busy" in studio.comparison.status.value and studio.comparison.rows == []
    t.train_button.click()
    assert "already going" in t.status.value
    t.cancel_button.click()
    out = t.wait(timeout=60)
    assert not t.thread.is_alive() and not t.running
    assert out.cancelled and 2 <= out.result.steps < 2000
    assert list(t.figure.data[0].y) == out.result.losses
    assert not backbone_lock(session.backbone).locked()
    # the finished run refreshed the other panels
    assert t.adapter_name in studio.comparison.methods.options
    assert studio.attention.adapter.value == t.adapter_name


# ---------------------------------------------------------------- comparison


def test_comparison_outputs_equal_direct_generation(hificl_session, vlm):
    s = hificl_session
    c = ComparisonPanel(s)
    name = next(iter(s.adapters))
    free = [method_label(n) for n in training_free_methods()]  # ICL first, then e.g. task vectors
    assert free[0] == "ICL" and list(c.methods.options) == [*free, name] and list(c.methods.value) == [*free, name]
    c.methods.value = ["ICL", name]
    c.run_button.click()
    rows = {r.method: r for r in c.rows}
    ep = Episode(demos=[s.items[i] for i in s.selected], query=s.query, task=s.task)
    n = get_task(s.task).max_new_tokens
    direct_icl = vlm.generate([ep], max_new_tokens=n)[0]
    direct_adapter = s.adapters[name].generate([ep], max_new_tokens=n)[0]
    assert rows["ICL"].output == direct_icl and rows[name].output == direct_adapter
    assert rows["ICL"].shots == 3 and rows[name].shots == 0
    assert rows["ICL"].correct == bool(exact_match(direct_icl, s.query.answers))
    assert rows["ICL"].lm_tokens == _lm_len(vlm, ep.demos, ep.query)
    assert rows[name].lm_tokens == _lm_len(vlm, [], ep.query)  # HiFICL reads the query alone
    import html
    for r in c.rows:
        assert html.escape(r.output) in c.table.value and html.escape(r.output) in c.case_study_document
    assert "<iframe srcdoc=" in c.case_study.value
    c.methods.value = ["ICL"]
    c.max_new_tokens.value = 1
    c.run_button.click()
    assert [r.method for r in c.rows] == ["ICL"] and c.rows[0].output == vlm.generate([ep], max_new_tokens=1)[0]


def test_comparison_reports_what_cannot_run(session, tmp_path):
    session.adapters["ict"] = make_method(session.backbone, "vanilla-ict")  # reads demos; none are picked
    c = ComparisonPanel(session)
    c.methods.value = []
    c.run_button.click()
    assert "at least one method" in c.error
    c.methods.value = ["ICL", "ict"]
    c.run_button.click()
    assert "not run: ict" in c.status.value and "pick at least one" in c.table.value
    png, page = c.save(tmp_path / "case")
    assert png.is_file() and page.read_text() == c.case_study_document


# ---------------------------------------------------------------- attention


def test_attention_explorer_shows_the_captured_split(hificl_session, vlm):
    s = hificl_session
    s.adapters["live"] = make_method(vlm, "live")  # captures no attention: never offered
    a = AttentionExplorer(s)
    name = next(iter(s.adapters))
    assert list(a.adapter.options) == [name]
    a.show_button.click()
    m = s.adapters[name]
    # independent: run the episode with the adapter's own capture and read alpha directly
    ep = s.episode()
    batch = m.batch([ep], with_answer=True, padding_side="right")
    with torch.no_grad(), m.attached(), m.capture() as cap:
        vlm.forward(batch)
    L, H = len(cap), cap[0][0].shape[1]
    alpha = torch.stack([cap[l][0][0] for l in range(L)]).numpy()  # (L, H, T)
    w = torch.stack([cap[l][1][0] for l in range(L)]).numpy()  # (L, H, T, n)
    assert np.allclose(alpha + w.sum(-1), 1.0, atol=1e-5)
    vm = 1.0 - alpha
    query_item = max(item for _, item, _, _ in batch.spans[0])  # HiFICL reads the query alone: item 0
    q = [p for role, item, st, e in batch.spans[0] if item == query_item for p in range(st, e)]
    assert a.query_positions() == sorted(q)
    assert np.allclose(a.grid.data[0].z, vm[:, :, sorted(q)].mean(-1), atol=1e-6)
    assert a.layer.max == L - 1 and a.head.max == H - 1
    # the sliders re-draw from the captured arrays, without running the model
    calls = m.kv_computations
    a.layer.value, a.head.value = 2, 1
    assert m.kv_computations == calls
    z = np.asarray(a.per_token.data[0].z)
    assert z.shape[0] == H and a.per_token.layout.yaxis.title.text == "head"
    values, labels = a.head_values()
    roles = [r for r in a.attention.roles]
    text_pos = [p for p in range(len(roles)) if roles[p] != "image"]
    text_cols = [j for j, lab in enumerate(labels) if "[image:" not in lab]
    assert np.allclose(values[text_cols], vm[2, 1, text_pos], atol=1e-6)
    for j, lab in enumerate(labels):
        if "[image:" in lab:  # an image band: its mean
            lo, hi = (int(x) for x in lab.split()[0].split("-"))
            assert values[j] == pytest.approx(vm[2, 1, lo:hi + 1].mean(), abs=1e-6)
    assert np.allclose(z[1], [values[j] for j in range(len(values))], atol=1e-6)
    a.layer.value = -1  # every layer: rows are layers, values the mean over heads
    assert np.allclose(np.asarray(a.per_token.data[0].z)[:, text_cols], vm.mean(1)[:, text_pos], atol=1e-6)
    a.positions.value = "all"
    assert np.allclose(a.grid.data[0].z, vm.mean(-1), atol=1e-6)
    assert np.allclose(a.slots.data[0].z, w.mean(axis=(1, 2)), atol=1e-6)


def test_attention_explorer_without_an_adapter(session):
    a = AttentionExplorer(session)
    a.show_button.click()
    assert "no adapter with virtual key/value slots" in a.error and a.attention is None


# ---------------------------------------------------------------- default training can succeed


@pytest.fixture(scope="module")
def shipped():
    from mmict_core.workbench import load_backbone_timed

    return load_backbone_timed()[0]  # the shipped teaching VLM (assets/teaching-vlm)


def _held_out_accuracy(backbone, method, task, fixed_binding, episodes=50, seed=0):
    """Plain re-computation: one episode at a time, exact match against the references."""
    from mmict_core.data import make_episode

    t = get_task(task, **({"fixed_binding": True} if fixed_binding else {}))
    k = method.config.shots if method.uses_demos else 0
    hits = []
    for i in range(episodes):
        ep = make_episode(t, k, seed=seed, index=i, split="test", pool_size=max(t.default_pool_size, k))
        with torch.no_grad():
            out = method.generate([ep], max_new_tokens=t.max_new_tokens)[0]
        hits.append(exact_match(out, ep.query.answers))
    return float(np.mean(hits))


def test_studio_default_training_learns_and_says_so(shipped):
    """The Studio's training defaults (HiFICL, 300 steps, fixed binding) reach a high held-out
    accuracy on the shipped model, and the status reports it against chance."""
    s = Session(shipped, task="binding", pool_size=8, seed=0)
    studio = Studio(s, threaded=False)
    t = studio.training
    assert (t.method.value, t.task.value, t.steps.value, t.fixed_binding.value) == ("hificl", "binding", 300, True)
    t.train_button.click()
    h = t.outcome.heldout
    assert h is not None and h["n"] == 50 and h["accuracy"] >= 0.9 and h["ci95"][0] > h["chance"]
    assert h["accuracy"] == pytest.approx(_held_out_accuracy(shipped, t.outcome.method, "binding", True), abs=1e-9)
    assert "finished: 300 steps" in t.status.value and f"Held-out accuracy: {h['accuracy']:.3f}" in t.status.value
    assert "— above chance." in t.status.value and t.progress.bar_style == "success"


def test_training_that_learns_nothing_says_so(shipped):
    """HiFICL on per-episode bindings (the words change every episode) cannot learn them."""
    s = Session(shipped, task="binding", pool_size=8, seed=0)
    t = TrainingPanel(s, threaded=False, steps=60)
    t.fixed_binding.value = False
    t.train_button.click()
    h = t.outcome.heldout
    assert h["ci95"][1] <= h["chance"]
    assert h["accuracy"] == pytest.approx(_held_out_accuracy(shipped, t.outcome.method, "binding", False), abs=1e-9)
    assert "finished: 60 steps" in t.status.value and "has not learned the task" in t.status.value
    assert t.progress.bar_style == "warning" and t.error  # shown as an error line


def _widget_tree(w):
    import ipywidgets as W

    yield w
    for c in getattr(w, "children", ()) or ():
        if isinstance(c, W.Widget):
            yield from _widget_tree(c)


def test_studio_widgets_are_light_core_models(hificl_session):
    """No anywidget in the panels (plotly's FigureWidget syncs its 5 MB plotly.js bundle per instance,
    which made a saved notebook 25-51 MB); every figure is an Output holding plotly JSON + HTML."""
    import json

    import anywidget

    studio = Studio(hificl_session, threaded=False)
    studio.attention.show()
    tree = list(_widget_tree(studio.widget))
    assert not [w for w in tree if isinstance(w, anywidget.AnyWidget)]
    outputs = [w for w in tree if w._model_name == "OutputModel"]
    assert len(outputs) == 6  # the loss curve and the attention explorer's five views
    figs = [studio.training.figure, studio.attention.grid, studio.attention.slots, studio.attention.per_token,
            studio.attention.head_view, studio.attention.token_map]
    for fv in figs:
        (out,) = fv.widget.outputs
        spec = out["data"]["application/vnd.plotly.v1+json"]
        assert spec["data"] == json.loads(fv.figure.to_json())["data"]  # the figure on screen, as JSON
        assert "Plotly.newPlot" in out["data"]["text/html"]
    size = sum(len(json.dumps(w.get_state(), default=str)) for w in tree)
    assert size < 1_000_000, f"the Studio's widget state weighs {size:,} bytes"
