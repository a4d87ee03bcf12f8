"""The teaching-VLM pretraining package (mmict_core.teaching): its config checks, the recipe's stage
list, the episode stream and which answers carry loss (never one that nothing before it
determines), the auxiliary losses and their hooks, the M-Hub text-path stage, the model card's
command -- each at tiny size (a few steps)."""
import pytest

from mmict_core.teaching import PretrainConfig
from mmict_core.teaching.episodes import training_episodes, unpredictable_items
from mmict_core.data import Episode, make_episode
from mmict_core.data.tasks import PROMPTS, Binding


def test_config_refuses_bad_mix_and_ways():
    with pytest.raises(ValueError, match="sum to 1"):
        PretrainConfig(mix={"binding": 0.5})
    with pytest.raises(ValueError, match="unknown tasks"):
        PretrainConfig(mix={"bindin": 1.0})
    with pytest.raises(ValueError, match="binding_ways"):
        PretrainConfig(binding_ways=(1, 3))
    with pytest.raises(ValueError, match="binding_ways"):
        PretrainConfig(binding_ways=(4, 3))
    with pytest.raises(ValueError, match="vision_lr_scale"):
        PretrainConfig(vision_lr_scale=-0.1)


def test_binding_ways_and_cued_prompts():
    cfg = PretrainConfig(mix={"binding": 0.5, "binding-cued": 0.5}, binding_ways=(3, 5), batch=32)
    eps = training_episodes(cfg, 0)
    ways = {len(e.info["binding"]) for e in eps}
    assert ways <= {3, 4, 5} and len(ways) > 1
    cued = [e for e in eps if e.query.prompt != PROMPTS["binding"]]
    assert cued and len(cued) < len(eps)
    for e in cued:  # the cue names the query's own colour
        assert e.query.prompt == f"what is this {e.query.label} shape ?"
    assert training_episodes(cfg, 0)[5].query.answer == eps[5].query.answer  # deterministic


def _episode(order, query_label):
    """A binding episode with demos of the given colours (by position in the binding) and query."""
    import numpy as np

    pool, query, info = Binding().generate(np.random.default_rng(0), "train", 8)
    cats = list(info["binding"])
    by = {c: [p for p in pool if p.label == c] for c in cats}
    demos = [by[cats[i]].pop() for i in order]
    q = by[cats[query_label]].pop()
    return Episode(demos=demos, query=q, task="binding")


def test_unpredictable_items_binding():
    assert unpredictable_items(_episode([0, 0, 1, 0], 0)) == {0, 2}  # the first demo of each colour
    assert unpredictable_items(_episode([0, 0], 1)) == {0, 2}  # ... and a query whose colour was never shown
    assert unpredictable_items(_episode([1, 0], 1)) == {0, 1}
    assert unpredictable_items(_episode([], 0)) == {0}  # 0-shot query


def test_unpredictable_items_format_operator():
    for task in ("format", "operator"):
        assert unpredictable_items(make_episode(task, 3, seed=0, index=1, split="train")) == {0}
        assert unpredictable_items(make_episode(task, 0, seed=0, index=1, split="train")) == set()
    assert unpredictable_items(make_episode("shapes-vqa", 3, seed=0, index=1, split="train")) == set()


def test_stop_at_snapshots_mid_schedule(tmp_path):
    import json

    from mmict_core.teaching import pretrain_teaching

    with pytest.raises(ValueError, match="stop_at"):
        PretrainConfig(steps=3, stop_at=4)
    cfg = PretrainConfig(steps=4, stop_at=2, vision_steps=1, vision_batch=4, hub_steps=1, hub_batch=4, batch=2, eval_every=0, eval_episodes=0,
                         probe_scenes=30)
    summary = pretrain_teaching(tmp_path / "m", cfg, progress=False)
    meta = json.loads((tmp_path / "m" / "teaching.json").read_text())
    assert meta["steps_done"] == 2 and summary["config"]["stop_at"] == 2


