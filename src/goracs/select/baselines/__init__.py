"""Selection baselines behind the Selector contract; importing this package registers them.

Distribution-based: ``random``, ``kcenter``, ``herding``, ``stratified``. Importance-based:
``grand``, ``el2n``, ``ccs``, ``d2pruning``, ``dealrec``. Numerical helpers live in
:mod:`.geometry` (blockwise distances, k-NN, k-means) and :mod:`.strata` (allocations).
"""

from goracs.select.baselines.distribution import (
    Herding,
    KCenterGreedy,
    RandomSelector,
    StratifiedClusters,
)
from goracs.select.baselines.importance import CCS, EL2N, D2Pruning, DEALRec, GraNd

__all__ = [
    "CCS",
    "D2Pruning",
    "DEALRec",
    "EL2N",
    "GraNd",
    "Herding",
    "KCenterGreedy",
    "RandomSelector",
    "StratifiedClusters",
]
