"""The LLM-ESR paper's remaining baselines as model families over any backbone (docs/BASELINES.md).

* ``cities`` (CITIES, ICDM 2020): tail-item embeddings inferred from their contexts by a function trained on
  head items;
* ``melt`` (MELT, SIGIR 2023): bilateral user/item branches that transfer head knowledge to tail users and
  items;
* ``rlmrec`` (RLMRec, WWW 2024): contrastive (or generative) alignment of collaborative and LLM
  representations.

LLMInit lives in esrkit/models/idrec.py (``llminit``).
"""

from esrkit.models.baselines.cities import CITIES, CitiesOptions
from esrkit.models.baselines.melt import MELT, MeltOptions
from esrkit.models.baselines.rlmrec import RLMRec, RLMRecOptions

__all__ = ["CITIES", "MELT", "CitiesOptions", "MeltOptions", "RLMRec", "RLMRecOptions"]