def test_answer_marker_off_and_image_norm(tmp_path):
    """--answer-marker off puts each answer right after its image tokens (saved with the model);
    --image-norm rescales the projection so image tokens get the asked mean norm."""
    import numpy as np
    import torch

    from mmict_core.backbones import TeachingVLM
    from mmict_core.teaching.episodes import rescale_image_tokens
    from mmict_core.data import shapes as sw

    with pytest.raises(ValueError, match="image_norm"):
        PretrainConfig(image_norm=0.0)
    vlm = TeachingVLM.create(seed=0)
    ep = make_episode("binding", 2, seed=0, index=0, split="val")
    roles = [s.role for s in vlm.episode_segments(ep, with_answer=False)]
    assert roles.count("marker") == 3
    vlm.answer_marker_ids = []
    segs = vlm.episode_segments(ep, with_answer=False)
    assert [s.role for s in segs] == ["bos"] + ["prompt", "image", "answer"] * 2 + ["prompt", "image"]
    vlm.save(tmp_path / "m")
    assert TeachingVLM.load(tmp_path / "m").answer_marker_ids == []

    factor = rescale_image_tokens(vlm, 2.0, seed=1)
    rng = np.random.default_rng(1)  # the same scenes the function measured
    images = [sw.render_scene(sw.sample_scene(rng)) for _ in range(64)]
    with torch.no_grad():
        norm = vlm.encode_images(images).norm(dim=-1).mean().item()
    assert factor > 0 and norm == pytest.approx(2.0, rel=1e-4)


def test_induction_batch_labels_only_predictable_values():
    """Stage 1b's text sequences: every key's value is the one bound to it in that sequence, each
    value follows the answer marker, and a value carries loss only when its key was seen before."""
    import numpy as np

    import torch

    from mmict_core.backbones import TeachingVLM
    from mmict_core.teaching.induction import induction_batch
    from mmict_core.data import shapes as sw
    from mmict_core.data.tasks import NONSENSE_WORDS

    with pytest.raises(ValueError, match="induction_steps"):
        PretrainConfig(induction_steps=-1)
    vlm = TeachingVLM.create(seed=0)
    tok = vlm.tokenizer.token_to_id
    keys, values = {tok(c) for c in sw.COLOURS}, {tok(w) for w in NONSENSE_WORDS}
    marker = tok("<answer>")
    ids, mask, labels = induction_batch(vlm, np.random.default_rng(0), 16)
    assert ids.shape == mask.shape == labels.shape
    n_labelled = 0
    for row, m, lab in zip(ids.tolist(), mask.tolist(), labels.tolist()):
        row = row[: sum(m)]
        assert row[0] == vlm.bos_token_id
        bound, key = {}, None
        for t, (tid, y) in enumerate(zip(row, lab)):
            if tid in keys:
                key = tid
            if tid in values:
                assert row[t - 1] == marker  # the value right after the marker
                assert bound.setdefault(key, tid) == tid  # one value per key in a sequence
                if y != -100:
                    n_labelled += 1
                    assert y == tid and row[:t].count(key) >= 2  # key seen in an earlier item
                else:
                    assert row[:t].count(key) == 1  # first time this key appears
        assert all(y in (-100, vlm.eos_token_id) or y in values for y in lab)
    assert n_labelled > 0
    again = induction_batch(vlm, np.random.default_rng(0), 16)  # deterministic by the generator
    assert all(torch.equal(x, y) for x, y in zip((ids, mask, labels), again))


