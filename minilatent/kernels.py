"""
The builder of minilatent's optional compiled kernels: a C++ file -> a shared library, cached, called through ctypes.

Two model files have a kernel: sparks.py (sparks_kernel.cpp: the Hebbian recurrence and its adjoint scan) and
circuits.py (circuits_kernel.cpp: the sparse gather-sum). Both compute the same equations in pure torch as well; a
kernel only makes them faster on a CPU. A model file imports no part of the package (it must work when copied alone),
so it looks for this file and its .cpp beside itself and loads this file by its path; when they are not there it says
so once and runs in pure torch. This file imports only the standard library.

Building: the system C++ compiler ($CXX, default g++) with FLAGS, once per (source, compiler, flags, CPU). The library
is cached in $MINILATENT_CACHE (default ~/.cache/minilatent) under a name made from that key and moved into place
atomically, so concurrent processes and later runs just load it. The CPU is in the key because of -march=native: a
library built on another machine that shares the home directory could stop on an illegal instruction.

Measured on the 2-core development machine (g++ 12): sparks_kernel.cpp compiles in 5.4 s at load 1 (8-9 s at load 4;
circuits_kernel.cpp 0.6 s), the same as the Python-string build this replaced; a cached kernel loads in 2-6 ms (this
file run, the key hashed, the library opened). torch.utils.cpp_extension.load(..., is_python_module=False) builds the
same files in the same time (5.1 s / 0.5 s) but needs ninja, adds 0.15 s of imports to every warm load and keys its
cache by name, not by CPU; its usual form (#include <torch/extension.h>, pybind11) spends 30 s on the headers alone.
So: the plain compiler call.

    python minilatent/kernels.py      # build (or find in the cache) every kernel beside this file, with timings
"""

import ctypes
import hashlib
import os
import platform
import subprocess
import sys
import tempfile
import time

FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
TIMEOUT_S = 180                     # a compile that takes longer than this has hung
C_TYPES = {"ptr": ctypes.c_void_p, "i64": ctypes.c_int64, "double": ctypes.c_double, "int": ctypes.c_int}


def compiler():
    return os.environ.get("CXX", "g++")


def cache_dir():
    return os.environ.get("MINILATENT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "minilatent"))


def cpu_tag():
    """ what -march=native depends on: the CPU's model name and feature flags """
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(line for line in f if line.startswith(("model name", "flags")))
    except OSError:
        return platform.machine() + platform.processor()


def cache_key(source: bytes, cxx: str, flags, cpu: str) -> str:
    return hashlib.sha256(source + "\0".join([cxx, " ".join(flags), cpu]).encode()).hexdigest()[:16]


def library_path(cpp_path, cxx=None, flags=None):
    """ where the library built from cpp_path lives in the cache (it may not exist yet) """
    with open(cpp_path, "rb") as f:
        source = f.read()
    key = cache_key(source, cxx or compiler(), FLAGS if flags is None else flags, cpu_tag())
    stem = os.path.splitext(os.path.basename(cpp_path))[0]
    return os.path.join(cache_dir(), f"{stem}_{key}.so")


def build(cpp_path):
    """ The path of the library built from cpp_path, compiled now unless the cache has it. Raises OSError (no compiler:
    FileNotFoundError) or subprocess.SubprocessError (the compiler failed or hung). """
    cxx = compiler()
    path = library_path(cpp_path, cxx)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with tempfile.TemporaryDirectory(dir=os.path.dirname(path)) as tmp:
            out = os.path.join(tmp, os.path.basename(path))
            subprocess.run([cxx, *FLAGS, "-o", out, cpp_path], check=True, capture_output=True, text=True,
                           timeout=TIMEOUT_S)
            os.replace(out, path)      # atomic: a concurrent process sees no library or the finished one
    return path


def parse_signature(signature):
    """ "u m: ptr; T B: i64; lo: double; n: int" -> [("u", "ptr"), ("m", "ptr"), ("T", "i64"), ...]: a C function's
    parameters in order, with their types (ptr: any pointer) """
    params = []
    for group in signature.split(";"):
        names, kind = group.split(":")
        if kind.strip() not in C_TYPES:
            raise ValueError(f"signature {signature!r}: unknown type {kind.strip()!r}; known: {sorted(C_TYPES)}")
        params += [(name, kind.strip()) for name in names.split()]
    return params


class Kernel:
    """ a compiled C function called by parameter name: kernel(u=..., T=...). An object with data_ptr() (a tensor)
    is passed by its address, None as a null pointer; a missing or unknown name is a KeyError, never a wrong pointer """

    def __init__(self, lib, name, signature):
        params = parse_signature(signature)
        self.lib, self.name, self.names = lib, name, [n for n, _ in params]   # lib: keeps the library loaded
        self.expected = set(self.names)
        self.fn = getattr(lib, name)
        self.fn.argtypes, self.fn.restype = [C_TYPES[t] for _, t in params], None

    def __call__(self, **args):
        if args.keys() != self.expected:
            raise KeyError(f"{self.name}: arguments {sorted(args)} do not match its parameters {self.names}")
        self.fn(*[args[n].data_ptr() if hasattr(args[n], "data_ptr") else args[n] for n in self.names])


def load(cpp_path, signatures):
    """ ({name: Kernel}, None) for the C functions of cpp_path, built or taken from the cache, or (None, why not).
    signatures: {C function name: its parameters in order, as parse_signature reads them}. """
    try:
        lib = ctypes.CDLL(build(cpp_path))
        return {name: Kernel(lib, name, sig) for name, sig in signatures.items()}, None
    except subprocess.CalledProcessError as e:          # say what the compiler said, not only its exit status
        last = (e.stderr or "").strip().splitlines()[-3:]
        return None, f"CalledProcessError: {os.path.basename(e.cmd[0])} exited with {e.returncode}: {' | '.join(last)}"
    except (OSError, AttributeError, subprocess.SubprocessError) as e:
        return None, f"{type(e).__name__}: {e}"


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    for cpp in sorted(f for f in os.listdir(here) if f.endswith(".cpp")):
        t0 = time.perf_counter()
        try:
            path = build(os.path.join(here, cpp))
            print(f"{cpp}: {path} ({time.perf_counter() - t0:.2f} s)")
        except (OSError, subprocess.SubprocessError) as e:
            print(f"{cpp}: not built ({type(e).__name__}: {e})", file=sys.stderr)
