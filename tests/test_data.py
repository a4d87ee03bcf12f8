"""Tests of the task world (mmict_core.data): determinism, answers checked against an independent
re-derivation from the scene description / the digit images, selection strategies, chance levels
and refusal of bad input."""
from __future__ import annotations

import io
import math
import re
import struct
import time
import zlib
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from mmict_core.data import (
    STRATEGIES,
    Example,
    ImageError,
    get_task,
    load_image,
    make_episode,
    select_demos,
    task_names,
)
from mmict_core.data import digits as dg
from mmict_core.data import shapes as sw
from mmict_core.data import tasks as tk
from mmict_core.data.tasks import Binding, Format, Operator

ALL_TASKS = ["shapes-vqa", "shapes-caption", "digits", "binding", "operator", "format", "clip-qa", "clip-caption",
             "ft-vqa", "ft-caption", "ft-video-qa", "ft-video-caption"]
CELL_NAMES = ["top left", "top right", "bottom left", "bottom right"]
# cell -> (row slice, col slice) of its 16x16 block in the 32x32 image
CELL_BLOCKS = {
    "top left": (slice(0, 16), slice(0, 16)),
    "top right": (slice(0, 16), slice(16, 32)),
    "bottom left": (slice(16, 32), slice(0, 16)),
    "bottom right": (slice(16, 32), slice(16, 32)),
}
BACKGROUND = np.array([28, 28, 32], dtype=np.float64)


# ------------------------------------------------------------------------------------------------
# helpers (independent of the product code)


def whole_pool(task, *, seed=0, index=0, split="test", pool_size=None):
    """The complete episode pool (every item, in pool order) and the episode, via 'fixed' selection."""
    t = get_task(task)
    n = t.default_pool_size if pool_size is None else pool_size
    ep = make_episode(t, n, seed=seed, index=index, split=split, pool_size=n,
                      selection="fixed", fixed_indices=list(range(n)))
    return ep.demos, ep


def all_examples(ep):
    return list(ep.demos) + [ep.query]


def examples_equal(a: Example, b: Example) -> bool:
    return (len(a.images) == len(b.images)
            and all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
            and a.prompt == b.prompt and a.answers == b.answers and a.meta == b.meta)


def episodes_equal(e1, e2) -> bool:
    return (e1.k == e2.k and all(examples_equal(a, b) for a, b in zip(e1.demos, e2.demos))
            and examples_equal(e1.query, e2.query) and e1.info == e2.info)


def parse_scene(caption: str) -> list[dict]:
    """Parse '<size> <colour> <shape> <cell> and ...' into a list of objects."""
    objs = []
    for part in caption.split(" and "):
        words = part.split()
        assert len(words) == 5, part
        size, colour, shape = words[:3]
        cell = " ".join(words[3:])
        assert size in ("small", "large") and colour in sw.COLOURS and shape in sw.SHAPES, part
        assert cell in CELL_NAMES, part
        objs.append({"size": size, "colour": colour, "shape": shape, "cell": cell})
    return objs


def answer_from_description(prompt: str, objs: list[dict]) -> tuple[str, str]:
    """Re-derive (question type, answer) of a ShapesWorld question from the parsed scene."""
    by_cell = {o["cell"]: o for o in objs}
    cell_re = "(top left|top right|bottom left|bottom right)"
    if m := re.fullmatch(rf"what colour is the shape in the {cell_re} \?", prompt):
        return "colour", by_cell[m.group(1)]["colour"]
    if m := re.fullmatch(rf"what shape is in the {cell_re} \?", prompt):
        return "shape", by_cell[m.group(1)]["shape"]
    if m := re.fullmatch(rf"what size is the shape in the {cell_re} \?", prompt):
        return "size", by_cell[m.group(1)]["size"]
    if prompt == "how many shapes are there ?":
        return "count", str(len(objs))
    if m := re.fullmatch(r"where is the (\w+) (\w+) \?", prompt):
        hits = [o for o in objs if o["colour"] == m.group(1) and o["shape"] == m.group(2)]
        assert len(hits) == 1, f"ambiguous or missing referent for {prompt!r} in {objs}"
        return "position", hits[0]["cell"]
    raise AssertionError(f"unrecognised question {prompt!r}")