def test_colour_key_targets_mark_each_binding_items_marker_and_first_answer_token(tmp_path):
    """The auxiliary key loss reads, in binding episodes only, each item's answer-marker position
    and the first position of its answer, labelled with that item's colour."""
    import json

    from mmict_core.backbones import TeachingVLM
    from mmict_core.teaching import pretrain_teaching
    from mmict_core.teaching.auxiliary import colour_key_targets
    from mmict_core.teaching.episodes import training_batch
    from mmict_core.data import shapes as sw

    with pytest.raises(ValueError, match="key_loss"):
        PretrainConfig(key_loss=-1.0)
    vlm = TeachingVLM.create(seed=0)
    marker, img = vlm.tokenizer.token_to_id("<answer>"), vlm.image_token_id
    eps = [make_episode("binding", 3, seed=0, index=0, split="train"),
           make_episode("shapes-vqa", 2, seed=0, index=0, split="train"),
           make_episode("binding", 1, seed=0, index=1, split="train")]
    batch = training_batch(vlm, eps)
    rows, pos, lab = colour_key_targets(batch, eps)
    expect = []  # walk the token ids: every marker and the token after it, item by item
    for b in (0, 2):
        ids = batch.token_ids[b].tolist()
        items = list(eps[b].demos) + [eps[b].query]
        at = [t for t, tid in enumerate(ids) if tid == marker]
        assert len(at) == len(items) and all(ids[t - 1] == img for t in at)
        for t, ex in zip(at, items):
            c = list(sw.COLOURS).index(ex.label)
            expect += [(b, t, c), (b, t + 1, c)]
            assert vlm.tokenizer.id_to_token(ids[t + 1]) == ex.answer.split()[0]
    assert sorted(zip(rows, pos, lab)) == sorted(expect)

    with pytest.raises(ValueError, match="key_layer"):  # the teaching LM has 4 layers
        pretrain_teaching(tmp_path / "bad", PretrainConfig(steps=1, vision_steps=0, hub_steps=0, batch=2, eval_every=0,
                                                           eval_episodes=0, key_loss=1.0, key_layer=4), progress=False)
    cfg = PretrainConfig(steps=3, vision_steps=0, hub_steps=0, batch=4, eval_every=0, eval_episodes=0, key_loss=1.0,
                         match_loss=0.0, mix={"binding": 1.0})
    summary = pretrain_teaching(tmp_path / "m", cfg, progress=False)
    assert "key_loss" in summary["log"][-1] and summary["log"][-1]["key_loss"] > 0
    assert json.loads((tmp_path / "m" / "teaching.json").read_text())["pretrain"]["key_loss"] == 1.0
    assert not any("key_head" in k for k in TeachingVLM.load(tmp_path / "m").model.state_dict())


def test_binding_match_targets_point_at_earlier_answers_of_the_same_colour(tmp_path):
    """The match loss asks, for each predictable binding answer, that the supervised head look from
    the position predicting it (the answer marker) at the earlier answers of the same colour."""
    from mmict_core.backbones import TeachingVLM
    from mmict_core.teaching import pretrain_teaching
    from mmict_core.teaching.auxiliary import binding_match_targets
    from mmict_core.teaching.episodes import training_batch

    with pytest.raises(ValueError, match="match_loss"):
        PretrainConfig(match_loss=-0.5)
    vlm = TeachingVLM.create(seed=0)
    marker = vlm.tokenizer.token_to_id("<answer>")
    eps = [_episode([0, 1, 0, 0], 0), make_episode("format", 3, seed=0, index=0, split="train"),
           _episode([1, 0], 1), _episode([0, 0], 1)]
    batch = training_batch(vlm, eps)
    got = binding_match_targets(batch, eps)
    expect = []
    for b in (0, 2, 3):
        ids = batch.token_ids[b].tolist()
        at = [t for t, tid in enumerate(ids) if tid == marker]  # one marker per item; its answer follows
        labels = [ex.label for ex in list(eps[b].demos) + [eps[b].query]]
        for i, t in enumerate(at):
            keys = [at[j] + 1 for j in range(i) if labels[j] == labels[i]]
            if keys:
                expect.append((b, t, keys))
    assert got == expect
    assert [len(k) for b, q, k in got if b == 0] == [1, 2, 3]  # demos 2, 3 and the query (colour 0 x1, x2, x3)
    m3 = [t for t, tid in enumerate(batch.token_ids[3].tolist()) if tid == marker]
    assert [q for b, q, k in got if b == 3] == [m3[1]]  # the second demo only: no demo showed the query's colour

    with pytest.raises(ValueError, match="match_layer"):
        pretrain_teaching(tmp_path / "bad", PretrainConfig(steps=1, vision_steps=0, hub_steps=0, batch=2, eval_every=0,
                                                           eval_episodes=0, match_loss=1.0, match_layer=4), progress=False)
    cfg = PretrainConfig(steps=3, vision_steps=0, hub_steps=0, batch=4, eval_every=0, eval_episodes=0, match_loss=1.0,
                         key_loss=0.0, mix={"binding": 1.0}, binding_ways=(2, 2))
    summary = pretrain_teaching(tmp_path / "m", cfg, progress=False)
    assert summary["log"][-1]["match_loss"] > 0


