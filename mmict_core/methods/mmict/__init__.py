"""MMICT (Chen et al., TOMM 2024) and its baselines VanillaFT / VanillaICT: fine-tune the M-Hub
(the InstructBLIP Q-Former that reads text, its query tokens and the projection) on episodes."""
from .method import (HubTuneConfig, HubTuned, MMICT, MMICTConfig, VanillaFT, VanillaFTConfig, VanillaICT,
                     VanillaICTConfig, hub_parameter_count, hub_positions)
from .mhub import HubRun, demo_text, qformer_tokens, run_mhub

__all__ = ["HubTuneConfig", "HubTuned", "MMICT", "MMICTConfig", "VanillaFT", "VanillaFTConfig", "VanillaICT",
           "VanillaICTConfig", "hub_parameter_count", "hub_positions", "HubRun", "demo_text", "qformer_tokens",
           "run_mhub"]
