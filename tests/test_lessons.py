""" The lesson generator (minilatent/lessons.py): its logic on small synthetic notebooks, and the student and
instructor versions of every real lesson against the marking scheme (no solution code in the student version,
no answers, no outputs, matching signatures, instructor == source minus outputs). Each student version is
run top to bottom in tests/test_installed.py, from the installed package (with run_errors below). """

import ast
import json
import os
import subprocess
import sys

import pytest

from minilatent import lessons as L

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
LESSONS = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))


# ----------------------------------------------------------------------------- synthetic notebooks

def code(src, tags=(), outputs=None, count=None):
    return {"cell_type": "code", "metadata": {"tags": list(tags)} if tags else {}, "source": src,
            "outputs": outputs or [], "execution_count": count}


def md(src, tags=()):
    return {"cell_type": "markdown", "metadata": {"tags": list(tags)} if tags else {}, "source": src}


STUB = ('def double(x):\n    """ x: a number """\n    raise NotImplementedError("Student exercise: double x")\n'
        '\ndouble(2)\n')
SOLUTION = ('def double(x):\n    """ x: a number """\n    twice = x + x\n    return twice\n\n'
            'assert double(2) == 4\n')
ANSWER = "<details><summary>Answer</summary>Because 2 + 2 = 4.</details>"


def lesson(*extra):
    """ a small notebook on the scheme: setup, stub, solution, a question with its answer, a later cell """
    out = [{"output_type": "stream", "name": "stdout", "text": "hello\n"}]
    cells = [code("import math\nprint('hello')", outputs=out, count=1),
             code(STUB, ["exercise", "raises-exception"]),
             code(SOLUTION, ["solution"], outputs=out, count=3),
             md("**Think!** why is double(2) four?"),
             md(ANSWER, ["answer"]),
             code("print(math.sqrt(16))", ["nbval-ignore-output"], outputs=out, count=4)] + list(extra)
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def write(folder, name, nb):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as f:
        json.dump(nb, f)
    return folder


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "minilatent", "lessons", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def tag_set(c):
    return set(c.get("metadata", {}).get("tags", []))


# ----------------------------------------------------------------------------- the generator's logic

def test_student_version_of_a_synthetic_lesson():
    nb = lesson()
    st = L.student_version(nb, "x.ipynb")
    srcs = [L.source(c) for c in st["cells"]]
    assert len(st["cells"]) == len(nb["cells"]) - 1                   # the answer cell is gone
    assert ANSWER not in srcs and not any("answer" in tag_set(c) for c in st["cells"])
    assert STUB in srcs                                               # the stub stays, tags and all
    assert tag_set(st["cells"][1]) == {"exercise", "raises-exception"}
    assert st["cells"][2]["cell_type"] == "markdown" and st["cells"][2]["source"] == L.POINTER
    # the pointer gives nothing away: it names the teacher's copy, never a command that prints the answer key
    assert "instructor's copy" in L.POINTER
    assert "python -m" not in L.POINTER and "lessons instructor" not in L.POINTER
    text = "\n".join(srcs)
    assert "twice" not in text and "assert double(2) == 4" not in text
    for c in st["cells"]:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None
    assert nb["cells"][0]["outputs"], "the source must be left untouched"


def test_instructor_version_is_the_source_without_outputs():
    nb = lesson()
    ins = L.instructor_version(nb, "x.ipynb")
    assert [L.source(c) for c in ins["cells"]] == [L.source(c) for c in nb["cells"]]
    assert [c["metadata"] for c in ins["cells"]] == [c["metadata"] for c in nb["cells"]]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in ins["cells"] if c["cell_type"] == "code")


@pytest.mark.parametrize("cells, message", [
    ([code(STUB, ["exercise", "raises-exception"]), code("x = 1")], "cell 0: exercise stub not followed by a 'solution'"),
    ([code(STUB, ["exercise", "raises-exception"])], "cell 0: exercise stub not followed by a 'solution'"),
    ([code("x = 1"), code(SOLUTION, ["solution"])], "cell 1: solution cell without an exercise stub"),
    ([code(STUB, ["exercise"]), code(SOLUTION, ["solution"])], "cell 0: exercise stub without the 'raises-exception'"),
    ([code("# NBVAL_RAISES_EXCEPTION\n" + STUB)], "cell 0: comment marker '# NBVAL_RAISES_EXCEPTION'"),
    ([code("# solution\nx = 1")], "cell 0: comment marker '# solution'"),
    ([code(STUB, ["exercise", "raises-exception"]), code(SOLUTION.replace("double(x)", "double(x, y=1)"),
                                                         ["solution"])], "cell 1: solution of double(x) has (x, y=1)"),
    ([code(STUB, ["exercise", "raises-exception"]), code(SOLUTION.replace("def double", "def triple"),
                                                         ["solution"])], "solution of double(x) has no such function"),
    ([code("def f(x):\n    return x", ["exercise", "raises-exception"]), code("def f(x):\n    return 2", ["solution"])],
     "cell 0: exercise stub does not raise NotImplementedError"),
    ([code("x = 1", ["answer"])], "cell 0: 'answer' tag on a code cell"),
    ([md("the answer is 4", ["answer"])], "cell 0: answer cell without a collapsed <details>"),
    ([md("x", ["solution"])], "cell 0: 'solution' tag on a markdown cell"),
])
def test_scheme_violations_are_one_line_errors(cells, message):
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    with pytest.raises(L.LessonError) as e:
        L.student_version(nb, "bad.ipynb")
    assert str(e.value).startswith("bad.ipynb ") and message in str(e.value) and "\n" not in str(e.value)


