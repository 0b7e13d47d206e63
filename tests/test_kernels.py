""" The optional compiled kernels: the builder (minilatent/kernels.py) and how a copied model finds it or goes without """

import os
import shutil

import pytest
import torch

from minilatent import kernels

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "minilatent")

# per model file: its kernel, and a snippet that runs it twice (two models, two passes each) and prints the max
# difference between the default path and pure torch (native=False)
MODELS = {
    "sparks.py": ("sparks_kernel.cpp", """
        import sparks as model
        def run():
            torch.manual_seed(0)
            cfg = model.SPARKSConfig(n_neurons=6, n_outputs=2, embed_dim=8, latent_dim=3, tau_p=2, dec_hidden=8)
            x, y = (torch.rand(3, 20, 6) < 0.3).float(), torch.randn(3, 20, 2)
            diff = 0.0
            for _ in range(2):
                a, b = model.SPARKS(cfg), model.SPARKS(cfg)
                b.load_state_dict(a.state_dict())
                for blk in b.blocks:
                    blk.attn.native = False
                torch.manual_seed(1)
                la = a.compute_losses((x, y))["loss"]
                torch.manual_seed(1)                 # the same latent samples
                lb = b.compute_losses((x, y))["loss"]
                la.backward(); lb.backward()
                diff = max([diff, abs(la.item() - lb.item())] + [(p.grad - q.grad).abs().max().item()
                                                                 for p, q in zip(a.parameters(), b.parameters())])
            return diff
        def require():
            model.SPARKS(model.SPARKSConfig(n_neurons=6, native=True))
        """),
    "circuits.py": ("circuits_kernel.cpp", """
        import circuits as model
        def run():
            cfg = model.CircuitConfig(sizes=(200, 100), K=20, gain=0.5, seed=0)
            diff = 0.0
            for _ in range(2):
                a, b = model.Circuit(cfg), model.Circuit(cfg, native=False)
                M0 = torch.tensor([0.1, 0.2])
                ra, rb = a.simulate(0.02, M0=M0)["rates"], b.simulate(0.02, M0=M0)["rates"]
                diff = max(diff, (ra - rb).abs().max().item())
            return diff
        def require():
            model.Circuit(model.CircuitConfig(sizes=(30, 20), K=5), native=True)
        """),
}


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_a_model_copied_alone_runs_in_pure_torch_and_says_so_once(copied_model, filename):
    cpp, model = MODELS[filename]
    out = copied_model(filename, """
        import os, warnings
        import torch
        os.environ.pop("MINILATENT_NATIVE", None)
        """ + model + """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")          # a notice given on every call would be recorded every time
            assert run() == 0.0                      # the default path is the pure-torch path, bit for bit
            assert model.native_kernel() is None
        notices = [str(w.message) for w in caught if "compiled kernel is not available" in str(w.message)]
        assert len(notices) == 1, notices
        print("NOTICE", notices[0])
        try:
            require()
            raise AssertionError("native=True ran without the kernel")
        except RuntimeError as e:
            assert "kernels.py and CPP are not beside" in str(e) and "pip install" in str(e), e
        model._NATIVE.update(tried=False)            # MINILATENT_NATIVE=0 asks for pure torch: nothing to say
        os.environ["MINILATENT_NATIVE"] = "0"
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert model.native_kernel() is None and "MINILATENT_NATIVE=0" in model._NATIVE["error"]
        """.replace("CPP", cpp))
    notice = out.split("NOTICE ", 1)[1]
    assert f"kernels.py and {cpp} are not beside {filename}" in notice and "pip install" in notice


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_a_model_copied_with_the_builder_and_its_cpp_runs_the_compiled_kernel(copied_model, tmp_path, filename):
    cpp, model = MODELS[filename]
    if shutil.which(kernels.compiler()) is None or os.environ.get("MINILATENT_NATIVE") == "0":
        pytest.skip("no C++ compiler here (or MINILATENT_NATIVE=0)")
    for f in ("kernels.py", cpp):
        shutil.copy(os.path.join(PKG, f), tmp_path / f)
    copied_model(filename, """
        import warnings
        import torch
        """ + model + """
        with warnings.catch_warnings():
            warnings.simplefilter("error")           # no notice
            diff = run()
        assert model.native_kernel() is not None, model._NATIVE["error"]
        assert model._NATIVE["error"] is None
        assert "kernels" not in sys.modules          # the builder was loaded by path, not imported
        assert diff < 1e-4, diff                     # the kernel: the same numbers to float32 rounding
        require()
        print("compiled", diff)
        """)


