"""The README's Python example runs as written and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(section: str) -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_the_selection_example_runs():
    blocks = python_blocks("Python API")
    assert len(blocks) == 2  # the selection example, then the stages (which need real data)
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    sel, rand = scope["sel"], scope["rand"]
    assert sel.indices_.shape == (64,) and rand.indices_.shape == (64,)
    doc = sel.result().to_json()
    assert doc["indices"] == sel.indices_.tolist() and doc["poo"] == sel.objective_
    assert not np.array_equal(sel.indices_, rand.indices_)


def test_the_stages_example_names_real_functions():
    import goracs.evaluate.run as run
    import goracs.features as features
    import goracs.records as records
    import goracs.train as train

    code = python_blocks("Python API")[1]
    for module, name in re.findall(r"from (goracs[\w.]*) import (.+)", code):
        mod = {"goracs.features": features, "goracs.records": records, "goracs.train": train,
               "goracs.evaluate.run": run}[module]
        for n in (x.strip() for x in name.split(",")):
            assert callable(getattr(mod, n)), f"{module}.{n}"
