"""minilineage: the generative-model lineage from the autoencoder to Sora, small enough to read.

Modules follow the chain data -> models -> diffusion -> samplers -> training -> widgets.
"""

import os

__version__ = "0.1.0"


def fast_mode() -> bool:
    """True when MINILINEAGE_FAST is set (CI and quick runs): notebooks keep training short."""
    return os.environ.get("MINILINEAGE_FAST", "").lower() not in ("", "0", "false", "no")
