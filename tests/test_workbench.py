"""The workbench (what the app and the widgets call): pools, demo picking, token cost, the
same-episode comparison, training with cancel, the session's library."""
import numpy as np
import pytest
import torch

from mmict_core.data import Episode, make_episode
from mmict_core.evaluate.exact_match import exact_match
from mmict_core.workbench import (method_label, training_free_methods, Session, TrainRequest, WorkbenchError, compare_one, demo_token_cost, lm_tokens,
                                  make_method, task_pool, train_adapter, user_example)
from tests.test_data import _huge_png, _png_bytes


@pytest.fixture(scope="module")
def session(vlm, tmp_path_factory):
    return Session(vlm, library_root=tmp_path_factory.mktemp("lib"), task="binding", pool_size=12)


def test_task_pool_is_deterministic_and_labelled():
    a_pool, a_q = task_pool("binding", 10, seed=3)
    b_pool, b_q = task_pool("binding", 10, seed=3)
    c_pool, _ = task_pool("binding", 10, seed=4)
    assert len(a_pool) == 10 and all(ex.answer for ex in a_pool)
    assert [ex.answer for ex in a_pool] == [ex.answer for ex in b_pool] and a_q.answer == b_q.answer
    assert all(np.array_equal(x.images[0], y.images[0]) for x, y in zip(a_pool, b_pool))
    assert not all(np.array_equal(x.images[0], y.images[0]) for x, y in zip(a_pool, c_pool))
    with pytest.raises(WorkbenchError, match="pool size"):
        task_pool("binding", 0)


def test_user_example_refuses_bad_input(tmp_path):
    good = tmp_path / "ok.png"
    good.write_bytes(_png_bytes(np.full((10, 12, 3), 200, np.uint8)))
    ex = user_example(str(good), "  what colour ? ", "red")
    assert ex.images[0].shape == (10, 12, 3) and ex.prompt == "what colour ?" and ex.answers == ["red"]
    assert user_example(str(good), "q").answers == []  # unknown answer
    text = tmp_path / "notes.png"
    text.write_text("not an image at all")
    huge = tmp_path / "huge.png"
    huge.write_bytes(_huge_png(20000, 20000))
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(_png_bytes(np.zeros((8, 8, 3), np.uint8))[:40])
    for path, msg in ((text, "unusable image"), (huge, "too large"), (corrupt, "unusable image")):
        with pytest.raises(WorkbenchError, match=msg):
            user_example(str(path), "q")
    with pytest.raises(WorkbenchError, match="question is empty"):
        user_example(str(good), "   ")
    with pytest.raises(WorkbenchError, match="no image"):
        user_example(None, "q")


def test_pick_reorder_and_clear(session):
    session.clear()
    for i in (5, 2, 7):
        session.toggle(i)
    assert session.selected == [5, 2, 7]
    session.toggle(2)  # clicking again removes
    assert session.selected == [5, 7]
    session.toggle(0)
    session.move(2, -2)  # the third demo (item 0) to the front
    assert session.selected == [0, 5, 7]
    session.move(0, +5)  # clamped at the end
    assert session.selected == [5, 7, 0]
    assert [d.answer for d in session.demos] == [session.pool[i].answer for i in (5, 7, 0)]
    with pytest.raises(WorkbenchError, match="no gallery item"):
        session.toggle(999)
    session.clear()
    assert session.selected == [] and session.episode().k == 0


def test_auto_fill_balanced_covers_the_labels(session):
    session.auto_fill("balanced", 4, seed=1)
    labels = [session.items[i].label for i in session.selected]
    assert len(set(session.selected)) == 4 and len(set(labels)) == 2  # 2-way binding: both colours, twice
    with pytest.raises(WorkbenchError, match="strategy"):
        session.auto_fill("psychic", 2)
    with pytest.raises(WorkbenchError, match="k must be"):
        session.auto_fill("random", 99)


def test_demo_token_cost_matches_the_layout(session, vlm):
    session.clear()
    for i in (1, 3):
        session.toggle(i)
    n_img = vlm.encode_images([session.query.images[0]], ["."]).shape[1]
    expect = sum(len(vlm.encode_text(d.prompt)) + n_img + len(vlm.answer_marker_ids) + len(vlm.encode_text(d.answer)) + 1
                 for d in session.demos)  # prompt, image tokens, <answer>, answer, EOS per demo
    assert session.demo_tokens() == expect


