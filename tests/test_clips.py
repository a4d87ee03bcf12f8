"""ShapesWorld clips (mmict_core.data.clips) and the video tasks: determinism, captions and answers
checked against events re-derived from the pixels alone, the multi-frame dependence of the
answers, time reversal, chance levels."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmict_core.data import get_task, make_episode
from mmict_core.data import clips as cl
from mmict_core.data import shapes as sw

TOL = 30  # per-channel distance to a palette colour (render noise has sigma 6)


# ------------------------------------------------------------------------------------------------
# helpers: events read from the pixels (independent of the clip's spec)


def colour_mask(frame: np.ndarray, colour: str) -> np.ndarray:
    rgb = np.array(sw.COLOURS[colour], dtype=np.float64)
    return (np.abs(frame.astype(np.float64) - rgb) <= TOL).all(-1)


def blobs(frame: np.ndarray) -> dict[str, tuple[int, float, float]]:
    """colour -> (pixel count, centre x, centre y) of that colour's pixels (objects have distinct colours)."""
    out = {}
    for c in sw.COLOURS:
        m = colour_mask(frame, c)
        if m.sum() >= 4:
            ys, xs = np.nonzero(m)
            out[c] = (int(m.sum()), float(xs.mean()), float(ys.mean()))
    return out


def best_look(frame: np.ndarray, colour: str) -> tuple[str, str]:
    """(size, shape) whose drawn mask best overlaps this colour's pixels (IoU over a small search)."""
    m = colour_mask(frame, colour)
    ys, xs = np.nonzero(m)
    cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    yy, xx = np.mgrid[0:sw.IMAGE_SIZE, 0:sw.IMAGE_SIZE].astype(np.float32)
    best, arg = -1.0, None
    for shape in sw.SHAPES:
        for size in sw.SIZES:
            for oy in np.arange(-1.0, 1.01, 0.25):
                ref = sw._mask(sw.ShapeObject(shape, colour, size, "top left", cx, cy + oy), yy, xx)
                iou = (ref & m).sum() / max(1, (ref | m).sum())
                if iou > best:
                    best, arg = iou, (size, shape)
    return arg


def events_from_pixels(frames: list[np.ndarray]) -> set[tuple[str, str, str, str]]:
    """{(size, colour, shape, what it does)} for every object that does something, read from pixels:
    a colour whose centre travels > 8 px moves; one seen only late appears, only early disappears,
    a colour replaced in place by a new one turns; a pixel count that changes > 1.8x grows/shrinks."""
    per = [blobs(f) for f in frames]
    first_seen = {}
    for t, b in enumerate(per):
        for c in b:
            first_seen.setdefault(c, t)
    last_seen = {c: max(t for t, b in enumerate(per) if c in b) for c in first_seen}
    F = len(frames)
    gone = [c for c in first_seen if last_seen[c] < F - 1]
    new = [c for c in first_seen if first_seen[c] > 0]
    events = set()
    paired = set()
    for g in gone:  # turns: a colour replaced at the same place by a new one, the frame it vanishes
        for n in new:
            if first_seen[n] == last_seen[g] + 1:
                _, gx, gy = per[last_seen[g]][g]
                _, nx, ny = per[first_seen[n]][n]
                if abs(gx - nx) + abs(gy - ny) < 3:
                    size, shape = best_look(frames[0], g)
                    events.add((size, g, shape, f"turns {n}"))
                    paired.update({g, n})
    for c in first_seen:
        if c in paired:
            continue
        size, shape = best_look(frames[first_seen[c]], c)
        if c in gone:
            events.add((size, c, shape, "disappears"))
            continue
        if c in new:
            events.add((size, c, shape, "appears"))
            continue
        n0, x0, y0 = per[0][c]
        n1, x1, y1 = per[-1][c]
        if max(abs(x1 - x0), abs(y1 - y0)) > 8:
            d = ("right" if x1 > x0 else "left") if abs(x1 - x0) > abs(y1 - y0) else ("down" if y1 > y0 else "up")
            events.add((size, c, shape, f"moves {d}"))
        elif n1 > 1.8 * n0:
            events.add((size, c, shape, "grows"))
        elif n0 > 1.8 * n1:
            events.add((size, c, shape, "shrinks"))
    return events


