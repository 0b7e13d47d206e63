""" Installed use, the way Colab or a JupyterHub gets the package: `pip install .` (not editable) into a fresh
venv from a clean copy of the repository; then, with the working directory outside the checkout, the example
data and the lessons come from site-packages: eg_path(), and `python -m minilatent lessons student OUT` writes
the student versions into an empty folder, where each runs from top to bottom in fast mode with only its
exercise stubs raising (one pass that checks both the installed use and the student versions).

For speed the fresh venv borrows the dependencies (torch, JupyterLab, nbval, ...) of the venv running this test
through a .pth file instead of downloading them again; the package itself is installed, not linked. """

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SKIP_DIRS = {".venv", ".git", "build", "dist", "data", "runs", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}

pytestmark = pytest.mark.installed


def clean_copy(dst):
    """ the repository as a fresh clone has it (no venv, no build output, no egg-info, no user data) """
    def ignore(folder, names):
        return {n for n in names if n in SKIP_DIRS or n.endswith(".egg-info")}
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running inside a venv: no site-packages to borrow the dependencies from")
    base = tmp_path_factory.mktemp("installed")
    src = clean_copy(base / "repo")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)           # pip and setuptools come through the .pth
    py = str(env_dir / "bin" / "python")
    site = run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    with open(os.path.join(site, "borrowed-deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
         str(src)], env=env, cwd=base)
    shutil.rmtree(src)                                            # nothing may still point into the copy
    work = base / "class"
    work.mkdir()
    return py, env, work, site


def test_package_data_comes_from_site_packages(installed):
    py, env, work, site = installed
    r = run([py, "-c", "import minilatent, minilatent.data as D, minilatent.lessons as L; "
                       "print(minilatent.__file__); print(D.eg_path('lorenz')); print(L.lesson_dir()); "
                       "print(len(D.load_h5(D.eg_path('rotation'))['train_encod_data']))"], env=env, cwd=work)
    pkg, lorenz, lessons, n = r.stdout.split()
    for p in (pkg, lorenz, lessons):
        assert p.startswith(site), f"{p} is not inside the installed package ({site})"
        assert not p.startswith(ROOT)
    assert os.path.getsize(lorenz) == os.path.getsize(os.path.join(ROOT, "eg_data", "lorenz.h5"))
    assert sorted(os.listdir(lessons)) == sorted(f for f in os.listdir(os.path.join(ROOT, "notebooks"))
                                                 if f.endswith(".ipynb"))
    assert int(n) > 0


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


def lessons_on_scheme():
    from minilatent import lessons as L
    return all(any("exercise" in L.tags(c) for c in L.read_notebook(p)["cells"])
               for p in L.lesson_paths(os.path.join(ROOT, "notebooks")))


def test_lessons_run_from_the_install_outside_the_checkout(installed):
    """ The student version of every lesson, written by the installed package's CLI into an empty folder, runs
    from top to bottom in fast mode with each exercise stub raising NotImplementedError exactly there and no error
    in any other cell; the kernel imports the installed package. (Lessons not yet on the marking scheme: the CLI
    refuses them with one line, and the copied sources run under pytest --nbval-lax instead.) """
    py, env, work, site = installed
    env = dict(env, MINILATENT_FAST="1")
    r = subprocess.run([py, "-m", "minilatent", "lessons", "student", "student"], env=env, cwd=work,
                       capture_output=True, text=True)
    if not lessons_on_scheme():
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "cell" in r.stderr
        nbs = work / "notebooks"
        nbs.mkdir()
        for f in os.listdir(os.path.join(ROOT, "notebooks")):
            if f.endswith(".ipynb"):
                shutil.copy(os.path.join(ROOT, "notebooks", f), nbs / f)
        r = subprocess.run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                            "--nbval-cell-timeout=600", str(nbs)], env=env, cwd=work, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert " passed" in r.stdout and " failed" not in r.stdout
        return
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