def test_magics_in_a_lesson_do_not_break_the_signature_check():
    nb = lesson()
    nb["cells"].insert(0, code("import importlib.util\nif importlib.util.find_spec('minilatent') is None:\n"
                               "    %pip install -q minilatent"))
    assert L.check_lesson(nb, "x.ipynb") == 1


def test_cli_writes_both_versions_and_refuses_a_used_folder(tmp_path):
    src = write(tmp_path / "src", "a.ipynb", lesson())
    write(src, "b.ipynb", lesson())
    r = cli("student", tmp_path / "st", "--source", src)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "st")) == ["a.ipynb", "b.ipynb"]
    st = json.load(open(tmp_path / "st" / "a.ipynb"))
    assert st["cells"] == L.student_version(lesson())["cells"]
    # a folder with files in it is refused (exit 2, one line, nothing written), unless --overwrite
    (tmp_path / "ins").mkdir()
    (tmp_path / "ins" / "notes.txt").write_text("mine")
    r = cli("instructor", tmp_path / "ins", "--source", src)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--overwrite" in r.stderr
    assert os.listdir(tmp_path / "ins") == ["notes.txt"]
    r = cli("instructor", tmp_path / "ins", "--source", src, "--overwrite")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "ins")) == ["a.ipynb", "b.ipynb", "notes.txt"]


def test_lessons_help_has_a_description_and_examples():
    """ `lessons --help` reads like the other commands': what it does, then examples of each kind """
    r = cli("--help")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    flat = " ".join(out.split("examples:")[0].split())
    assert "Write the two versions of every lesson" in flat and "pointer to the instructor's copy" in flat
    examples = out.split("examples:\n", 1)[1].splitlines()
    for kind in ("student", "instructor", "html"):
        assert any(e.strip().startswith(f"python -m minilatent lessons {kind} ") for e in examples), kind
    # the same layout as the other commands (train lfads --help)
    other = subprocess.run([sys.executable, "-m", "minilatent", "train", "lfads", "--help"], capture_output=True,
                           text=True, timeout=600).stdout
    assert "examples:\n  python -m minilatent train lfads" in other


def test_cli_refuses_a_lesson_off_the_scheme_before_writing(tmp_path):
    src = write(tmp_path / "src", "a.ipynb", lesson())
    bad = lesson()
    del bad["cells"][2]                                               # the stub loses its solution
    write(src, "b.ipynb", bad)
    r = cli("student", tmp_path / "out", "--source", src)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("error: b.ipynb cell 1: exercise stub not followed by a 'solution'")
    assert not (tmp_path / "out").exists()
    r = cli("student", tmp_path / "out", "--source", tmp_path / "nowhere")
    assert r.returncode == 2 and "no lessons folder" in r.stderr and r.stderr.count("\n") == 1


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


def test_student_version_runs_with_only_the_stub_raising(tmp_path):
    st = L.student_version(lesson(), "x.ipynb")
    assert run_errors(st, tmp_path) == {1: "NotImplementedError"}
    # a later cell that calls the student's function fails in the student version: the run test sees it
    # (test_installed.py::test_student_versions_run_to_the_end applies the same check to every lesson)
    st = L.student_version(lesson(code("print(double(3))")), "x.ipynb")
    assert run_errors(st, tmp_path) == {1: "NotImplementedError", len(st["cells"]) - 1: "NotImplementedError"}


def test_html_of_a_small_lesson(tmp_path):
    pytest.importorskip("nbconvert")
    src = write(tmp_path / "src", "a.ipynb", lesson(code("print('computed', 6 * 7)")))
    r = cli("html", tmp_path / "web", "--source", src)
    assert r.returncode == 0, r.stderr
    page = (tmp_path / "web" / "a.html").read_text()
    assert "computed 42" in page                                      # executed: the output is on the page
    assert "NotImplementedError" in page and "Student exercise" in page
    assert 'href="a.html"' in (tmp_path / "web" / "index.html").read_text()
    # a lesson whose cell fails outside a stub stops the build with one line
    src2 = write(tmp_path / "src2", "b.ipynb", lesson(code("1 / 0")))
    r = cli("html", tmp_path / "web2", "--source", src2)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == "error: b.ipynb: a cell raised ZeroDivisionError: "\
        "division by zero"                            # (lines above it are the kernel's own start-up warnings)


