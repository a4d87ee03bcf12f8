"""One assembly per query in Compare, demo token cost without assembling, and the session's cache of
image encodings (bit-identical to encoding again; invalidated by another backbone or changed weights)."""
import contextlib

import pytest
import torch

from mmict_core.backbones import TeachingVLM
from mmict_core.backbones.encoding_cache import EncodingCache, use_encoding_cache, vision_state
from mmict_core.data import make_episode
from mmict_core.workbench import Session, compare_one, demo_token_cost, make_method

ADAPTERS = ("hificl", "lora", "mimic", "live", "m2iv")


@contextlib.contextmanager
def counting(vlm):
    """Counts of vision-encoder runs (encode_images) and of assemblies (assemble) on ``vlm``."""
    n = {"encode": 0, "assemble": 0}
    enc, asm = vlm.encode_images, vlm.assemble

    def encode_images(*a, **k):
        n["encode"] += 1
        return enc(*a, **k)

    def assemble(*a, **k):
        n["assemble"] += 1
        return asm(*a, **k)

    vlm.encode_images, vlm.assemble = encode_images, assemble
    try:
        yield n
    finally:
        del vlm.encode_images, vlm.assemble  # the class's methods again


def methods(vlm):
    torch.manual_seed(0)
    out = {"ICL": make_method(vlm, "icl")}
    for name in ADAPTERS:
        m = make_method(vlm, name)
        with torch.no_grad():  # non-zero adapters, so each changes the output
            for p in m.trainable_parameters():
                p.normal_(0, 0.05)
        out[name] = m.eval()  # inference mode (LoRA's dropout off), as after training
    return out


def logits_of(vlm, method, ep):
    with torch.no_grad(), method.attached():
        return vlm.forward(method.batch([ep], with_answer=False, padding_side="left"))


def test_compare_assembles_and_encodes_once_per_method(vlm):
    ep = make_episode("binding", 4, seed=0, index=1, split="val")
    ms = methods(vlm)
    with counting(vlm) as n:
        rows = compare_one(vlm, ep, ms)
    assert [r.error for r in rows] == [""] * len(ms)
    assert n == {"encode": len(ms), "assemble": len(ms)}
    # token counts: the layout's own lengths (ICL: demos + query; adapters: the query alone)
    full = sum(x for _, _, x in vlm.segment_lengths(ep, with_answer=False))
    query_only = full - demo_token_cost(vlm, ep.demos, ep.query)
    assert [r.lm_tokens for r in rows] == [full] + [query_only] * len(ADAPTERS)
    assert full > query_only


def test_demo_token_cost_encodes_and_assembles_nothing(vlm):
    ep = make_episode("binding", 5, seed=0, index=2, split="val")
    icl = make_method(vlm, "icl")
    with torch.no_grad():  # independent reference: assemble with and without the demos
        ref = (icl.batch([ep], with_answer=False).inputs_embeds.shape[1]
               - icl.batch([make_episode("binding", 0, seed=0, index=2, split="val")], with_answer=False).inputs_embeds.shape[1])
    assert ep.query.prompt == make_episode("binding", 0, seed=0, index=2, split="val").query.prompt
    vlm.num_image_tokens  # remembered once per backbone
    with counting(vlm) as n:
        cost = demo_token_cost(vlm, ep.demos, ep.query)
    assert cost == ref and n == {"encode": 0, "assemble": 0}
    many = make_episode("binding", 100, seed=0, index=0, split="val", pool_size=100)  # ~1500 tokens > 1024
    with pytest.raises(ValueError, match="context holds"):  # as the assembly says it
        demo_token_cost(vlm, many.demos, many.query)


def test_session_cache_reuses_encodings_bit_identically(vlm):
    s = Session(vlm, task="binding", pool_size=8)
    for i in (0, 2, 5):
        s.toggle(i)
    ms = methods(vlm)
    s.adapters.update({k: v for k, v in ms.items() if k != "ICL"})
    labels = list(ms)
    ep = s.episode()
    with counting(vlm) as plain:
        ref = compare_one(vlm, ep, ms)  # no cache
    with counting(vlm) as first:
        rows1 = s.compare(labels, max_new_tokens=6)
    with counting(vlm) as second:
        rows2 = s.compare(labels, max_new_tokens=6)
    assert plain["encode"] == len(labels)
    # first click: one encoding for demos + query (ICL), one for the query alone (every adapter)
    assert first == {"encode": 2, "assemble": len(labels)}
    assert second == {"encode": 0, "assemble": len(labels)}  # nothing changed: no image encoded again
    for r, a, b in zip(ref, rows1, rows2):
        assert (r.output, r.lm_tokens) == (a.output, a.lm_tokens) == (b.output, b.lm_tokens)
    for name, m in ms.items():  # cached logits bit-identical to the uncached path
        uncached = logits_of(vlm, m, ep)
        with use_encoding_cache(s.encodings):
            cached = logits_of(vlm, m, ep)
        assert torch.equal(uncached, cached), name
    # a changed demo set misses once, then hits
    s.toggle(5)
    with counting(vlm) as third:
        s.compare(["ICL"])
    assert third["encode"] == 1


def test_cache_invalidation_bounds_and_gradients(vlm):
    cache = EncodingCache(max_entries=2)
    eps = [make_episode("binding", 2, seed=0, index=i, split="val") for i in range(3)]
    icl = make_method(vlm, "icl")
    with counting(vlm) as n, use_encoding_cache(cache), torch.no_grad():
        for ep in eps:
            icl.batch([ep], with_answer=False)
        assert len(cache) == 2 and n["encode"] == 3  # bounded: the oldest dropped
        icl.batch([eps[2]], with_answer=False)
        assert n["encode"] == 3
        icl.batch([eps[0]], with_answer=False)  # evicted: encoded again
        assert n["encode"] == 4
        # an in-place change of a vision weight (an optimiser step, a load) invalidates
        w = vlm.model.vision_model.embeddings.patch_embedding.weight
        before = vision_state(vlm)
        w.add_(0.0)
        assert vision_state(vlm) != before
        icl.batch([eps[0]], with_answer=False)
        assert n["encode"] == 5
    with counting(vlm) as n, use_encoding_cache(cache):  # gradients on: never cached
        icl.batch([eps[0]], with_answer=False)
        icl.batch([eps[0]], with_answer=False)
    assert n["encode"] == 2
    other = TeachingVLM.create(seed=1)
    with use_encoding_cache(cache), torch.no_grad():
        other_feats = other.encode_items([eps[0].query])
        assert len(cache) == 1  # another backbone: the old entries are gone
        ref = TeachingVLM.create(seed=1).encode_items([eps[0].query])
    assert torch.equal(other_feats[0], ref[0])


def test_mmict_vision_copies_get_their_own_entries(vlm):
    m = make_method(vlm, "mmict")
    base = vision_state(vlm)
    with m.attached():
        inside = vision_state(vlm)
    assert inside != base and vision_state(vlm) == base


def test_cache_refuses_bad_bounds():
    with pytest.raises(ValueError, match="positive"):
        EncodingCache(max_entries=0)
