"""Layer 4: the model families, one package per syllabus paradigm.

- [`probgen.models.arm`][probgen.models.arm]: autoregressive models and GPT;
- [`probgen.models.vae`][probgen.models.vae]: VAEs and VQ-VAE;
- [`probgen.models.flows`][probgen.models.flows]: normalizing flows.

Every family registers the same contract ([`probgen.models.family`][probgen.models.family]): a typed
config, ``train`` and ``load``, runs that ``sample``, ``evaluate`` and ``save_samples``. Each is a
thin constructor over the shared engine ([`probgen.infer.fit.fit`][probgen.infer.fit.fit]).

Examples:
    >>> from probgen.models import family_names
    >>> family_names()[:3]
    ['arm', 'cyclegan', 'diffusion']
"""

from probgen.models import arm, flows, vae
from probgen.models.arm import *  # noqa: F401,F403
from probgen.models.config import RunConfig, build_config, option
from probgen.models.family import Family, Run, family_names, get_family, load_run, register, train
from probgen.models.flows import *  # noqa: F401,F403
from probgen.models.vae import *  # noqa: F401,F403

__all__ = ["arm", "vae", "flows", "train", "load_run", "Family", "Run", "RunConfig", "option",
           "build_config", "register", "get_family", "family_names",
           *arm.__all__, *vae.__all__, *flows.__all__]
