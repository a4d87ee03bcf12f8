"""VLibrary: add/list/show/search/load/compose with the numbers checked, refusals, atomic writes,
safe names, and the `mmict vlibrary` CLI."""
from __future__ import annotations

import json
import math
import os
from collections import Counter

import pytest
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.cli import main
from mmict_core.data import Episode, make_episode
from mmict_core.methods import AdapterLoadError, get_method
from mmict_core.methods.m2iv import M2IV, M2IVConfig
from mmict_core.vlibrary import LibraryError, VLibrary, default_root, example_key


@pytest.fixture(scope="module")
def bb():
    vlm = TeachingVLM.create(seed=0)
    vlm.model.requires_grad_(False)
    return vlm


def adapter(bb, seed, **cfg):
    m = M2IV(bb, M2IVConfig(seed=seed, **cfg))
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def examples(task, n=3, index=0):
    return make_episode(task, n, seed=0, index=index, split="train", pool_size=n).demos


def state(m):
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


@pytest.fixture
def lib(tmp_path, bb):
    lib = VLibrary(tmp_path / "lib")
    lib.add("binding-v1", adapter(bb, 1), task="binding", description="nonsense words bound to shapes",
            shots=0, samples=1000, metrics={"accuracy": 0.75}, key_examples=examples("binding"))
    lib.add("format-es", adapter(bb, 2), task="format", description="answers in spanish format",
            metrics={"accuracy": 0.5}, key_examples=examples("digits"))
    return lib


def test_add_list_show(lib, bb):
    assert [e["name"] for e in lib.list()] == ["binding-v1", "format-es"]
    e = lib.show("binding-v1")
    assert e["task"] == "binding" and e["method"] == "m2iv" and e["samples"] == 1000 and e["shots"] == 0
    assert e["metrics"] == {"accuracy": 0.75} and e["description"] == "nonsense words bound to shapes"
    assert e["backbone"] == bb.fingerprint() and e["has_key"] is True
    assert e["num_parameters"] == 2 * 4 * 128 + 2 * 4
    assert e["shapes"] == {"mha_strength": [4], "mha_vectors": [4, 128], "mlp_strength": [4], "mlp_vectors": [4, 128]}
    with pytest.raises(LibraryError, match="already has an entry"):
        lib.add("binding-v1", adapter(bb, 3), task="binding")
    with pytest.raises(LibraryError, match="no entry 'nope'"):
        lib.show("nope")


def test_load_and_inject_are_bit_exact(lib, bb):
    original = adapter(bb, 1)
    loaded = lib.load("binding-v1", bb)
    assert isinstance(loaded, M2IV) and loaded.config == original.config
    assert all(torch.equal(a, b) for a, b in zip(state(loaded).values(), state(original).values()))
    eps = [Episode([], ex) for ex in examples("binding", 2)]
    batch = bb.assemble_episodes(eps, with_answer=True)
    with torch.no_grad():
        base = bb.forward(batch)
        with original.attached():
            want = bb.forward(batch)
        with lib.inject("binding-v1", bb) as m:
            got = bb.forward(batch)
        after = bb.forward(batch)
    assert isinstance(m, M2IV) and torch.equal(got, want) and not torch.equal(got, base)
    assert torch.equal(after, base)  # detached again


def test_load_refuses_another_backbone(lib):
    with pytest.raises(AdapterLoadError, match="another backbone"):
        lib.load("binding-v1", TeachingVLM.create(seed=1))


def plain_tfidf(query, docs):
    """Independent TF-IDF cosine: smoothed idf = ln((1+N)/(1+df)) + 1."""
    tok = lambda s: [w for w in "".join(c if c.isalnum() else " " for c in s.lower()).split()]
    D = [Counter(tok(d)) for d in docs]
    q = Counter(tok(query))
    vocab = sorted(set(q) | {w for d in D for w in d})
    idf = {w: math.log((1 + len(D)) / (1 + sum(w in d for d in D))) + 1 for w in vocab}
    qv = [q[w] * idf[w] for w in vocab]
    out = []
    for d in D:
        dv = [d[w] * idf[w] for w in vocab]
        out.append(sum(a * b for a, b in zip(qv, dv)) / (math.hypot(*qv) * math.hypot(*dv)))
    return out


