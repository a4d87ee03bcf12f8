"""What each benchmark run measures: the full run (under 10 minutes on a 2-core CPU) and --quick."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# the LM sizes of the tiny random configs scaled up (teaching_config keyword arguments)
SCALED_FULL = (
    dict(lm_hidden=512, lm_layers=8, lm_heads=8, lm_intermediate=1376),  # ~22 M LM parameters
    dict(lm_hidden=1024, lm_layers=12, lm_heads=16, lm_intermediate=2816),  # ~151 M
    dict(lm_hidden=1536, lm_layers=16, lm_heads=16, lm_intermediate=4096),  # ~453 M (1.8 GB in fp32)
)
SCALED_QUICK = (dict(lm_hidden=256, lm_layers=4, lm_heads=4, lm_intermediate=688),)

# tiny random configs of the real classes (mmict_core.backbones.tiny size overrides), per class smallest first;
# candidates whose estimated fp32 peak exceeds ram_budget_gb are skipped before they are built (the 7B shapes)
REAL_FULL = (
    ("llava", (dict(lm_hidden=512, lm_layers=8, lm_heads=8, lm_kv_heads=8, lm_intermediate=1376),  # ~25 M (MHA, as Vicuna)
               dict(lm_hidden=1024, lm_layers=12, lm_heads=16, lm_kv_heads=16, lm_intermediate=2816),  # ~160 M
               dict(lm_hidden=4096, lm_layers=32, lm_heads=32, lm_kv_heads=32, lm_intermediate=11008))),  # Vicuna-7B shape
    ("qwen2-vl", (dict(lm_hidden=512, lm_layers=8, lm_heads=8, lm_kv_heads=2, lm_intermediate=1376),  # GQA, as Qwen2
                  dict(lm_hidden=1024, lm_layers=12, lm_heads=16, lm_kv_heads=4, lm_intermediate=2816),
                  dict(lm_hidden=3584, lm_layers=28, lm_heads=28, lm_kv_heads=4, lm_intermediate=18944))),  # Qwen2-VL-7B shape
)
REAL_QUICK = (  # ~3 M parameters each (the 7B shapes: planned and skipped, as in the full run)
    ("llava", (dict(lm_hidden=256, lm_layers=4, lm_heads=4, lm_kv_heads=4, lm_intermediate=688),
               dict(lm_hidden=4096, lm_layers=32, lm_heads=32, lm_kv_heads=32, lm_intermediate=11008))),
    ("qwen2-vl", (dict(lm_hidden=256, lm_layers=4, lm_heads=4, lm_kv_heads=2, lm_intermediate=688),
                  dict(lm_hidden=3584, lm_layers=28, lm_heads=28, lm_kv_heads=4, lm_intermediate=18944))),
)


@dataclass
class Settings:
    quick: bool = False
    threads: int = 1  # torch intra-op threads for every timing (tiny models: 1 is the least noisy)
    jobs: int = 2  # worker processes of `python -m benchmarks.data_efficiency` (section 4's measurement)
    seed: int = 0
    task: str = "binding"  # with fixed_binding: one colour -> word binding for train and test
    fixed_binding: bool = True

    # 1. inference
    icl_shots: tuple = (1, 2, 4, 8, 16)
    mmict_shots: int = 4
    new_tokens: int = 3  # generated per query (min = max, so every configuration decodes as many)
    latency_rounds: int = 60  # many short rounds: medians of ~15 ms queries are noisy on a shared 2-core machine
    latency_episodes: int = 5  # distinct queries, cycled over the rounds (the same for every configuration)
    scaled_inference: dict = field(default_factory=lambda: dict(lm_hidden=512, lm_layers=8, lm_heads=8, lm_intermediate=1376))
    scaled_rounds: int = 10

    # 2. training
    train_batch: int = 8
    train_rounds: int = 6
    train_extra: tuple = (("mimic", (("train_shots", 16),)),)  # extra rows: (method, config overrides)
    memory_repeats: int = 2

    # 3. backbone
    scaled_configs: tuple = SCALED_FULL
    backbone_rounds: int = 3
    backbone_tokens: int = 64  # query length of the forward timed per backbone (batch 1)
    real_configs: tuple = REAL_FULL  # (kind, candidate LM sizes) of the tiny random real-class configs
    ram_budget_gb: float = 8.0  # real-class sizes whose estimated fp32 peak exceeds this are skipped

    # 4. data efficiency and many-shot (benchmarks.data_efficiency): the full benchmark reads the committed
    # per-run JSON under data_dir (measured by `python -m benchmarks.data_efficiency`, ~hours of CPU); --quick
    # runs the same code in-process at toy sizes.  Every adapter: the starter library's budget
    # (casestudy.starter_train_config: 2,000 steps, lr 5e-3, batch 8, mix-fixed 0.5) with only `samples`
    # changed, plus data_train (quick: fewer steps), scored on eval_episodes held-out test episodes (seed 0)
    data_methods: tuple = ("hificl", "mimic", "live", "m2iv", "lora")
    data_samples: tuple = (50, 100, 300, 1000)
    data_seeds: tuple = (0, 1, 2)
    data_train: dict = field(default_factory=dict)  # TrainConfig overrides besides samples (none: the library's)
    eval_episodes: int = 300  # the binding claims' 300 test episodes (seed 0)
    shot_m2iv: tuple = ((8, 1), (16, 2), (32, 4))  # M2IV teacher (demos, contexts of 8) at the largest data_samples
    # and MTV (training-free) reading as many demos in as many prompts, at inference (per_context = demos / contexts)
    data_dir: str = "benchmarks/results/data_efficiency"  # the committed per-run JSON (relative to the repository)

    # 5. hot path
    hot_rounds: int = 20
    hot_batch: int = 8
    profile_iters: int = 10

    # 6. the Compare path (one assembly per query, image-encoding cache): before vs after
    compare_shots: int = 8
    compare_rounds: int = 20

    def as_dict(self) -> dict:
        return asdict(self)


def full_settings(**overrides) -> Settings:
    return Settings(**overrides)


def quick_settings(**overrides) -> Settings:
    s = Settings(
        quick=True, jobs=1,
        icl_shots=(1, 8), latency_rounds=3, latency_episodes=2, scaled_inference=dict(lm_hidden=256, lm_layers=4, lm_heads=4, lm_intermediate=688),
        scaled_rounds=2, train_batch=2, train_rounds=2, memory_repeats=1,
        scaled_configs=SCALED_QUICK, real_configs=REAL_QUICK, backbone_rounds=2, backbone_tokens=16,
        data_samples=(8, 32), data_seeds=(0, 1), data_train={"steps": 3, "batch_size": 2}, eval_episodes=8,
        shot_m2iv=((8, 1), (16, 2)),
        hot_rounds=3, hot_batch=2, profile_iters=2, compare_shots=2, compare_rounds=2,
    )
    for k, v in overrides.items():
        setattr(s, k, v)
    return s
