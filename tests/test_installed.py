""" Installed use, the way Colab or a JupyterHub gets the package: `pip install .` (not editable) into a fresh
venv from a clean copy of the repository (conftest.install_package); then, with the working directory outside the
checkout, the example data and the lessons come from site-packages.

The student versions of the lessons, written by the installed package's CLI, run from that install in
tests/test_browser.py (JupyterLab in Chromium, Run All). Where that test cannot run (no Chromium or Playwright),
test_lessons_run_from_the_install_outside_the_checkout runs them here without a browser instead. """

import importlib.util
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT, install_package, run_ok as run

pytestmark = pytest.mark.installed

CHROMIUM = os.environ.get("MINILATENT_CHROMIUM", "/usr/bin/chromium")
BROWSER_TEST_RUNS = os.path.exists(CHROMIUM) and importlib.util.find_spec("playwright") is not None


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("installed")
    py, env, site = install_package(base)
    work = base / "class"
    work.mkdir()
    return py, env, work, site


def test_package_data_comes_from_site_packages(installed):
    py, env, work, site = installed
    r = run([py, "-c", "import minilatent, minilatent.datafiles as F, minilatent.lessons as L; "
                       "print(minilatent.__file__); print(F.eg_path('lorenz')); print(L.lesson_dir()); "
                       "print(len(F.load_h5(F.eg_path('rotation'))['train_encod_data']))"], env=env, cwd=work)
    pkg, lorenz, lessons, n = r.stdout.split()
    for p in (pkg, lorenz, lessons):
        assert p.startswith(site), f"{p} is not inside the installed package ({site})"
        assert not p.startswith(ROOT)
    assert os.path.getsize(lorenz) == os.path.getsize(os.path.join(ROOT, "eg_data", "lorenz.h5"))
    assert sorted(os.listdir(lessons)) == sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks"))
                                                 if f.endswith(".ipynb"))
    assert int(n) > 0


def test_the_installed_package_has_its_compiled_kernels(installed):
    # the .cpp files are package data: without them an install would run pure torch and say so
    py, env, work, site = installed
    if shutil.which(env.get("CXX", "g++")) is None or env.get("MINILATENT_NATIVE") == "0":
        pytest.skip("no C++ compiler here (or MINILATENT_NATIVE=0)")
    r = run([py, "-W", "error::UserWarning", "-c", "import minilatent.sparks as S, minilatent.circuits as C; "
             "print(S.native_kernel() is not None, C.native_kernel() is not None, S._NATIVE['error'], S.__file__)"],
            env=env, cwd=work)
    assert r.stdout.split()[:3] == ["True", "True", "None"], r.stdout
    assert r.stdout.split()[3].startswith(site)


RUNNER = """
import json, os, sys
import nbformat
from nbclient import NotebookClient
out = {}
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    # a last cell reports where the kernel found the package
    nb.cells.append(nbformat.v4.new_code_cell("import minilatent; print(minilatent.__file__)"))
    NotebookClient(nb, timeout=600, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(path)}}).execute()
    errors = {i: o["ename"] for i, c in enumerate(nb.cells) if c.cell_type == "code"
              for o in c.outputs if o["output_type"] == "error"}
    where = "".join(o.get("text", "") for o in nb.cells[-1].outputs).strip()
    out[os.path.basename(path)] = {"errors": errors, "package": where}
print(json.dumps(out))
"""


@pytest.mark.skipif(BROWSER_TEST_RUNS, reason="tests/test_browser.py runs the installed student versions in JupyterLab")
def test_lessons_run_from_the_install_outside_the_checkout(installed):
    """ The student version of every lesson, written by the installed package's CLI into an empty folder, runs
    from top to bottom in fast mode with each exercise stub raising NotImplementedError exactly there and no error
    in any other cell; the kernel imports the installed package. """
    py, env, work, site = installed
    env = dict(env, MINILATENT_FAST="1")
    r = subprocess.run([py, "-m", "minilatent", "lessons", "student", "student"], env=env, cwd=work,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from minilatent import lessons as L
    names = sorted(os.listdir(work / "student"))
    assert names == sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks")) if f.endswith(".ipynb"))
    r = run([py, "-c", RUNNER] + [str(work / "student" / n) for n in names], env=env, cwd=work)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    problems = []
    for n in names:
        st = L.read_notebook(work / "student" / n)
        want = {str(i): "NotImplementedError" for i, c in enumerate(st["cells"]) if "exercise" in L.tags(c)}
        if not want:
            problems.append(f"{n}: no exercise")
        errors = got[n]["errors"]
        for i in sorted(set(errors) | set(want), key=int):
            if errors.get(i) != want.get(i):
                first = L.source(st["cells"][int(i)]).strip().splitlines()[0][:60]
                problems.append(f"{n} cell {i} ({first}): raised {errors.get(i)}, expected {want.get(i)}")
        if not got[n]["package"].startswith(site):
            problems.append(f"{n}: the kernel imported minilatent from {got[n]['package']}")
    assert not problems, "; ".join(problems)
