""" Every lesson's student version runs from top to bottom (fast mode, a fresh kernel) with each exercise stub
raising NotImplementedError exactly there and no error in any other cell: what a student sees after Run All. """

import os

import pytest

from minilatent import lessons as L

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
LESSONS = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))


def run_errors(nb, cwd, timeout=600):
    """ execute notebook dict `nb` in a fresh kernel with MINILATENT_FAST=1, running every cell whatever
    fails; returns {cell index: exception name} of the cells that raised """
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    node = nbformat.from_dict(nb)
    old = os.environ.get("MINILATENT_FAST")
    os.environ["MINILATENT_FAST"] = "1"                  # the kernel inherits this process's environment
    try:
        nbclient.NotebookClient(node, timeout=timeout, allow_errors=True, kernel_name="python3",
                                resources={"metadata": {"path": str(cwd)}}).execute()
    finally:
        if old is None:
            os.environ.pop("MINILATENT_FAST")
        else:
            os.environ["MINILATENT_FAST"] = old
    return {i: o["ename"] for i, c in enumerate(node.cells) if c.cell_type == "code"
            for o in c.outputs if o["output_type"] == "error"}


@pytest.mark.parametrize("name", LESSONS)
def test_student_version_runs_to_the_end(name, tmp_path):
    nb = L.read_notebook(os.path.join(NB_DIR, name))
    stubs = [i for i, c in enumerate(nb["cells"]) if "exercise" in L.tags(c)]
    if not stubs:
        pytest.skip(f"{name} has no cells tagged 'exercise' yet (marking scheme not applied)")
    st = L.student_version(nb, name)
    want = {i: "NotImplementedError" for i, c in enumerate(st["cells"]) if "exercise" in L.tags(c)}
    assert len(want) == len(stubs)
    got = run_errors(st, tmp_path)
    wrong = {i: (got.get(i), want.get(i), L.source(st["cells"][i]).strip().splitlines()[0][:60])
             for i in set(got) | set(want) if got.get(i) != want.get(i)}
    assert not wrong, f"{name}: cell: (raised, expected, first line): {wrong}"