# ----------------------------------------------------------------------------- every real lesson

@pytest.fixture(params=LESSONS)
def real(request):
    nb = L.read_notebook(os.path.join(NB_DIR, request.param))
    return request.param, nb, L.student_version(nb, request.param), L.instructor_version(nb, request.param)


def code_lines(text):
    return {s.strip() for s in text.splitlines() if s.strip() and not s.strip().startswith("#")}


def test_student_version_holds_no_solution_code(real):
    name, nb, st, ins = real
    shared = set()                                    # lines the source also has outside solutions (e.g. `def f(x):`)
    for c in nb["cells"]:
        if "solution" not in tag_set(c):
            shared |= code_lines(L.source(c))
    student_text = "\n".join(L.source(c) for c in st["cells"])
    student_lines = code_lines(student_text)
    n = 0
    for c in ins["cells"]:
        if "solution" in tag_set(c):
            for line in code_lines(L.source(c)) - shared:
                assert line not in student_lines, f"{name}: solution line in the student version: {line}"
                n += 1
    assert n > 0, f"{name}: its solutions have no line of their own"
    assert not any(tag_set(c) & {"answer", "solution"} for c in st["cells"])
    assert "<details" not in student_text
    # nor a command that would print the answer key: a student with the package could run it
    assert "lessons instructor" not in student_text, f"{name}: the student version names the key's command"
    for c in st["cells"]:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None


def test_stub_signatures_equal_solution_signatures(real):
    name, nb, _, _ = real
    cells = nb["cells"]
    pairs = [(cells[i], cells[i + 1]) for i, c in enumerate(cells) if "exercise" in tag_set(c)]
    assert pairs
    for stub, sol in pairs:
        def sigs(c):
            tree = ast.parse("\n".join("" if s.lstrip().startswith(("%", "!")) else s
                                       for s in L.source(c).splitlines()))
            return {f.name: ast.dump(f.args) for f in tree.body if isinstance(f, ast.FunctionDef)}
        s, t = sigs(stub), sigs(sol)
        assert s and all(t.get(k) == v for k, v in s.items()), f"{name}: {sorted(s)} differ"
        assert "raise NotImplementedError(\"Student exercise" in L.source(stub)


def test_instructor_version_equals_source_without_outputs(real):
    name, nb, _, ins = real
    assert len(ins["cells"]) == len(nb["cells"])
    for a, b in zip(nb["cells"], ins["cells"]):
        assert L.source(a) == L.source(b) and a["cell_type"] == b["cell_type"] and tag_set(a) == tag_set(b)
        if b["cell_type"] == "code":
            assert b["outputs"] == [] and b["execution_count"] is None


def test_first_cell_installs_only_where_the_package_is_missing(real):
    """ the Colab/JupyterHub line: every %pip sits under `if find_spec("minilatent") is None`, which is False here
    (and in tests/test_installed.py, where the lessons run from a non-editable install) """
    import importlib.util
    name, nb, _, _ = real
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    lines = L.source(first).splitlines()
    guard = [i for i, s in enumerate(lines) if s.startswith("if importlib.util.find_spec(\"minilatent\") is None")]
    assert guard, f"{name}: the first code cell does not guard its install with find_spec('minilatent')"
    for c in nb["cells"]:
        for i, s in enumerate(L.source(c).splitlines()):
            if s.lstrip().startswith(("%pip", "!pip")):
                assert c is first and s.startswith((" ", "\t")) and guard[0] < i, f"{name}: unguarded {s.strip()}"
    assert importlib.util.find_spec("minilatent") is not None


def test_cli_writes_every_shipped_lesson(tmp_path):
    r = cli("student", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "out")) == LESSONS


def test_glossary_of_lesson_00_equals_docs_glossary():
    """ the glossary lives in docs/glossary.md and, for readers of the notebooks alone, in lesson 00: the same list """
    with open(os.path.join(ROOT, "docs", "glossary.md"), encoding="utf-8") as f:
        doc = f.read()
    nb = L.read_notebook(os.path.join(NB_DIR, "00_spikes_and_rates.ipynb"))
    cell = [L.source(c) for c in nb["cells"] if L.source(c).startswith("### Glossary")]
    assert len(cell) == 1, "lesson 00 has no (or several) '### Glossary' cells"
    first = "**Spikes and scores**"
    assert doc[doc.index(first):].strip() == cell[0][cell[0].index(first):].strip()
    terms = [line.split("**")[1] for line in doc.splitlines() if line.startswith("- **")]
    for t in ("spike count", "bin", "Poisson likelihood", "bits/spike", "co-bps", "held-out neuron", "PSTH",
              "smoothing baseline", "latent factor", "initial condition", "generator", "controller, inferred input",
              "KL divergence", "ELBO", "coordinated dropout", "attention", "E/I balance", "short-term plasticity",
              "attractor", "fixed point", "slow point", "Jacobian"):
        assert any(t == term or term.startswith(t) for term in terms), t