def test_the_cache_key_follows_the_source_the_compiler_the_flags_and_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("MINILATENT_CACHE", str(tmp_path / "cache"))
    cpp = tmp_path / "k.cpp"
    cpp.write_text('extern "C" int one() { return 1; }\n')
    base = kernels.library_path(str(cpp))
    assert os.path.dirname(base) == str(tmp_path / "cache") and os.path.basename(base).startswith("k_")
    assert kernels.library_path(str(cpp)) == base
    assert kernels.library_path(str(cpp), flags=kernels.FLAGS + ["-ffast-math"]) != base
    assert kernels.library_path(str(cpp), cxx="clang++") != base
    monkeypatch.setenv("CXX", "clang++")
    assert kernels.library_path(str(cpp)) == kernels.library_path(str(cpp), cxx="clang++")
    monkeypatch.delenv("CXX")
    monkeypatch.setattr(kernels, "cpu_tag", lambda: "another CPU")
    assert kernels.library_path(str(cpp)) != base
    monkeypatch.undo()
    monkeypatch.setenv("MINILATENT_CACHE", str(tmp_path / "cache"))
    cpp.write_text('extern "C" int one() { return 2; }\n')
    assert kernels.library_path(str(cpp)) != base


def test_the_builder_builds_once_calls_by_name_and_says_why_it_could_not(tmp_path, monkeypatch):
    if shutil.which(kernels.compiler()) is None:
        pytest.skip("no C++ compiler here")
    monkeypatch.setenv("MINILATENT_CACHE", str(tmp_path / "cache"))
    cpp = tmp_path / "axpy.cpp"
    cpp.write_text('#include <cstdint>\nextern "C" void axpy(double a, const double* x, double* y, int64_t n) '
                   '{ for (int64_t i = 0; i < n; ++i) y[i] += a * x[i]; }\n')
    sig = {"axpy": "a: double; x y: ptr; n: i64"}
    fns, why = kernels.load(str(cpp), sig)
    assert why is None and os.listdir(tmp_path / "cache") == [os.path.basename(kernels.library_path(str(cpp)))]
    x, y = torch.arange(4.0, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    fns["axpy"](y=y, x=x, n=4, a=2.0)                     # by name, in any order
    assert y.tolist() == [1.0, 3.0, 5.0, 7.0]
    with pytest.raises(KeyError, match="axpy"):
        fns["axpy"](x=x, y=y, a=2.0)                      # a missing parameter, not a wrong pointer
    stamp = os.path.getmtime(kernels.library_path(str(cpp)))
    assert kernels.load(str(cpp), sig)[1] is None         # the second time from the cache
    assert os.path.getmtime(kernels.library_path(str(cpp))) == stamp
    assert kernels.load(str(cpp), {"nope": "x: ptr"})[1].startswith("AttributeError")   # no such function
    bad = tmp_path / "bad.cpp"
    bad.write_text("this is not C++\n")
    fns, why = kernels.load(str(bad), sig)
    assert fns is None and why.startswith("CalledProcessError") and "error" in why      # the compiler's words
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    assert kernels.load(str(cpp), sig)[1].startswith("FileNotFoundError")
    with pytest.raises(ValueError, match="unknown type"):
        kernels.parse_signature("x: float")


def test_a_tensor_the_kernel_cannot_run_never_builds_it(monkeypatch):
    from minilatent import sparks

    def no_build():
        raise AssertionError("the kernel was built for a tensor it cannot run on")
    monkeypatch.setattr(sparks, "native_kernel", no_build)
    u = torch.zeros(3, 2, 4, dtype=torch.bfloat16)        # (T, B, N); a CUDA tensor takes the same path
    assert sparks._kernel_for(u, native=None) is None
    with pytest.raises(RuntimeError, match="native=True.*bfloat16"):
        sparks._kernel_for(u, native=True)


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_a_model_pasted_into_a_notebook_looks_in_the_working_directory(tmp_path, monkeypatch, filename):
    cpp = MODELS[filename][0]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MINILATENT_NATIVE", raising=False)
    with open(os.path.join(PKG, filename)) as f:
        code = compile(f.read(), "<cell>", "exec")
    ns = {"__name__": "__main__"}                         # a notebook cell has no __file__
    exec(code, ns)
    with pytest.warns(UserWarning, match=f"kernels.py and {cpp} are not beside {filename}"):
        assert ns["native_kernel"]() is None
    if shutil.which(kernels.compiler()) is not None:
        for f in ("kernels.py", cpp):
            shutil.copy(os.path.join(PKG, f), tmp_path / f)
        ns["_NATIVE"].update(tried=False)
        assert ns["native_kernel"]() is not None, ns["_NATIVE"]["error"]
