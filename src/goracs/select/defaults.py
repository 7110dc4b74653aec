"""Per-task defaults of the selection engine."""

from __future__ import annotations

from goracs.select.base import Selector
from goracs.select.goracs import GORACS

#: GORACS's lambda per task, as the method's reference settings give it (docs/method.md
#: section 4): SeqRec leans on the transport distance, CTR gives the gradient norms more say.
TASK_LAMBDA = {"seqrec": 0.1, "ctr": 0.5}
#: GORACS's lambda where no task is known (arrays given without a prepared folder).
DEFAULT_LAMBDA = 0.5


def default_lambda(method: type[Selector], task: str | None) -> float | None:
    """The lambda ``goracs select`` gives a method when ``--lam`` is not set: the task's
    (:data:`TASK_LAMBDA`, :data:`DEFAULT_LAMBDA` without a task) for GORACS and the ablations
    built on its engine; None for any other method, which keeps its own default (DEALRec's
    ``lam`` is another weight)."""
    if not issubclass(method, GORACS):
        return None
    return TASK_LAMBDA.get(task or "", DEFAULT_LAMBDA)