def test_compare_one_matches_direct_generation(vlm):
    ep = make_episode("binding", 4, seed=0, index=3, split="val")
    rows = compare_one(vlm, ep, {"ICL": make_method(vlm, "icl")})
    direct = vlm.generate([ep], max_new_tokens=6)[0]
    assert rows[0].output == direct and rows[0].shots == 4
    assert rows[0].correct == bool(exact_match(direct, ep.query.answers))
    assert rows[0].lm_tokens == vlm.assemble_episodes([ep], with_answer=False).inputs_embeds.shape[1]
    unknown = Episode(demos=ep.demos, query=user_example(ep.query.images[0], ep.query.prompt), task="binding")
    assert compare_one(vlm, unknown, {"ICL": make_method(vlm, "icl")})[0].correct is None


def test_compare_one_reports_methods_that_cannot_run(vlm):
    ep0 = make_episode("binding", 0, seed=0, index=0, split="val")
    ict = make_method(vlm, "vanilla-ict")
    rows = compare_one(vlm, ep0, {"ICL": make_method(vlm, "icl"), "VanillaICT": ict})
    assert rows[0].error == "" and "pick at least one" in rows[1].error
    many = make_episode("binding", 100, seed=0, index=0, split="val", pool_size=100)  # ~1500 tokens > 1024
    rows = compare_one(vlm, many, {"ICL": make_method(vlm, "icl"), "hificl": make_method(vlm, "hificl")})
    assert "context holds" in rows[0].error
    assert rows[1].error == "" and rows[1].shots == 0  # adapters read the query alone: still fine


def test_make_method_sets_the_rank_field(vlm):
    assert make_method(vlm, "hificl", rank=3).config.rank == 3
    assert make_method(vlm, "lora", rank=5).config.r == 5
    assert make_method(vlm, "mimic", rank=5).config == make_method(vlm, "mimic").config  # no rank: ignored
    with pytest.raises(WorkbenchError, match="unknown method"):
        make_method(vlm, "nope")


def test_train_request_validation():
    for bad, msg in ((dict(samples=0), "samples"), (dict(steps=0), "steps"), (dict(method="icl"), "not a trainable"),
                     (dict(lr=5.0), "learning rate"), (dict(task="nope"), "unknown task"), (dict(rank=0), "rank")):
        with pytest.raises(WorkbenchError, match=msg):
            TrainRequest(**bad).validate()


def test_train_adapter_cancel_keeps_the_steps_done(vlm):
    seen = []
    out = train_adapter(vlm, TrainRequest(method="hificl", steps=20, samples=16, batch_size=2),
                        callback=lambda s, t, loss: seen.append((s, t)) or (s < 3))
    assert out.cancelled and out.result.steps == 3 and seen == [(1, 20), (2, 20), (3, 20)]
    assert any(p.abs().sum() > 0 for n, p in out.method.named_parameters() if "V_B" in n or "v_b" in n.lower())


def test_session_train_stores_a_loadable_adapter(session, vlm):
    session.clear()
    session.auto_fill("random", 2)
    out = session.train(TrainRequest(method="hificl", steps=3, samples=8, batch_size=2))
    name = list(session.adapters)[-1]
    assert name == "hificl-binding-3s" and not out.cancelled
    entry = {e["name"]: e for e in session.library.list()}[name]
    assert entry["method"] == "hificl" and entry["metrics"]["final_loss"] == pytest.approx(out.result.losses[-1])
    loaded = session.library.load(name, vlm)
    ep = session.episode()
    with torch.no_grad(), out.method.attached():
        a = vlm.forward(out.method.batch([ep], with_answer=False))
    with torch.no_grad(), loaded.attached():
        b = vlm.forward(loaded.batch([ep], with_answer=False))
    assert torch.equal(a, b)
    rows = session.compare()
    free = [method_label(n) for n in training_free_methods()]  # ICL and the other training-free methods
    assert free[0] == "ICL" and [r.method for r in rows] == [*free, name]
    assert rows[-1].lm_tokens == lm_tokens(vlm, out.method, ep)
    att = session.attention(name)
    assert att.virtual_mass.shape[0] == len(vlm.decoder_layers())
    # a second run of the same request gets a fresh name, the first is kept
    session.train(TrainRequest(method="lora", steps=1, samples=4, batch_size=2))
    assert "lora-binding-1s" in session.adapters and name in session.adapters
    with pytest.raises(WorkbenchError, match="needs an adapter that captures its attention"):
        session.attention("lora-binding-1s")


def test_demo_token_cost_is_zero_without_demos(vlm):
    _, q = task_pool("binding", 4)
    assert demo_token_cost(vlm, [], q) == 0
