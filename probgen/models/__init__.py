"""Layer 4: the model families, one package per syllabus paradigm.

- [`probgen.models.arm`][probgen.models.arm]: autoregressive models and GPT;
- [`probgen.models.vae`][probgen.models.vae]: VAEs and VQ-VAE;
- [`probgen.models.flows`][probgen.models.flows]: normalizing flows.

Each is a thin constructor over the shared engine
([`probgen.infer.fit.fit`][probgen.infer.fit.fit]).
"""

from probgen.models import arm, flows, vae
from probgen.models.arm import *  # noqa: F401,F403
from probgen.models.flows import *  # noqa: F401,F403
from probgen.models.vae import *  # noqa: F401,F403

__all__ = ["arm", "vae", "flows", *arm.__all__, *vae.__all__, *flows.__all__]