def parse_caption(caption: str) -> set[tuple[str, str, str, str]]:
    out = set()
    for part in caption.split(" and "):
        w = part.split()
        assert w[0] == "the", caption
        out.add((w[1], w[2], w[3], " ".join(w[4:])))
    return out


# ------------------------------------------------------------------------------------------------
# generator


def test_sample_clip_is_deterministic_and_seed_dependent():
    a = cl.sample_clip(np.random.default_rng(5))
    b = cl.sample_clip(np.random.default_rng(5))
    c = cl.sample_clip(np.random.default_rng(6))
    assert a == b and a != c
    fa, fb = a.render(), b.render()
    assert len(fa) == a.n_frames and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    assert all(f.shape == (32, 32, 3) and f.dtype == np.uint8 for f in fa)


def test_clip_counts_and_distinct_colours():
    rng = np.random.default_rng(0)
    frames, objects, events = Counter(), Counter(), Counter()
    for _ in range(400):
        clip = cl.sample_clip(rng)
        frames[clip.n_frames] += 1
        objects[len(clip.objects)] += 1
        events[len(clip.actors())] += 1
        colours = [o.colour for o in clip.objects] + [o.event.colour for o in clip.objects if o.event and o.event.kind == "turns"]
        assert len(set(colours)) == len(colours)  # unambiguous names, a turn never takes another object's colour
        assert len({o.cell for o in clip.objects}) == len(clip.objects)
    assert set(frames) == set(range(cl.FRAMES[0], cl.FRAMES[1] + 1))
    assert set(objects) == {1, 2, 3} and set(events) == {1, 2}


def test_captions_match_the_events_read_from_the_pixels():
    rng = np.random.default_rng(1)
    kinds = Counter()
    for _ in range(150):
        clip = cl.sample_clip(rng)
        assert parse_caption(clip.describe()) == events_from_pixels(clip.render()), clip
        kinds.update(o.event.kind for o in clip.actors())
    assert set(kinds) == set(cl.EVENT_KINDS)


def test_caption_names_events_in_cell_order():
    rng = np.random.default_rng(2)
    for _ in range(100):
        clip = cl.sample_clip(rng, n_objects=3, n_events=2)
        cells = [o.cell for o in clip.actors()]
        assert cells == sorted(cells, key=sw.CELLS.index)
        assert clip.describe().count(" and ") == 1


def test_clip_qa_answers_follow_from_the_pixels():
    task = get_task("clip-qa")
    rng = np.random.default_rng(3)
    seen = Counter()
    for _ in range(240):
        ex = task.item(rng)
        ev = events_from_pixels(ex.images)
        q, a, qt = ex.prompt, ex.answer, ex.meta["qtype"]
        seen[qt] += 1
        if qt in ("what-moves", "what-appears", "what-disappears"):
            kind = {"what-moves": "moves", "what-appears": "appears", "what-disappears": "disappears"}[qt]
            hits = [e for e in ev if e[3].startswith(kind)]
            assert len(hits) == 1 and a == " ".join(hits[0][:3])
        elif qt == "which-way":
            colour, shape = q.split()[4:6]
            (hit,) = [e for e in ev if e[1] == colour and e[3].startswith("moves")]
            assert hit[2] == shape and a == hit[3].split()[1]
        elif qt == "what-happens":
            colour, shape = q.split()[4:6]
            hits = [e for e in ev if e[1] == colour]
            assert a == (hits[0][3] if hits else "nothing")
            if not hits:
                assert colour in blobs(ex.images[0]) or colour in blobs(ex.images[-1])
        else:
            assert a == str(len(blobs(ex.images[-1])))
    assert set(seen) == set(cl.QTYPES) and min(seen.values()) >= 20  # every question type, about equally often


