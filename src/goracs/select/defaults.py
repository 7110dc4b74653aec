"""Per-task defaults of the selection engine."""

from __future__ import annotations

#: GORACS's lambda per task, as the method's reference settings give it (docs/method.md
#: section 4): SeqRec leans on the transport distance, CTR gives the gradient norms more say.
TASK_LAMBDA = {"seqrec": 0.1, "ctr": 0.5}