def test_search_text_ranks_by_tfidf(lib):
    hits = lib.search_text("spanish format")
    assert hits[0][0] == "format-es"
    docs = [" ".join([e["name"], e["description"], e["task"], e["method"]]) for e in lib.list()]
    want = plain_tfidf("spanish format", docs)
    got = dict(hits)
    for e, w in zip(lib.list(), want):
        assert got.get(e["name"], 0.0) == pytest.approx(w, abs=1e-9)
    assert lib.search_text("zebra") == []


def test_search_by_example_uses_pooled_image_tokens(lib, bb):
    ex_b, ex_d = examples("binding"), examples("digits")
    imgs, prompts = [x.images[0] for x in ex_b], [x.prompt for x in ex_b]
    hits = dict(lib.search_by_example(bb, imgs, prompts))
    assert hits["binding-v1"] == pytest.approx(1.0, abs=1e-5)  # the same examples as its key
    q = bb.encode_images(imgs, prompts).float().mean((0, 1))
    k = bb.encode_images([x.images[0] for x in ex_d], [x.prompt for x in ex_d]).float().mean((0, 1))
    assert hits["format-es"] == pytest.approx(float(q @ k / (q.norm() * k.norm())), abs=1e-5)
    assert torch.allclose(example_key(bb, imgs, prompts), q.detach(), atol=1e-6)
    # entries of another backbone are not candidates
    assert lib.search_by_example(TeachingVLM.create(seed=1), imgs, prompts) == []


def test_compose_is_the_weighted_sum(lib, bb):
    a, b = state(adapter(bb, 1)), state(adapter(bb, 2))
    mixed = lib.compose(["binding-v1", "format-es"], [0.3, 0.7], bb)
    assert isinstance(mixed, M2IV)
    for k, v in state(mixed).items():
        assert torch.allclose(v, 0.3 * a[k] + 0.7 * b[k], atol=1e-6, rtol=0), k
    mean = lib.compose(["binding-v1", "format-es"], None, bb)
    for k, v in state(mean).items():
        assert torch.allclose(v, (a[k] + b[k]) / 2, atol=1e-6, rtol=0)
    with pytest.raises(LibraryError, match="one finite weight per entry"):
        lib.compose(["binding-v1", "format-es"], [1.0], bb)


def test_mix_tensors_is_the_weighted_sum_as_given():
    from mmict_core.vlibrary import mix_tensors

    a = {"v": torch.tensor([1.0, 2.0]), "n": torch.tensor([3])}
    b = {"v": torch.tensor([5.0, -4.0]), "n": torch.tensor([3])}
    out = mix_tensors([a, b], [1.0, -1.0])  # a difference: weights are not rescaled
    assert torch.equal(out["v"], torch.tensor([-4.0, 6.0])) and torch.equal(out["n"], torch.tensor([3]))
    assert torch.equal(mix_tensors([a, b])["v"], torch.tensor([3.0, -1.0]))  # None: the mean
    with pytest.raises(LibraryError, match="non-float"):
        mix_tensors([a, {**b, "n": torch.tensor([4])}])
    with pytest.raises(LibraryError, match="one weight per entry"):
        mix_tensors([a, b], [1.0])


def test_compose_refuses_mismatches(lib, bb):
    lib.add("icl-8", get_method("icl")(bb), task="binding")
    with pytest.raises(LibraryError, match="different methods"):
        lib.compose(["binding-v1", "icl-8"], [0.5, 0.5], bb)
    lib.add("heads", adapter(bb, 4, granularity="head"), task="binding")
    with pytest.raises(LibraryError, match="different names or shapes"):
        lib.compose(["binding-v1", "heads"], [0.5, 0.5], bb)
    other = TeachingVLM.create(seed=1)
    lib.add("other-bb", adapter(other, 5), task="binding")
    with pytest.raises(AdapterLoadError, match="another backbone"):
        lib.compose(["binding-v1", "other-bb"], [0.5, 0.5], bb)


def test_remove(lib):
    lib.remove("format-es")
    assert [e["name"] for e in lib.list()] == ["binding-v1"]
    assert sorted(os.listdir(lib.root)) == ["binding-v1"]
    with pytest.raises(LibraryError, match="no entry"):
        lib.remove("format-es")


