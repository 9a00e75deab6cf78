"""minilineage: the generative-model lineage from the autoencoder to Sora, small enough to read.

The folders are layers, and imports only run down them:
  data, layers   datasets and batches; neural building blocks
  models         the networks (autoencoders, U-Net, text encoder, CLIP, classifier)
  diffusion      schedules, forward process, losses, samplers, the diffusion pipeline
  checkpoint, train   saving and loading models; the one training loop
  metrics, recipes    evaluation; named training runs
  widgets, cli, bench, checks      what notebooks and the command line use
"""

import os

__version__ = "0.1.0"


def fast_mode() -> bool:
    """True when MINILINEAGE_FAST is set (CI and quick runs): notebooks keep training short."""
    return os.environ.get("MINILINEAGE_FAST", "").lower() not in ("", "0", "false", "no")


def chapter_setup() -> bool:
    """What every chapter runs first: honour MINILINEAGE_THREADS (e.g. 1, to check that results do not
    depend on the thread count) and return whether fast mode is on."""
    threads = os.environ.get("MINILINEAGE_THREADS", "")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    return fast_mode()
