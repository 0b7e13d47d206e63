import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import venv
from typing import NamedTuple

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# small recurrent models are fastest (and deterministic) on one thread; see README
torch.set_num_threads(1)


def run_copied_model(tmp_path, filename, snippet, timeout=300):
    """ The copy test: copy minilatent/<filename> alone into an empty folder and run `snippet` there in a
    fresh interpreter that cannot see the package (the folder comes first on sys.path, the repository is
    not on it, and the snippet fails if any 'minilatent' module was imported). Returns stdout. """
    src = os.path.join(ROOT, "minilatent", filename)
    dst = tmp_path / filename
    dst.write_text(open(src).read())
    # the package is hidden by what it is, not by a substring of a path (a clone in a folder named 'minilatent'
    # has its venv's site-packages under .../minilatent/.venv/): importing it raises, the repository root and the
    # working directory leave sys.path, and the editable install's finder leaves sys.meta_path
    guard = textwrap.dedent("""
        import sys
        class _NoPackage:
            def find_spec(self, name, path=None, target=None):
                if name == 'minilatent' or name.startswith('minilatent.'):
                    raise ImportError('the copied file imported the package: ' + name)
        sys.meta_path = [_NoPackage()] + [f for f in sys.meta_path if 'editable' not in type(f).__name__.lower()
                                          and 'editable' not in getattr(f, '__module__', '').lower()]
        sys.path = [p for p in sys.path if p not in ('', {root!r})]
        sys.path.insert(0, {here!r})
        """).format(root=ROOT, here=str(tmp_path))
    check = textwrap.dedent("""
        leaked = sorted(m for m in sys.modules if m == 'minilatent' or m.startswith('minilatent.'))
        assert not leaked, f'the copied file imported the package: {leaked}'
        print('COPY-OK')
        """)
    code = guard + textwrap.dedent(snippet) + check
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, f"copied {filename} failed:\n{r.stdout}\n{r.stderr}"
    assert "COPY-OK" in r.stdout
    return r.stdout


def small_cfg(**kw):
    """ a tiny LFADS config for unit tests (6 neurons) """
    from minilatent.lfads import LFADSConfig
    base = dict(n_neurons=6, ic_enc_dim=8, ic_dim=4, gen_dim=10, fac_dim=3, ci_enc_dim=6, con_dim=6)
    base.update(kw)
    return LFADSConfig(**base)


def counts(B=5, T=12, N=6, rate=0.7, seed=0):
    """ Poisson counts (B, T, N) at a constant rate, from a seeded generator """
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(torch.full((B, T, N), rate), generator=g)


def write_h5(path, **arrays):
    """ write raw arrays to an HDF5 file with h5py, bypassing the package's checks (for bad-input tests) """
    import h5py
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f[k] = v
    return path


@pytest.fixture
def copied_model(tmp_path):
    return lambda filename, snippet, **kw: run_copied_model(tmp_path, filename, snippet, **kw)


@pytest.fixture(scope="module")
def lorenz():
    """ a small Lorenz data set with truth (generator and file tests) """
    from minilatent import synthetic
    return synthetic.make_lorenz(n_conditions=6, trials_per_condition=5, n_valid_per_condition=1, n_bins=40, seed=3)


# -----------------------------------------------------------------------------
# the command line, in this process: the one helper every CLI test uses

class CliResult(NamedTuple):
    code: int
    out: str
    err: str

    # the names of subprocess.CompletedProcess, so a check reads the same for both
    returncode = property(lambda self: self.code)
    stdout = property(lambda self: self.out)
    stderr = property(lambda self: self.err)


def cli(capsys, argv):
    """ run `python -m minilatent *argv` in this process (minilatent.__main__.main on str() of each argument) and
    return (code, out, err) as capsys captured them """
    from minilatent.__main__ import main
    code = main([str(a) for a in argv])
    cap = capsys.readouterr()
    return CliResult(code, cap.out, cap.err)


def run_process(*args):
    """ the command line in a real process (`python -m minilatent *args`), for the tests that are about the process
    itself (no traceback on stderr) """
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "minilatent", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)


# -----------------------------------------------------------------------------
# installed use (tests/test_installed.py, tests/test_browser.py)

SKIP_DIRS = {".venv", ".git", "build", "dist", "data", "runs", "__pycache__", ".pytest_cache", ".ipynb_checkpoints"}


def clean_copy(dst):
    """ the repository as a fresh clone has it (no venv, no build output, no egg-info, no user data) """
    def ignore(folder, names):
        return {n for n in names if n in SKIP_DIRS or n.endswith(".egg-info")}
    shutil.copytree(ROOT, dst, ignore=ignore)
    return dst


def run_ok(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def install_package(base):
    """ `pip install .` (not editable) of a clean copy of the repository into a fresh venv under base, the way
    Colab or a JupyterHub gets the package. For speed the venv borrows the dependencies (torch, JupyterLab,
    ipykernel, nbval, ...) of the venv running the tests through a .pth file instead of downloading them again; the
    package itself is installed, not linked, and the copy it came from is deleted. Returns (python, env, site). """
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running inside a venv: no site-packages to borrow the dependencies from")
    src = clean_copy(base / "repo")
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)           # pip and setuptools come through the .pth
    py = str(env_dir / "bin" / "python")
    site = run_ok([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    with open(os.path.join(site, "borrowed-deps.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    run_ok([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
            str(src)], env=env, cwd=base)
    shutil.rmtree(src)                                            # nothing may still point into the copy
    return py, env, site



# -----------------------------------------------------------------------------
# order: the Ray Tune search (a chain of process starts, about a minute or two of mostly waiting) first, so that
# `pytest -n 2 --dist loadfile` (xdist hands out files in collection order) runs it beside the rest, not after it

FIRST = "tests/test_tune.py"


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: item.nodeid.split("::")[0] != FIRST)      # stable: the rest keeps its order
