"""The per-cell read-out loss of the image tokens (mmict_core.teaching.cells): its targets against the
scene's own caption, the loss against a plain re-computation, and its wiring into the recipe."""
import numpy as np
import pytest
import torch

from mmict_core.data import shapes as sw
from mmict_core.teaching import PretrainConfig
from mmict_core.teaching.cells import N_CLASSES, CellReadout, cell_batch, cell_loss


def _cells_from_caption(caption: str) -> dict:
    """'large red circle top left and small blue cross bottom right' -> {cell: (shape, colour, size)}."""
    out = {}
    for part in caption.split(" and "):
        size, colour, shape, *cell = part.split()
        out[" ".join(cell)] = (shape, colour, size)
    return out


def test_cell_targets_follow_the_scene_caption():
    from mmict_core.data.tasks import episode_rng

    images, prompts, targets = cell_batch(seed=3, stage="hub", step=7, n=24)
    assert targets.shape == (24, 4, 3) and len(images) == len(prompts) == 24
    rng = episode_rng(3, "train", "cell-readout-hub", 7)  # the same draw, read back through the captions
    scenes = [sw.sample_scene(rng) for _ in range(24)]
    for scene, img, lab in zip(scenes, images, targets):
        np.testing.assert_array_equal(scene.render(), img)
        want = _cells_from_caption(scene.describe())
        for ci, cell in enumerate(sw.CELLS):
            if cell not in want:
                assert lab[ci].tolist() == [0, 0, 0]
            else:
                shape, colour, size = want[cell]
                assert lab[ci].tolist() == [1 + sw.SHAPES.index(shape), 1 + list(sw.COLOURS).index(colour),
                                            1 + list(sw.SIZES).index(size)]
    # deterministic by (seed, stage, step); another step draws other scenes
    assert torch.equal(cell_batch(3, "hub", 7, 24)[2], targets)
    assert not torch.equal(cell_batch(3, "hub", 8, 24)[2], targets)


def test_cell_loss_is_the_mean_cross_entropy_over_cells_and_attributes():
    torch.manual_seed(0)
    head = CellReadout(n_tokens=3, d=5)
    tokens = torch.randn(6, 3, 5)
    targets = torch.stack([torch.randint(0, n, (6, 4)) for n in N_CLASSES], -1)  # (6, 4, 3)
    loss, acc = cell_loss(head, tokens, targets)
    # plain re-computation: one matrix product, then -log p of each target class
    logits = (tokens.reshape(6, 15) @ head.proj.weight.T + head.proj.bias).reshape(6, 4, sum(N_CLASSES))
    total, hits, start = 0.0, [], 0
    for a, n in enumerate(N_CLASSES):
        block = logits[..., start:start + n]
        logp = block - block.logsumexp(-1, keepdim=True)
        total = total + (-logp.gather(-1, targets[..., a:a + 1])).mean()
        hits.append((block.argmax(-1) == targets[..., a]).float().mean().item())
        start += n
    assert loss.item() == pytest.approx(total.item() / 3, rel=1e-6)
    assert acc == pytest.approx(float(np.mean(hits)))


def test_cell_loss_config_and_recipe_wiring(tmp_path):
    from mmict_core.teaching import pretrain_teaching

    with pytest.raises(ValueError, match="cell_loss"):
        PretrainConfig(cell_loss=-1.0)
    with pytest.raises(ValueError, match="cell_batch"):
        PretrainConfig(cell_batch=0)
    cfg = PretrainConfig(steps=2, vision_steps=1, vision_batch=4, hub_steps=2, hub_batch=4, batch=2, eval_every=0,
                         eval_episodes=0, probe_scenes=30, cell_loss=1.0, cell_batch=4)
    summary = pretrain_teaching(tmp_path / "m", cfg, progress=False)
    hub = [e for e in summary["log"] if e["stage"] == "hub"]
    eps = [e for e in summary["log"] if e["stage"] == "episodes"]
    assert hub and all(0.0 <= e["cell_acc"] <= 1.0 for e in hub)
    assert eps and "cell_acc" in eps[-1]
    # on by default (the recipe's candidate 4); 0.0 switches it off: no cell entries at all
    assert PretrainConfig().cell_loss > 0
    off = pretrain_teaching(tmp_path / "n", PretrainConfig(steps=1, vision_steps=0, hub_steps=1, hub_batch=4, batch=2,
                                                           eval_every=0, eval_episodes=0, probe_scenes=30, cell_loss=0.0),
                            progress=False)
    assert not any("cell_acc" in e for e in off["log"])


def test_cell_loss_reaches_the_query_tokens():
    from mmict_core.backbones.teaching import TeachingVLM
    from mmict_core.teaching.cells import cell_step

    vlm = TeachingVLM.create(seed=0, vision_layers=1, vision_intermediate=32)
    vlm.model.requires_grad_(True)
    head = CellReadout(vlm.num_query_tokens, vlm.hidden_size)
    loss, _ = cell_step(vlm, head, seed=0, stage="episodes", step=0, n=3)
    loss.backward()
    assert vlm.model.query_tokens.grad is not None and vlm.model.query_tokens.grad.abs().sum() > 0
    assert vlm.model.language_projection.weight.grad.abs().sum() > 0


def test_position_loss_reads_each_patch_row_and_column():
    """The vision stage's position loss against a plain re-computation: patch i of the row-major g x g
    grid has row i // g and column i % g; the loss is the two cross-entropies."""
    from mmict_core.teaching.vision import VisionHeads, position_loss

    torch.manual_seed(0)
    g, d, B = 4, 6, 3
    heads = VisionHeads(d, g)
    states = torch.randn(B, 1 + g * g, d)  # CLS + patches
    loss, acc = position_loss(heads, states)
    p = states[:, 1:]
    want = 0.0
    for lin, target in ((heads.row, [i // g for i in range(g * g)]), (heads.col, [i % g for i in range(g * g)])):
        logits = p @ lin.weight.T + lin.bias  # (B, g*g, g)
        logp = logits - logits.logsumexp(-1, keepdim=True)
        want += -logp[:, torch.arange(g * g), torch.tensor(target)].mean()
    assert loss.item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="vision_position"):
        PretrainConfig(vision_position=-1.0)


def test_cell_step_with_frozen_vision_gives_the_same_loss_and_no_vit_gradient():
    from mmict_core.backbones.teaching import TeachingVLM
    from mmict_core.teaching.cells import cell_step

    vlm = TeachingVLM.create(seed=0, vision_layers=1, vision_intermediate=32)
    vlm.model.requires_grad_(True)
    head = CellReadout(vlm.num_query_tokens, vlm.hidden_size)
    full, _ = cell_step(vlm, head, seed=0, stage="hub", step=3, n=3)
    frozen, _ = cell_step(vlm, head, seed=0, stage="hub", step=3, n=3, frozen_vision=True)
    torch.testing.assert_close(full, frozen)
    frozen.backward()
    assert all(p.grad is None for p in vlm.model.vision_model.parameters())
    assert vlm.model.query_tokens.grad.abs().sum() > 0