def near_colour(block: np.ndarray, rgb, tol=30) -> np.ndarray:
    return (np.abs(block.astype(np.int64) - np.array(rgb)) <= tol).all(axis=-1)


def check_pixels_match_description(image: np.ndarray, objs: list[dict]) -> None:
    """Each described cell holds pixels of the described colour and differs from the background on
    average; every other cell is plain background (plus light noise)."""
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    described = {o["cell"]: o for o in objs}
    for cell, (rs, cs) in CELL_BLOCKS.items():
        block = image[rs, cs]
        mean = block.reshape(-1, 3).mean(axis=0)
        if cell in described:
            rgb = sw.COLOURS[described[cell]["colour"]]
            assert near_colour(block, rgb).sum() >= 5, (cell, described[cell])
            assert np.abs(mean - BACKGROUND).sum() > 8, (cell, mean)
        else:
            assert np.abs(mean - BACKGROUND).max() < 2.5, (cell, mean)
            for rgb in sw.COLOURS.values():
                assert near_colour(block, rgb).sum() == 0, cell


@pytest.fixture(scope="module")
def sk_digits():
    """scikit-learn's digits, scaled to uint8 with the documented formula (value / 16 * 255)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0 * 255.0).astype(np.uint8), d.target


def digits_in_image(image: np.ndarray, sk) -> tuple[list[int], list[int]]:
    """Recover, for the left and right half of a digit-pair image, the sklearn indices whose 8x8
    image it shows (2x upscaled at rows 8:24)."""
    images, _ = sk
    found = []
    for slot in range(2):
        small = image[8:24:2, slot * 16:(slot + 1) * 16:2, 0]
        hits = np.flatnonzero((images == small[None]).all(axis=(1, 2)))
        found.append([int(h) for h in hits])
    return found[0], found[1]


# ------------------------------------------------------------------------------------------------
# registry, determinism, independence from k


def test_task_registry_lists_all_tasks():
    assert sorted(task_names()) == sorted(ALL_TASKS)


@pytest.mark.parametrize("task", ALL_TASKS)
def test_make_episode_is_deterministic(task):
    kw = dict(seed=3, index=5, split="test", pool_size=6)
    e1 = make_episode(task, 3, **kw)
    e2 = make_episode(task, 3, **kw)
    assert e1.k == 3 and e2.k == 3
    assert episodes_equal(e1, e2)

    def flat(ep):
        return np.concatenate([im.ravel() for ex in all_examples(ep) for im in ex.images])

    other_seed = make_episode(task, 3, **dict(kw, seed=4))
    other_index = make_episode(task, 3, **dict(kw, index=6))
    other_split = make_episode(task, 3, **dict(kw, split="train"))
    for other in (other_seed, other_index, other_split):
        assert not episodes_equal(e1, other)
        assert not np.array_equal(flat(e1), flat(other))
        assert not np.array_equal(e1.query.images[0], other.query.images[0])


@pytest.mark.parametrize("task", ALL_TASKS)
def test_pool_and_query_do_not_depend_on_k(task):
    pool, full = whole_pool(task, seed=1, index=2, pool_size=8)
    eps = {k: make_episode(task, k, seed=1, index=2, pool_size=8) for k in (0, 1, 2, 4, 8)}
    for k, ep in eps.items():
        assert ep.k == k
        assert examples_equal(ep.query, full.query)
        # every demo is the pool item its index names
        assert len(ep.info["pool_indices"]) == k == len(set(ep.info["pool_indices"]))
        for i, demo in zip(ep.info["pool_indices"], ep.demos):
            assert examples_equal(demo, pool[i])
        hidden = {key: v for key, v in ep.info.items() if key not in ("selection", "pool_indices")}
        assert hidden == {key: v for key, v in full.info.items() if key not in ("selection", "pool_indices")}
    # random selection is nested: the demos for k=2 are a prefix of those for k=4 (and of k=8)
    assert eps[4].info["pool_indices"][:2] == eps[2].info["pool_indices"]
    assert eps[8].info["pool_indices"][:4] == eps[4].info["pool_indices"]
    for a, b in zip(eps[2].demos, eps[4].demos[:2]):
        assert examples_equal(a, b)


# ------------------------------------------------------------------------------------------------
# ShapesWorld: answers and pixels against the scene description


def test_shapes_vqa_answers_follow_from_the_description():
    seen_types = Counter()
    n = 0
    for index in range(30):
        ep = make_episode("shapes-vqa", 8, seed=0, index=index, pool_size=8)
        for ex in all_examples(ep):
            objs = parse_scene(ex.meta["scene"])
            assert 1 <= len(objs) <= 4
            assert len({o["cell"] for o in objs}) == len(objs)  # one object per cell
            qtype, expected = answer_from_description(ex.prompt, objs)
            assert ex.answer == expected, (ex.prompt, ex.meta["scene"])
            assert ex.meta["qtype"] == qtype
            check_pixels_match_description(ex.images[0], objs)
            seen_types[qtype] += 1
            n += 1
    assert n == 270
    assert set(seen_types) == {"colour", "shape", "size", "count", "position"}


def test_shapes_caption_describes_the_pixels_in_cell_order():
    for index in range(20):
        for ex in all_examples(make_episode("shapes-caption", 4, seed=2, index=index, pool_size=4)):
            objs = parse_scene(ex.answer)
            cells = [o["cell"] for o in objs]
            assert cells == sorted(cells, key=CELL_NAMES.index) and len(set(cells)) == len(cells)
            assert ex.meta["n_objects"] == len(objs)
            check_pixels_match_description(ex.images[0], objs)


def test_rendered_object_centre_has_its_colour():
    checked = 0
    for seed in range(150):
        n_objects = 1 if seed < 100 else None
        scene = sw.sample_scene(np.random.default_rng(seed), n_objects=n_objects)
        img = scene.render()
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8
        for obj in scene.objects:
            y, x = int(round(obj.cy)), int(round(obj.cx))
            # the object lies inside its own cell
            rs, cs = CELL_BLOCKS[obj.cell]
            assert rs.start <= y < rs.stop and cs.start <= x < cs.stop
            pixel = img[y, x].astype(np.int64)
            assert np.all(np.abs(pixel - np.array(sw.COLOURS[obj.colour])) <= 30), (obj, pixel)
            checked += 1
        # the same generator seed draws the same scene and the same pixels
        again = sw.sample_scene(np.random.default_rng(seed), n_objects=n_objects)
        assert again == scene and np.array_equal(again.render(), img)
    assert checked > 150


def test_colour_table_matches_colour_names():
    """The RGB of each colour name has that colour's hue (channel order), and differs from the
    background enough to be seen."""
    c = {name: tuple(rgb) for name, rgb in sw.COLOURS.items()}
    assert set(c) == {"red", "green", "blue", "yellow", "purple", "orange"}
    r, g, b = c["red"]; assert r > 150 and r > 3 * max(g, b)  # noqa: E702
    r, g, b = c["green"]; assert g > 150 and g > 2 * max(r, b)  # noqa: E702
    r, g, b = c["blue"]; assert b > 150 and b > 2 * max(r, g)  # noqa: E702
    r, g, b = c["yellow"]; assert min(r, g) > 150 and b < 100  # noqa: E702
    r, g, b = c["purple"]; assert min(r, b) > 2 * g  # noqa: E702
    r, g, b = c["orange"]; assert r > g > b and r > 200 and 80 < g < 200  # noqa: E702
    for rgb in c.values():
        assert np.abs(np.array(rgb) - BACKGROUND).max() > 100
    names = list(c)
    for i, a in enumerate(names):  # any two colours are far apart (the ±30 pixel test separates them)
        for bname in names[i + 1:]:
            assert np.abs(np.array(c[a]) - np.array(c[bname])).max() > 60, (a, bname)


def test_sample_scene_fixed_attributes_and_bad_count():
    for seed in range(20):
        s = sw.sample_scene(np.random.default_rng(seed), n_objects=3, shape="cross", colour="blue", size="small")
        assert len(s.objects) == 3
        first = s.objects[0]
        assert (first.shape, first.colour, first.size) == ("cross", "blue", "small")
    for bad in (0, 5):
        with pytest.raises(ValueError, match="1 to 4 objects"):
            sw.sample_scene(np.random.default_rng(0), n_objects=bad)


# ------------------------------------------------------------------------------------------------
# binding


def test_binding_answers_are_the_episode_binding():
    bindings = set()
    for index in range(30):
        pool, ep = whole_pool("binding", seed=0, index=index, pool_size=8)
        binding = ep.info["binding"]
        assert len(binding) == 2
        assert set(binding) <= set(get_task("binding").categories) == set(sw.COLOURS)
        assert len(set(binding.values())) == len(binding)  # categories get different words
        assert set(binding.values()) <= set(tk.NONSENSE_WORDS)
        # every category of the binding is shown in the pool, so the demos can teach it
        assert {ex.label for ex in pool} == set(binding)
        for ex in pool + [ep.query]:
            objs = parse_scene(ex.meta["scene"])
            assert len(objs) == 1 and objs[0]["colour"] == ex.label  # the label is the pictured colour
            assert ex.answer == binding[ex.label]
            check_pixels_match_description(ex.images[0], objs)
        bindings.add(tuple(sorted(binding.items())))
    assert len(bindings) > 5  # fresh bindings per episode, not a constant map


def test_fixed_binding_is_one_map_for_every_episode():
    task = get_task("binding", fixed_binding=True)
    merged: dict[str, str] = {}
    for index in range(30):
        ep = make_episode(task, 4, seed=index % 3, index=index, pool_size=8)
        for shape, word in ep.info["binding"].items():
            assert merged.setdefault(shape, word) == word, "fixed binding changed between episodes"
        for ex in all_examples(ep):
            assert ex.answer == ep.info["binding"][ex.label]
    assert len(set(merged.values())) == len(merged)

    four = get_task("binding", fixed_binding=True, n_way=4)
    maps = [make_episode(four, 2, seed=s, index=i, pool_size=8).info["binding"] for s in range(3) for i in range(4)]
    assert all(set(m) <= set(sw.COLOURS) and len(m) == 4 for m in maps)
    assert all(m[c] == merged[c] for m in maps for c in m if c in merged)  # one word per colour, always
    shapes = get_task("binding", fixed_binding=True, n_way=4, category="shape")
    smaps = [make_episode(shapes, 2, seed=s, index=i, pool_size=8).info["binding"] for s in range(3) for i in range(4)]
    assert all(m == smaps[0] for m in smaps) and set(smaps[0]) == set(sw.SHAPES)

    free = get_task("binding", n_way=4)
    free_maps = {tuple(sorted(make_episode(free, 2, index=i, pool_size=8).info["binding"].items())) for i in range(12)}
    assert len(free_maps) > 1


def test_binding_n_way_and_chance():
    assert Binding(n_way=2).chance == 0.5
    assert Binding(n_way=4).chance == 0.25
    with pytest.raises(ValueError, match="n_way must be between 2 and 6"):
        Binding(n_way=1)
    with pytest.raises(ValueError, match="n_way must be between 2 and 4"):
        Binding(n_way=5, category="shape")
    with pytest.raises(ValueError, match="category must be"):
        Binding(category="size")


# ------------------------------------------------------------------------------------------------
# digits and operator


def test_digit_split_is_disjoint_and_complete(sk_digits):
    _, targets = sk_digits
    train = dg.digit_indices("train")
    test = dg.digit_indices("test")
    tr = np.concatenate(list(train.values()))
    te = np.concatenate(list(test.values()))
    assert len(np.intersect1d(tr, te)) == 0
    assert sorted(np.concatenate([tr, te]).tolist()) == list(range(1797))
    assert len(te) == int(1797 * 0.3)
    for groups in (train, test):
        assert set(groups) == set(range(10))
        for v, idx in groups.items():
            assert len(idx) > 0 and np.all(targets[idx] == v)
    # 'val' episodes use the held-out images (module docstring), never the training images
    val = np.concatenate(list(dg.digit_indices("val").values()))
    assert len(np.intersect1d(val, tr)) == 0
    with pytest.raises(ValueError, match="split must be"):
        dg.digit_indices("dev")


def test_render_pair_places_upscaled_digits(sk_digits):
    images, _ = sk_digits
    img = dg.render_pair(10, 25)
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 0], img[..., 2])
    for slot, idx in enumerate((10, 25)):
        up = np.repeat(np.repeat(images[idx], 2, axis=0), 2, axis=1)
        assert np.array_equal(img[8:24, slot * 16:(slot + 1) * 16, 0], up)
    assert not img[:8].any() and not img[24:].any()


@pytest.mark.parametrize("split", ["test", "train"])
def test_operator_answer_is_the_operator_applied_to_the_pictured_digits(sk_digits, split):
    _, targets = sk_digits
    split_set = set(np.concatenate(list(dg.digit_indices(split).values())).tolist())
    reference = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b, "times": lambda a, b: a * b}
    ops = set()
    for index in range(12):
        pool, ep = whole_pool("operator", seed=0, index=index, split=split, pool_size=6)
        op = ep.info["operator"]
        ops.add(op)
        for ex in pool + [ep.query]:
            a, b = ex.meta["digits"]
            assert ex.answer == str(reference[op](a, b))
            left, right = digits_in_image(ex.images[0], sk_digits)
            assert left and right, "the image does not show sklearn digit images"
            assert {int(targets[i]) for i in left} == {a}
            assert {int(targets[i]) for i in right} == {b}
            # the pictured images come from this split's images
            assert any(i in split_set for i in left) and any(i in split_set for i in right)
    for index in range(12, 60):
        ops.add(make_episode("operator", 0, seed=0, index=index, split=split, pool_size=1).info["operator"])
    assert ops == set(reference)  # every operator occurs


def test_digits_task_reads_the_pictured_digits(sk_digits):
    _, targets = sk_digits
    for index in range(8):
        for ex in all_examples(make_episode("digits", 4, seed=1, index=index, pool_size=4)):
            left, right = digits_in_image(ex.images[0], sk_digits)
            a = {int(targets[i]) for i in left}
            b = {int(targets[i]) for i in right}
            assert len(a) == 1 and len(b) == 1
            assert ex.answer == f"{a.pop()} {b.pop()}"


def test_operator_chance_is_the_majority_answer():
    counts = Counter()
    for a in range(10):
        for b in range(10):
            counts[a + b] += 1
            counts[a - b] += 1
            counts[a * b] += 1
    assert sum(counts.values()) == 300
    assert Operator().chance == pytest.approx(max(counts.values()) / 300)


# ------------------------------------------------------------------------------------------------
# format

SPANISH_REF = {
    "red": "rojo", "green": "verde", "blue": "azul", "yellow": "amarillo", "purple": "morado",
    "orange": "naranja", "circle": "circulo", "square": "cuadrado", "triangle": "triangulo",
    "cross": "cruz", "small": "pequeno", "large": "grande", "1": "uno", "2": "dos", "3": "tres", "4": "cuatro",
}
STYLE_REF = {
    "prefix": lambda a: "answer : " + a,
    "sentence": lambda a: "it is " + a,
    "spanish": lambda a: SPANISH_REF[a],
    "repeat": lambda a: a + " " + a,
    "yes": lambda a: "yes " + a,
}


def test_format_answers_follow_the_episode_style():
    styles = Counter()
    for index in range(40):
        pool, ep = whole_pool("format", seed=0, index=index, pool_size=6)
        style = ep.info["style"]
        styles[style] += 1
        for ex in pool + [ep.query]:
            plain = ex.meta["plain"]
            valid = {"colour": set(sw.COLOURS), "shape": set(sw.SHAPES), "size": {"small", "large"},
                     "count": {"1", "2", "3", "4"}}[ex.meta["qtype"]]
            assert plain in valid
            assert ex.answer == tk.FORMAT_STYLES[style](plain)
            assert ex.answer == STYLE_REF[style](plain)
            # the style is identifiable from the answer: no other style renders it the same
            assert all(STYLE_REF[s](plain) != ex.answer for s in STYLE_REF if s != style)
    assert set(styles) == set(STYLE_REF)
    assert Format().chance == pytest.approx(1 / 5) and len(tk.FORMAT_STYLES) == 5


# ------------------------------------------------------------------------------------------------
# selection


def _pool(labels, seed=0):
    rng = np.random.default_rng(seed)
    return [Example(images=[rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)], prompt="p", answers=[lab],
                    meta={"label": lab, "id": i}) for i, lab in enumerate(labels)]


def test_similarity_selection_with_custom_embedding():
    rng = np.random.default_rng(0)
    pool = _pool(["x"] * 12)
    query = _pool(["q"], seed=99)[0]
    vectors = rng.normal(size=(13, 5))
    key = {ex.images[0].tobytes(): i for i, ex in enumerate(pool + [query])}

    def embed(images):
        return np.stack([vectors[key[im.tobytes()]] for im in images])

    def cosine(u, v):
        return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))

    sims = [cosine(vectors[i], vectors[12]) for i in range(12)]
    ranked = sorted(range(12), key=lambda i: -sims[i])
    for k in (1, 3, 5, 12):
        idx = select_demos("similarity", pool, query, k, np.random.default_rng(1), embed_fn=embed)
        assert len(idx) == k
        assert set(idx) == set(ranked[:k])
        assert idx[-1] == ranked[0]  # the most similar is placed last, next to the query
        assert [sims[i] for i in idx] == sorted(sims[i] for i in idx)  # ascending similarity
    assert select_demos("similarity", pool, query, 0, np.random.default_rng(1), embed_fn=embed) == []


def test_similarity_selection_through_make_episode():
    calls = []

    def embed(images):
        calls.append(len(images))
        return np.stack([im.astype(np.float64).reshape(-1) for im in images])

    ep = make_episode("shapes-vqa", 3, seed=0, index=1, pool_size=10, selection="similarity", embed_fn=embed)
    pool, _ = whole_pool("shapes-vqa", seed=0, index=1, pool_size=10)
    q = ep.query.images[0].astype(np.float64).reshape(-1)
    sims = [float(p.images[0].astype(np.float64).reshape(-1) @ q
                  / (np.linalg.norm(p.images[0].astype(np.float64)) * np.linalg.norm(q))) for p in pool]
    assert calls == [11]
    assert ep.info["pool_indices"][-1] == int(np.argmax(sims))
    assert set(ep.info["pool_indices"]) == set(np.argsort(sims)[-3:].tolist())


def test_balanced_selection_covers_every_label_before_repeating():
    labels = ["a"] * 6 + ["b"] * 6 + ["c"] * 2 + ["d"] * 5
    pool = _pool(labels)
    available = Counter(labels)
    for seed in range(5):
        for k in range(0, len(pool) + 1):
            idx = select_demos("balanced", pool, pool[0], k, np.random.default_rng(seed))
            assert len(idx) == k == len(set(idx))
            counts = Counter(pool[i].label for i in idx)
            if k <= len(available):
                assert max(counts.values(), default=0) <= 1  # all distinct
            for la in available:
                for lb in available:
                    # a label is only behind another by 2+ when it has run out of items
                    if counts[la] + 1 < counts[lb]:
                        assert counts[la] == available[la]
    ep = make_episode("binding", 2, seed=0, index=3, pool_size=8, selection="balanced")
    assert {d.label for d in ep.demos} == set(ep.info["binding"])


def test_fixed_selection():
    pool = _pool(list("abcdef"))
    rng = np.random.default_rng(0)
    assert select_demos("fixed", pool, pool[0], 3, rng, fixed_indices=[4, 0, 2]) == [4, 0, 2]
    ep = make_episode("shapes-vqa", 2, pool_size=6, selection="fixed", fixed_indices=[5, 1])
    pool6, _ = whole_pool("shapes-vqa", pool_size=6)
    assert examples_equal(ep.demos[0], pool6[5]) and examples_equal(ep.demos[1], pool6[1])
    with pytest.raises(ValueError, match=r"\[6\] are outside the pool of 6"):
        select_demos("fixed", pool, pool[0], 2, rng, fixed_indices=[1, 6])
    with pytest.raises(ValueError, match=r"\[-1\] are outside the pool"):
        select_demos("fixed", pool, pool[0], 2, rng, fixed_indices=[-1, 2])
    with pytest.raises(ValueError, match="appears twice"):
        select_demos("fixed", pool, pool[0], 2, rng, fixed_indices=[3, 3])
    with pytest.raises(ValueError, match="needs the demonstration indices"):
        select_demos("fixed", pool, pool[0], 2, rng)


def test_unknown_selection_strategy_names_the_known_ones():
    pool = _pool(list("abc"))
    with pytest.raises(ValueError, match="unknown selection strategy 'nearest'") as info:
        select_demos("nearest", pool, pool[0], 1, np.random.default_rng(0))
    for name in ("random", "similarity", "balanced", "fixed"):
        assert name in str(info.value)
    assert set(STRATEGIES) == {"random", "similarity", "balanced", "fixed"}


# ------------------------------------------------------------------------------------------------
# bad input


def test_unknown_task_lists_known_tasks():
    with pytest.raises(ValueError, match="unknown task 'shapes'") as info:
        make_episode("shapes", 1)
    for name in ALL_TASKS:
        assert name in str(info.value)


def test_bad_k_and_split():
    with pytest.raises(ValueError, match="asked for 10 demonstrations but .* holds only 4"):
        make_episode("shapes-vqa", k=10, pool_size=4)
    with pytest.raises(ValueError, match=r"whole number >= 0, got -1"):
        make_episode("binding", k=-1)
    with pytest.raises(ValueError, match=r"whole number >= 0"):
        make_episode("binding", k=1.5)
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        make_episode("binding", k=1, split="dev")


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _huge_png(width: int, height: int) -> bytes:
    """A valid-header 1-bit greyscale PNG of the given size whose data is tiny (never allocated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(4)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_load_image_accepts_good_input(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(9, 7, 3), dtype=np.uint8)
    path = tmp_path / "ok.png"
    path.write_bytes(_png_bytes(rgb))
    for source in (path, str(path), path.read_bytes(), Image.fromarray(rgb), rgb):
        out = load_image(source)
        assert out.dtype == np.uint8 and np.array_equal(out, rgb)
    grey = rng.integers(0, 256, size=(5, 6), dtype=np.uint8)
    assert np.array_equal(load_image(grey), np.stack([grey] * 3, axis=-1))
    floats = np.full((2, 2, 3), 0.5)
    assert np.all(load_image(floats) == 127)


def test_load_image_refuses_bad_input(tmp_path):
    assert issubclass(ImageError, ValueError)
    text = tmp_path / "notes.png"
    text.write_text("this is not an image\n")
    with pytest.raises(ImageError, match="is not a readable image"):
        load_image(text)
    with pytest.raises(ImageError, match="is not a readable image"):
        load_image(b"plain bytes, no image")

    good = _png_bytes(np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(cut)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(good[: len(good) // 2])

    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="0x0 px: it has no pixels|5x0 px: it has no pixels"):
        load_image(np.zeros((0, 5, 3), dtype=np.uint8))
    with pytest.raises(ImageError, match="NaN or infinite"):
        load_image(np.full((2, 2, 3), np.nan))
    with pytest.raises(ImageError, match=r"must be \(H, W\)"):
        load_image(np.zeros((2, 2, 2, 3)))


@pytest.mark.parametrize("width,height", [(20000, 20000), (5000, 8)])
def test_load_image_refuses_huge_images_without_decoding(tmp_path, width, height):
    data = _huge_png(width, height)
    assert len(data) < 10_000
    assert data[12:16] == b"IHDR" and struct.unpack(">II", data[16:24]) == (width, height)
    assert zlib.decompress(data[41:-16]).startswith(b"\x00")  # the IDAT inflates (a valid, short stream)
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    for source in (path, data):
        t0 = time.perf_counter()
        with pytest.raises(ImageError, match="the limit is 4096 px a side") as info:
            load_image(source)
        assert time.perf_counter() - t0 < 2.0
        assert "Downscale" in str(info.value)
    with pytest.raises(ImageError, match="limit is 4096 px"):
        load_image(np.zeros((1, 4097, 3), dtype=np.uint8))
