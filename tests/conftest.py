import os
import subprocess
import sys
import textwrap

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
    guard = textwrap.dedent("""
        import sys
        sys.path = [p for p in sys.path if 'minilatent' not in p and p not in ('', {root!r})]
        sys.path.insert(0, {here!r})
        sys.meta_path = [f for f in sys.meta_path if 'editable' not in type(f).__name__.lower()
                         and 'editable' not in getattr(f, '__module__', '').lower()]
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