def test_model_card_command_reproduces_the_runs_config(monkeypatch):
    """The model card prints the run as an `mmict pretrain-teaching` command: the recipe's own run is
    just `--out DIR --seed S`; any other config prints the flags it changed, and parsed by the CLI
    the command gives back exactly the run's config."""
    import shlex
    from dataclasses import asdict

    import mmict_core.teaching as tt
    from mmict_core.cli import build_parser
    from mmict_core.teaching.model_card import command

    assert command(asdict(PretrainConfig(seed=3))) == "mmict pretrain-teaching --out DIR --seed 3"
    runs = [PretrainConfig(seed=1),
            PretrainConfig(seed=6, steps=4000, stop_at=1500, lr=5e-4, init_from="prev", binding_ways=(2, 3),
                           key_loss=0.0, match_loss=0.25, match_layer=1, match_head=1, vision_lr_scale=1.0,
                           vision_layers=5, vision_intermediate=300, vision_steps=300, vision_lr=1e-3, hub_steps=20,
                           hub_lr=2e-3, clip_max_shots=1, answer_marker=False, cell_loss=0.5, cell_batch=8, vision_position=0.5,
                           mix={"shapes-vqa": 0.25, "binding": 0.5, "format": 0.25})]
    for run in runs:
        seen = {}
        monkeypatch.setattr(tt, "pretrain_teaching", lambda out, cfg: seen.setdefault("cfg", cfg) and {"wall_seconds": 0.0})
        argv = shlex.split(command(asdict(run)).replace("DIR", "somewhere"))
        args = build_parser().parse_args(argv[1:])
        args.func(args)
        assert asdict(seen["cfg"]) == asdict(run)
    # a run saved before a field existed ran without that feature: its command switches it off
    old = asdict(PretrainConfig(seed=2, copy_loss=0.0))
    del old["copy_loss"]
    assert "--copy-loss 0" in command(old)
    old = asdict(PretrainConfig(seed=2))
    del old["cell_loss"], old["cell_batch"], old["vision_position"]
    assert "--cell-loss 0 " in command(old) + " " and "--vision-position 0 " in command(old) + " "


def test_recipe_stage_list():
    """The recipe reads as its stages: vision, M-Hub text path, (induction, off), episodes; a
    continuation runs the episode stage only unless asked; stop_at shortens the episode stage."""
    from mmict_core.teaching import STAGES, stage_plan

    assert STAGES == ("vision", "hub", "induction", "episodes")
    cfg = PretrainConfig()
    assert stage_plan(cfg) == [("vision", cfg.vision_steps), ("hub", cfg.hub_steps), ("episodes", cfg.steps)]
    assert cfg.vision_steps > 0 and cfg.hub_steps > 0 and cfg.induction_steps == 0
    assert stage_plan(PretrainConfig(init_from="x")) == [("episodes", cfg.steps)]
    assert stage_plan(PretrainConfig(init_from="x", hub_steps=5, stop_at=10)) == [("hub", 5), ("episodes", 10)]
    assert stage_plan(PretrainConfig(induction_steps=7))[2] == ("induction", 7)
    # the recipe's model: the 4-layer, MLP-256 ViT and the auxiliary binding losses from the start
    assert (cfg.vision_layers, cfg.vision_intermediate) == (4, 256) and cfg.key_loss > 0 and cfg.match_loss > 0
    assert {"clip-qa", "clip-caption"} <= set(cfg.mix)
    from mmict_core.data.tasks import DOWNSTREAM_TASKS

    assert not set(DOWNSTREAM_TASKS) & set(cfg.mix)  # the case-study tasks are never pretrained on
    with pytest.raises(ValueError, match="unknown tasks"):
        PretrainConfig(mix={"ft-vqa": 1.0})


