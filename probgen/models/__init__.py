"""Layer 4: the model families, one package per syllabus paradigm.

- :mod:`probgen.models.arm`: autoregressive models and GPT;
- :mod:`probgen.models.vae`: VAEs and VQ-VAE;
- :mod:`probgen.models.flows`: normalizing flows.

Each is a thin constructor over the shared engine (:func:`probgen.infer.fit.fit`).
"""

from probgen.models import arm, flows, vae
from probgen.models.arm import *  # noqa: F401,F403
from probgen.models.flows import *  # noqa: F401,F403
from probgen.models.vae import *  # noqa: F401,F403

__all__ = ["arm", "vae", "flows", *arm.__all__, *vae.__all__, *flows.__all__]
