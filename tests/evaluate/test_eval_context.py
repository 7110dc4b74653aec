"""The context a task's scoring gets, and what it gives back."""

import numpy as np

from goracs.evaluate.context import EvalContext, Scored
from goracs.evaluate.settings import EvalSettings


def test_prompts_come_in_length_order_and_scores_start_empty(tmp_path):
    prompts = ["ccc", "a", "bb", "dddd"]
    order = sorted(range(len(prompts)), key=lambda i: (len(prompts[i]), i))
    ctx = EvalContext(model=None, tokenizer=None, identity={}, records=[{}] * 4,
                      indices=np.arange(4), prompts=prompts, order=order, work=tmp_path,
                      settings=EvalSettings(), device="cpu")
    assert len(ctx) == 4 and ctx.progress and ctx.share_prefix
    assert ctx.sorted_prompts(0, 4) == ["a", "bb", "ccc", "dddd"]
    assert ctx.sorted_prompts(1, 3) == ["bb", "ccc"]
    a, b = Scored(), Scored()
    a.doc["x"] = 1
    assert b.doc == {} and b.lines == [] and b.seconds == {}