def test_grow_vision_keeps_the_function_and_saves_the_new_sizes(tmp_path):
    """A deeper, wider ViT computes exactly what the old one did until trained (zero output weights
    of every new unit and layer), loads back with its new config, and refuses to shrink."""
    import numpy as np
    import torch

    from mmict_core.backbones import TeachingVLM
    from mmict_core.teaching.vision import grow_vision
    from mmict_core.data import shapes as sw

    vlm = TeachingVLM.create(seed=0)
    with torch.no_grad():  # non-trivial biases, so a dropped or misplaced copy would show
        for p in vlm.model.vision_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    images = [sw.sample_scene(np.random.default_rng(i)).render() for i in range(3)]
    before = vlm.vision_states(images)
    n_before = sum(p.numel() for p in vlm.model.vision_model.parameters())
    grow_vision(vlm, layers=4, intermediate=256, seed=1)
    vc = vlm.model.config.vision_config
    assert (vc.num_hidden_layers, vc.intermediate_size) == (4, 256)
    assert len(vlm.model.vision_model.encoder.layers) == 4
    # 2 old layers gain 128 hidden units (fc1 rows + biases, fc2 columns); 2 new layers of width 256
    d = vc.hidden_size
    one_layer = 3 * d * d + 3 * d + d * d + d + d * 256 + 256 + 256 * d + d + 4 * d  # qkv (+ its 3d bias), proj, mlp, 2 LNs
    assert sum(p.numel() for p in vlm.model.vision_model.parameters()) == n_before + 2 * (128 * d + 128 + 128 * d) + 2 * one_layer
    assert torch.equal(vlm.vision_states(images), before)
    vlm.model.vision_model.encoder.layers[3].mlp.fc2.weight.data.fill_(0.01)  # trained: now it differs
    changed = vlm.vision_states(images)
    assert not torch.allclose(changed, before)
    vlm.save(tmp_path / "g")
    again = TeachingVLM.load(tmp_path / "g")
    assert torch.equal(again.vision_states(images), changed)
    with pytest.raises(ValueError, match="only grows"):
        grow_vision(again, layers=2)


def test_vision_and_hub_stage_defaults_depend_on_init():
    assert PretrainConfig().vision_steps > 0 and PretrainConfig().hub_steps > 0
    assert PretrainConfig(init_from="x").vision_steps == 0 and PretrainConfig(init_from="x").hub_steps == 0
    assert PretrainConfig(init_from="x", vision_steps=50).vision_steps == 50
    with pytest.raises(ValueError, match="vision_layers"):
        PretrainConfig(vision_layers=0)
    with pytest.raises(ValueError, match="hub_itg"):
        PretrainConfig(hub_itg=-1.0)
    with pytest.raises(ValueError, match="clip_max_shots"):
        PretrainConfig(clip_max_shots=9)


# ------------------------------------------------------------------------------------------------
# the M-Hub text-path stage


@pytest.fixture(scope="module")
def small_vlm():
    import torch

    from mmict_core.backbones import TeachingVLM

    vlm = TeachingVLM.create(seed=0)
    with torch.no_grad():  # a non-trivial Q-Former (zero biases / unit norms would hide misplaced masks)
        for p in vlm.model.qformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return vlm