def _mover(cell, direction, n_frames=6, dx=0.3, dy=-0.4):
    return cl.ClipSpec((cl.ClipObject("square", "red", "large", cell, dx, dy, cl.Event("moves", direction=direction)),
                        cl.ClipObject("circle", "blue", "small", "bottom left" if cell != "bottom left" else "top right")),
                       n_frames, noise_seed=9)


def test_direction_of_motion_needs_more_than_one_frame():
    """The first frame alone, or the last alone, cannot tell the direction: two clips the generator
    can draw share that frame pixel for pixel but move different ways; first and last together can."""
    right, down = _mover("top left", "right"), _mover("top left", "down")
    fr, fd = right.render(), down.render()
    assert np.array_equal(fr[0], fd[0])  # same first frame ...
    q = "which way does the red square move ?"
    ans = lambda clip: cl.clip_question(np.random.default_rng(0), clip, ("which-way",))  # noqa: E731
    assert ans(right)[:2] == (q, "right") and ans(down)[:2] == (q, "down")  # ... different answers
    # the same last frame: right from the top left vs up from the bottom right, both end top right
    end_dx, end_dy = 0.3, -0.4
    up = cl.ClipSpec((cl.ClipObject("square", "red", "large", "bottom right", end_dx, end_dy, cl.Event("moves", direction="up")),
                      cl.ClipObject("circle", "blue", "small", "bottom left")), 6, noise_seed=9)
    assert np.array_equal(right.render()[-1], up.render()[-1]) and ans(up)[1] == "up"
    # first and last frames together determine it (from the pixels)
    for clip, d in ((right, "right"), (down, "down"), (up, "up")):
        assert ("large", "red", "square", f"moves {d}") in events_from_pixels(clip.render())


def test_reversed_clip_plays_backwards_with_opposite_events():
    rng = np.random.default_rng(4)
    for _ in range(60):
        clip = cl.sample_clip(rng)
        rev = clip.reversed()
        F = clip.n_frames
        for t in range(F):
            a = sorted((o.colour, o.size, o.shape, round(o.cx, 4), round(o.cy, 4)) for o in clip.frame_scene(t).objects)
            b = sorted((o.colour, o.size, o.shape, round(o.cx, 4), round(o.cy, 4)) for o in rev.frame_scene(F - 1 - t).objects)
            assert a == b
        for o, r in zip(clip.objects, rev.objects):
            if o.event and o.event.kind in cl.OPPOSITE:
                assert r.event.kind == cl.OPPOSITE[o.event.kind]
            if o.event and o.event.kind == "moves":
                assert r.event.direction == cl.OPPOSITE[o.event.direction]


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="4 to 8 frames"):
        cl.ClipSpec((cl.ClipObject("circle", "red", "small", "top left"),), 3)
    with pytest.raises(ValueError, match="1 to 3 objects"):
        cl.ClipSpec((), 5)
    with pytest.raises(ValueError, match="unknown question type"):
        cl.clip_question_fits(cl.sample_clip(np.random.default_rng(0)), "why")
    with pytest.raises(ValueError, match="naming"):
        cl.ClipObject("circle", "red", "small", "top left").name("spanish")


# ------------------------------------------------------------------------------------------------
# the video tasks


@pytest.mark.parametrize("task", ["clip-qa", "clip-caption", "ft-video-qa", "ft-video-caption"])
def test_video_items_hold_their_frames(task):
    ep = make_episode(task, 2, seed=0, index=1, pool_size=4)
    for ex in list(ep.demos) + [ep.query]:
        assert cl.FRAMES[0] <= len(ex.images) <= cl.FRAMES[1]


def test_video_chance_levels_are_the_majority_answer():
    for name in ("clip-qa", "clip-caption"):
        task = get_task(name)
        rng = np.random.default_rng(0)
        counts = Counter(task.item(rng).answer for _ in range(2000))
        assert task.chance == pytest.approx(max(counts.values()) / 2000)
    assert get_task("clip-qa").chance < 0.2 and get_task("clip-caption").chance < 0.02