def test_a_writer_failing_midway_leaves_the_library_intact(lib, bb, monkeypatch):
    import safetensors.torch

    before = lib.list()
    old = state(lib.load("binding-v1", bb))
    real = safetensors.torch.save_file

    def half_then_crash(tensors, filename, *a, **k):
        real(tensors, filename, *a, **k)
        with open(filename, "r+b") as f:  # a half-written file, then the "crash"
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        lib.add("new-one", adapter(bb, 7), task="binding")
    with pytest.raises(OSError, match="simulated"):
        lib.add("binding-v1", adapter(bb, 8), task="binding", overwrite=True)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert lib.list() == before
    assert sorted(os.listdir(lib.root)) == ["binding-v1", "format-es"]  # no temp folders left
    assert all(torch.equal(v, old[k]) for k, v in state(lib.load("binding-v1", bb)).items())
    # overwrite works once the writer is healthy again
    lib.add("binding-v1", adapter(bb, 8), task="binding", overwrite=True)
    assert all(torch.equal(v, state(adapter(bb, 8))[k]) for k, v in state(lib.load("binding-v1", bb)).items())


def test_leftovers_of_a_killed_writer_are_never_listed(lib):
    (lib.root / ".tmp-abc123" / "adapter").mkdir(parents=True)
    (lib.root / ".tmp-abc123" / "adapter" / "adapter.safetensors").write_bytes(b"\x00" * 10)
    (lib.root / "half").mkdir()  # a folder without entry.json
    assert [e["name"] for e in lib.list()] == ["binding-v1", "format-es"]


@pytest.mark.parametrize("bad", ["../../x", "", "/abs", "a\x00b", ".hidden", "a/b", "..", ".", "a b", "x" * 101,
                                 "..\\x", "ü"])
def test_bad_names_are_refused_and_nothing_is_written_outside(tmp_path, bb, bad):
    lib = VLibrary(tmp_path / "lib")
    with pytest.raises(ValueError, match="entry name"):
        lib.add(bad, adapter(bb, 1), task="binding")
    for op in (lambda: lib.load(bad, bb), lambda: lib.remove(bad), lambda: lib.show(bad)):
        with pytest.raises(ValueError, match="entry name"):
            op()
    assert [p.name for p in tmp_path.iterdir()] in ([], ["lib"])
    assert not (tmp_path / "lib").exists() or os.listdir(tmp_path / "lib") == []


def test_default_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MMICT_VLIBRARY", str(tmp_path / "env-lib"))
    assert VLibrary().root == tmp_path / "env-lib" == default_root()
    monkeypatch.delenv("MMICT_VLIBRARY")
    assert default_root() == __import__("pathlib").Path.home() / ".cache" / "mmict" / "vlibrary"


def test_cli(tmp_path, bb, capsys):
    root = str(tmp_path / "lib")
    src = adapter(bb, 1).save(tmp_path / "saved")
    assert main(["vlibrary", "list", "--root", root, "--no-starter"]) == 0 and "empty" in capsys.readouterr().out
    assert main(["vlibrary", "add", "cli-entry", "--from", str(src), "--task", "binding", "--description",
                 "bound nonsense words", "--metrics", '{"accuracy": 0.9}', "--samples", "1000", "--root", root]) == 0
    assert "added cli-entry (m2iv, 1032 parameters)" in capsys.readouterr().out
    assert main(["vlibrary", "list", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "cli-entry" in out and "m2iv" in out and "binding" in out
    assert main(["vlibrary", "show", "cli-entry", "--root", root]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["metrics"] == {"accuracy": 0.9} and shown["samples"] == 1000 and shown["backbone"] == bb.fingerprint()
    assert main(["vlibrary", "search", "nonsense", "--root", root]) == 0 and "cli-entry" in capsys.readouterr().out
    loaded = VLibrary(root).load("cli-entry", bb)  # the copied folder is a working adapter
    assert all(torch.equal(v, state(adapter(bb, 1))[k]) for k, v in state(loaded).items())
    assert main(["vlibrary", "add", "../evil", "--from", str(src), "--task", "binding", "--root", root]) == 2
    assert "entry name '../evil'" in capsys.readouterr().err
    assert main(["vlibrary", "add", "x", "--from", str(tmp_path), "--task", "binding", "--root", root]) == 2
    assert "not an adapter folder" in capsys.readouterr().err
    assert main(["vlibrary", "remove", "cli-entry", "--root", root]) == 0
    assert main(["vlibrary", "show", "cli-entry", "--root", root]) == 2
    assert "no entry 'cli-entry'" in capsys.readouterr().err