def test_qformer_run_masks(small_vlm):
    """causal=False is the model's own bidirectional [queries ; text] run (what MMICT reads);
    causal=True (ITG): queries never see the text, text token j sees the queries and text <= j."""
    import torch

    from mmict_core.data import shapes as sw
    from mmict_core.teaching.hub import item_memory, qformer_run
    from mmict_core.data import Example

    import numpy as np

    vlm = small_vlm
    rng = np.random.default_rng(0)
    items = [Example(images=[sw.sample_scene(rng).render()], prompt="what is this ?", answers=[a])
             for a in ("dax", "red circle")]
    texts = [f"{ex.prompt} {ex.answer}" for ex in items]
    ids, tmask = vlm.qformer_text(texts)
    mem, mmask = item_memory(vlm, items)
    Q = vlm.num_query_tokens
    with torch.no_grad():
        bi = qformer_run(vlm, mem, mmask, ids, tmask, causal=False)
        own, _ = vlm.qformer_states([ex.images[0] for ex in items], texts)
        assert torch.allclose(bi[0], own[0], atol=1e-5)  # row 0 has the longest text: no padding differences
        n1 = int(tmask[1].sum())
        assert torch.allclose(bi[1, :Q + n1], own[1, :Q + n1], atol=1e-5)
        ca = qformer_run(vlm, mem, mmask, ids, tmask, causal=True)
        ids2 = ids.clone()
        ids2[0, 3] = vlm.tokenizer.token_to_id("blue")  # change text token 3 of item 0
        ca2 = qformer_run(vlm, mem, mmask, ids2, tmask, causal=True)
        bi2 = qformer_run(vlm, mem, mmask, ids2, tmask, causal=False)
    assert torch.equal(ca[0, :Q + 3], ca2[0, :Q + 3])  # queries and earlier text: untouched
    assert not torch.allclose(ca[0, Q + 3:], ca2[0, Q + 3:])
    assert not torch.allclose(bi[0, :Q], bi2[0, :Q])  # bidirectional: the queries see the text
    assert torch.equal(ca[1], ca2[1])


def test_item_memory_concatenates_frames(small_vlm):
    import torch

    from mmict_core.data import make_episode
    from mmict_core.teaching.hub import item_memory

    vlm = small_vlm
    ep = make_episode("clip-caption", 1, seed=0, index=0, pool_size=1)
    items = [ep.demos[0], ep.query, make_episode("shapes-vqa", 0, seed=0, index=0).query]
    mem, mask = item_memory(vlm, items)
    S = vlm.vision_states(items[2].images).shape[1]
    assert mem.shape[1] == max(len(ex.images) for ex in items) * S
    with torch.no_grad():
        for i, ex in enumerate(items):
            n = len(ex.images) * S
            assert torch.allclose(mem[i, :n], vlm.vision_states(ex.images).reshape(n, -1), atol=1e-6)
            assert mask[i, :n].all() and not mask[i, n:].any() and not mem[i, n:].any()


def test_hub_losses_and_negatives(small_vlm):
    import math

    from mmict_core.teaching.hub import HubHeads, _same_task_roll, hub_items, hub_losses

    vlm = small_vlm
    cfg = PretrainConfig(hub_batch=12)
    items = hub_items(cfg, 0)
    assert [ex.answer for ex in items] == [ex.answer for ex in hub_items(cfg, 0)]  # deterministic
    partner = _same_task_roll(items)
    for i, p in enumerate(partner):
        assert items[p].task == items[i].task and (p != i or sum(ex.task == items[i].task for ex in items) == 1)
    heads = HubHeads(64, vlm.model.config.qformer_config.vocab_size)
    itg, itm, acc, mlm = hub_losses(vlm, heads, items, mlm_weight=1.0)
    assert math.isfinite(mlm.item()) and mlm.item() > 0
    V = vlm.model.config.qformer_config.vocab_size
    assert math.isfinite(itg.item()) and abs(itg.item() - math.log(V)) < 1.5  # untrained head: about uniform
    assert math.isfinite(itm.item()) and 0.0 <= acc <= 1.0
    vlm.model.requires_grad_(True)  # as the recipe's build_model leaves it
    try:
        itg, itm, acc, mlm = hub_losses(vlm, heads, items, text_negatives=True, mlm_weight=1.0)
        (itg + itm + mlm).backward()
        assert vlm.model.query_tokens.grad is not None and heads.itg.weight.grad is not None
        assert heads.itm.weight.grad is not None and vlm.model.vision_model.embeddings.patch_embedding.weight.grad is None
    finally:
        vlm.model.requires_grad_(False)
        vlm.model.zero_grad(set_to_none=True)


def test_mhub_probe_reads_colour_and_shape(small_vlm):
    from mmict_core.teaching.hub import mhub_probe

    out = mhub_probe(small_vlm, n=60, seed=1)
    assert set(out) == {"text_colour", "text_shape", "query_colour", "query_shape"}
    assert all(0.0 <= v <= 1.0 for v in out.values())


def test_auxiliary_captures_always_detach(small_vlm):
    """The key / match hooks come off and the attention implementation returns, also on an error."""
    from mmict_core.teaching.auxiliary import attention_capture, residual_capture

    vlm = small_vlm
    impl = vlm.text_config._attn_implementation
    layers = vlm.decoder_layers()
    n_hooks = lambda: sum(len(m._forward_hooks) for m in vlm.model.modules())  # noqa: E731
    before = n_hooks()
    with pytest.raises(RuntimeError):
        with residual_capture(vlm, 2), attention_capture(vlm, 1):
            assert vlm.text_config._attn_implementation == "eager" and n_hooks() == before + 2
            raise RuntimeError("boom")
    assert n_hooks() == before and vlm.text_config._attn_implementation == impl and len(layers) == 4


def test_copy_loss_is_the_matching_heads_own_vote_for_the_shown_word(tmp_path):
    """The copy loss = cross-entropy, at each match target's answer-predicting position, of what the
    supervised head alone writes (its attention-weighted values through its slice of o_proj, the final
    norm's gain and lm_head) against the item's answer word -- recomputed here from the head's attention
    probabilities and the layer's value projection."""
    import torch
    from mmict_core.backbones import TeachingVLM
    from mmict_core.teaching import pretrain_teaching
    from mmict_core.teaching.auxiliary import (attention_capture, binding_match_targets, copy_loss,
                                                head_output_capture)
    from mmict_core.teaching.episodes import training_batch

    with pytest.raises(ValueError, match="copy_loss"):
        PretrainConfig(copy_loss=-1.0)
    torch.manual_seed(0)
    vlm = TeachingVLM.create(seed=0)
    layer, head = 2, 1
    attn = vlm.attention(layer)
    tc = vlm.text_config
    H, hd = tc.num_attention_heads, tc.hidden_size // tc.num_attention_heads
    eps = [_episode([0, 1, 0, 0], 0), make_episode("format", 3, seed=0, index=0, split="train"), _episode([1, 0, 1], 1)]
    batch = training_batch(vlm, eps)
    seen = {}
    pre = attn.register_forward_pre_hook(lambda m, a, kw: seen.__setitem__("x", kw.get("hidden_states", a[0] if a else None)),
                                         with_kwargs=True)
    try:
        with torch.no_grad(), attention_capture(vlm, layer) as att, head_output_capture(vlm, layer) as cap:
            vlm.forward(batch)
            got = copy_loss(vlm, cap["z"], layer, head, batch, eps)
    finally:
        pre.remove()
    # plain recomputation: z_h = P_h @ V_h (values of the layer's normalised input, KV heads shared by groups)
    x = seen["x"]  # (B, T, d)
    kv = tc.num_key_value_heads
    v = attn.v_proj(x).view(x.shape[0], x.shape[1], kv, hd)[:, :, head // (H // kv)]  # (B, T, hd)
    p = att["p"][:, head]  # (B, T, T)
    w_o = attn.o_proj.weight[:, head * hd:(head + 1) * hd]  # (d, hd)
    gain = vlm.language_model.get_decoder().norm.weight
    w_u = vlm.language_model.get_output_embeddings().weight  # (V, d)
    losses = []
    targets = binding_match_targets(batch, eps)
    assert targets
    for b, q, _ in targets:
        z = p[b, q] @ v[b]  # (hd,)
        logits = w_u @ ((w_o @ z) * gain)  # (V,)
        item = [t for t in range(len(eps[b].demos) + 1) if batch.positions(b, "answer", t)[:1] == [q + 1]][0]
        ex = (list(eps[b].demos) + [eps[b].query])[item]
        word = vlm.tokenizer.token_to_id(ex.answers[0].split()[0])
        losses.append(torch.nn.functional.cross_entropy(logits[None], torch.tensor([word])))
    assert torch.allclose(got, torch.stack(losses).mean(), atol=1e-5)

    cfg = PretrainConfig(steps=3, vision_steps=0, hub_steps=0, batch=4, eval_every=0, eval_episodes=0, copy_loss=1.0,
                         match_loss=0.5, key_loss=0.0, mix={"binding": 1.0}, binding_ways=(2, 2))
    summary = pretrain_teaching(tmp_path / "m", cfg, progress=False)
    assert summary["log"][-1]["copy_loss"] > 0


def test_model_card_quantised_within_three_points_at_the_boundary():
    from mmict_core.teaching.model_card import _acceptance

    def rep(quant, accs):  # accuracies over 300 episodes, stored to 4 places as mmict eval writes them
        return {"task": "clip-caption", "quant": quant, "chance": 0.007,
                "results": [{"shots": k, "accuracy": round(n / 300, 4)} for k, n in accs.items()]}

    fp32 = rep("none", {0: 200, 1: 187})
    exactly_three = _acceptance([fp32, rep("4bit", {0: 201, 1: 196})])  # 9/300 = 3 points
    assert "| 4bit: every accuracy within 3 points of fp32 | max |diff| 0.030 | PASS |" in exactly_three
    over = _acceptance([fp32, rep("4bit", {0: 201, 1: 197})])  # 10/300
    assert "| 4bit: every accuracy within 3 points of fp32 | max |diff| 0.033 | FAIL |" in over


def test_readme_teaching_table_is_the_shipped_eval_reports(tmp_path):
    """The README's fp32 table of the shipped checkpoint is made from its eval reports (a stale or
    hand-typed number fails here); and the generator puts each report's numbers in its own row."""
    import json
    from pathlib import Path

    from mmict_core.backbones import ASSETS_DIR
    from mmict_core.evaluate.claims import write_marked_block
    from mmict_core.teaching.model_card import README_BEGIN, README_END, readme_table

    (tmp_path / "binding-none.json").write_text(json.dumps({"task": "binding", "chance": 0.5, "results": [
        {"shots": 0, "accuracy": 0.0071}, {"shots": 4, "accuracy": 0.95}]}))
    (tmp_path / "clip-caption-none.json").write_text(json.dumps({"task": "clip-caption", "chance": 0.007, "results": [
        {"shots": 0, "accuracy": 0.6667, "cider": 7.8249}]}))
    lines = readme_table(tmp_path).splitlines()
    assert lines[0] == "| task | chance | 0-shot | 4-shot |"
    assert lines[2:] == ["| binding | 0.500 | 0.007 | 0.950 |", "| clip-caption | 0.007 | 0.667 (7.82) | – |"]
    readme = Path(__file__).resolve().parents[1] / "README.md"
    assert write_marked_block(readme, README_BEGIN, README_END, readme_table(ASSETS_DIR / "eval"), check=True), (
        "README.md's teaching-VLM table is stale: BIN=.venv/bin CARD_ONLY=1 bash scripts/measure_teaching.sh "
        "rewrites it from assets/teaching-vlm/eval")
