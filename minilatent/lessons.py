"""
The lessons as a class uses them: one source, two versions, and executed copies to read on the web.

    python -m minilatent lessons student    OUT_DIR [--overwrite]
    python -m minilatent lessons instructor OUT_DIR [--overwrite]
    python -m minilatent lessons html       OUT_DIR [--overwrite] [--full] [--timeout S]

The source of every lesson is one notebook in notebooks/ (shipped inside the installed package as
`minilatent/notebooks/`). Its cells carry their role in the cell tags (cell.metadata.tags), never in comments:

    exercise + raises-exception   a stub: the student's function, whose body ends in
                                  raise NotImplementedError("Student exercise: ..."), called so the cell raises.
                                  JupyterLab's Run All and nbval both carry on past a raises-exception cell.
    solution                      the code cell right after its stub: the same function, complete, and a check.
    answer                        a markdown cell holding only the collapsed answer to the question above it.

The student version keeps the stubs, turns each solution cell into a one-line pointer to the instructor's
copy (POINTER: it names no command that would print the answer key) and drops the answer cells; the instructor version is the source. Both are written without outputs.
Later cells never use a name that only a stub or its solution defines, so the student version runs from top
to bottom with only the stubs raising (tests/test_lessons.py runs it to check).

This module needs only the standard library for `student` and `instructor` (notebooks are JSON);
`html` executes the lessons and needs nbclient and nbconvert (installed with JupyterLab).
"""

import ast
import copy
import json
import os
import re
import sys
import textwrap

PKG = os.path.dirname(os.path.abspath(__file__))
KINDS = ("student", "instructor")
# where a student version's removed solution went: the teacher's copy, never a command a student could run
POINTER = "**Solution:** in your instructor's copy of this lesson."
# what the old comment markers looked like; a lesson on the tag scheme carries none of them
_OLD_MARKERS = re.compile(r"^\s*#\s*(NBVAL_\w+|to_remove solution|solution)\s*$", re.MULTILINE | re.IGNORECASE)


class LessonError(ValueError):
    """ a notebook that does not follow the marking scheme (one line, naming the notebook and cell) """


def lesson_dir():
    """ the folder of the source notebooks: package data when installed, notebooks/ in a checkout """
    installed = os.path.join(PKG, "notebooks")
    if os.path.isdir(installed):
        return installed
    return os.path.join(os.path.dirname(PKG), "notebooks")


def lesson_paths(folder=None):
    """ the lesson notebooks of `folder` (default: lesson_dir()), sorted by name """
    folder = folder or lesson_dir()
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no lessons folder at {folder}")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".ipynb"))
    if not paths:
        raise FileNotFoundError(f"no .ipynb lessons in {folder}")
    return paths


def read_notebook(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_notebook(nb, path):
    """ write like nbformat does (indent 1, UTF-8, final newline) so diffs against the sources stay clean """
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(nb, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


# -----------------------------------------------------------------------------
# the marking scheme


def tags(cell):
    return set(cell.get("metadata", {}).get("tags", []))


def source(cell):
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def signatures(code):
    """ {name: signature text} of the top-level functions defined in `code` """
    out = {}
    for node in ast.parse(code).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = ast.unparse(node.args)
    return out


def _parse(code, where):
    # IPython magics (%pip, !ls) are not Python: blank them out before ast sees the cell
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines()]
    try:
        return signatures("\n".join(lines))
    except SyntaxError as e:
        raise LessonError(f"{where}: does not parse ({e.msg}, line {e.lineno})") from None


def check_lesson(nb, name="notebook"):
    """ Raise LessonError (one line) where `nb` breaks the marking scheme; return the number of exercises. """
    cells = nb.get("cells")
    if not isinstance(cells, list):
        raise LessonError(f"{name}: not a notebook (no 'cells' list)")
    n_ex = 0
    for i, c in enumerate(cells):
        t, where, kind = tags(c), f"{name} cell {i}", c.get("cell_type")
        if kind == "code":
            m = _OLD_MARKERS.search(source(c))
            if m:
                raise LessonError(f"{where}: comment marker '{m.group(0).strip()}' (use cell tags instead)")
        if "exercise" in t:
            if kind != "code":
                raise LessonError(f"{where}: 'exercise' tag on a {kind} cell (exercises are code cells)")
            if "raises-exception" not in t:
                raise LessonError(f"{where}: exercise stub without the 'raises-exception' tag "
                                  "(Run All would stop there)")
            if "solution" in t:
                raise LessonError(f"{where}: one cell tagged both 'exercise' and 'solution'")
            if "NotImplementedError" not in source(c):
                raise LessonError(f"{where}: exercise stub does not raise NotImplementedError")
            nxt = cells[i + 1] if i + 1 < len(cells) else None
            if nxt is None or "solution" not in tags(nxt) or nxt.get("cell_type") != "code":
                raise LessonError(f"{where}: exercise stub not followed by a 'solution' code cell")
            stub, sol = _parse(source(c), where), _parse(source(nxt), f"{name} cell {i + 1}")
            if not stub:
                raise LessonError(f"{where}: exercise stub defines no function")
            for fn, sig in stub.items():
                if sol.get(fn) != sig:
                    got = f"({sol[fn]})" if fn in sol else "no such function"
                    raise LessonError(f"{name} cell {i + 1}: solution of {fn}({sig}) has {got}")
            n_ex += 1
        if "solution" in t:
            if kind != "code":
                raise LessonError(f"{where}: 'solution' tag on a {kind} cell (solutions are code cells)")
            if i == 0 or "exercise" not in tags(cells[i - 1]):
                raise LessonError(f"{where}: solution cell without an exercise stub right above it")
        if "answer" in t:
            if kind != "markdown":
                raise LessonError(f"{where}: 'answer' tag on a {kind} cell (answers are markdown cells)")
            if "<details" not in source(c):
                raise LessonError(f"{where}: answer cell without a collapsed <details> block")
    return n_ex


# -----------------------------------------------------------------------------
# the two versions


def _clear(cell):
    cell = copy.deepcopy(cell)
    if cell.get("cell_type") == "code":
        cell["outputs"], cell["execution_count"] = [], None
        cell.get("metadata", {}).pop("execution", None)
    return cell


def instructor_version(nb, name="notebook"):
    """ the complete lesson without outputs """
    check_lesson(nb, name)
    out = copy.deepcopy(nb)
    out["cells"] = [_clear(c) for c in nb["cells"]]
    return out


def student_version(nb, name="notebook"):
    """ stubs kept, each solution replaced by a pointer to the instructor version, answers dropped, no outputs """
    check_lesson(nb, name)
    out, cells = copy.deepcopy(nb), []
    for c in nb["cells"]:
        t = tags(c)
        if "answer" in t:
            continue
        if "solution" in t:
            cell = {"cell_type": "markdown", "metadata": {"tags": ["solution-pointer"]}, "source": POINTER}
            if "id" in c:
                cell["id"] = c["id"]
            cells.append(cell)
            continue
        cells.append(_clear(c))
    out["cells"] = cells
    return out


def _prepare_out(out_dir, overwrite):
    """ refuse (LessonError) a folder that holds files we would not write, unless overwrite """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise LessonError(f"OUT_DIR {out_dir} exists and is not a folder")
    if os.path.isdir(out_dir) and not overwrite:
        have = sorted(os.listdir(out_dir))
        if have:
            raise LessonError(f"OUT_DIR {out_dir} is not empty ({len(have)} entries, e.g. {have[0]!r}); "
                              "pass --overwrite to write into it anyway")


def write_versions(kind, out_dir, overwrite=False, sources=None):
    """ Write the `kind` ('student' or 'instructor') version of every lesson into out_dir (same file names).
    Every lesson is checked before anything is written. Returns the paths written. """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    paths = lesson_paths(sources)
    made = {}
    for p in paths:
        name = os.path.basename(p)
        try:
            nb = read_notebook(p)
        except (OSError, json.JSONDecodeError) as e:
            raise LessonError(f"{name}: cannot read the notebook ({e})") from None
        made[name] = (student_version(nb, name) if kind == "student" else instructor_version(nb, name))
    _prepare_out(out_dir, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, nb in made.items():
        write_notebook(nb, os.path.join(out_dir, name))
        written.append(os.path.join(out_dir, name))
    return written


# -----------------------------------------------------------------------------
# executed copies to read on the web (HTML, never committed)


def write_html(out_dir, overwrite=False, sources=None, fast=True, timeout=600, kernel_name="python3"):
    """ Execute the instructor version of every lesson (MINILATENT_FAST=1 unless fast=False) and write one
    HTML page per lesson, plus index.html, into out_dir. Returns the paths written. """
    try:
        import nbformat
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
        from nbconvert import HTMLExporter
    except ImportError as e:
        raise LessonError(f"'lessons html' needs nbclient and nbconvert ({e.name} is missing): "
                          "pip install 'minilatent[dev]'") from None
    paths = lesson_paths(sources)
    nbs = {}
    for p in paths:
        name = os.path.basename(p)
        nbs[name] = instructor_version(read_notebook(p), name)
    _prepare_out(out_dir, overwrite)
    os.makedirs(out_dir, exist_ok=True)
    old = os.environ.get("MINILATENT_FAST")
    os.environ["MINILATENT_FAST"] = "1" if fast else "0"
    written = []
    try:
        for name, nb in nbs.items():
            node = nbformat.from_dict(nb)
            print(f"executing {name} ({'fast' if fast else 'full'} mode)", flush=True)
            # the stubs raise by design (tag raises-exception); any other error stops the build
            try:
                NotebookClient(node, timeout=timeout, kernel_name=kernel_name,
                               resources={"metadata": {"path": out_dir}}).execute()
            except CellExecutionError as e:
                raise LessonError(f"{name}: a cell raised {e.ename}: {str(e.evalue)[:200]}") from None
            body, _ = HTMLExporter().from_notebook_node(node)
            page = os.path.join(out_dir, name[:-len(".ipynb")] + ".html")
            with open(page, "w", encoding="utf-8") as f:
                f.write(body)
            written.append(page)
    finally:
        if old is None:
            os.environ.pop("MINILATENT_FAST", None)
        else:
            os.environ["MINILATENT_FAST"] = old
    links = "\n".join(f'<li><a href="{os.path.basename(p)}">{os.path.basename(p)[:-5]}</a></li>' for p in written)
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as f:
        f.write(f"<!doctype html><meta charset='utf-8'><title>minilatent lessons</title>\n"
                f"<h1>minilatent lessons ({'fast' if fast else 'full'} mode)</h1>\n<ul>\n{links}\n</ul>\n")
    return written + [index]


# -----------------------------------------------------------------------------
# command line: python -m minilatent lessons {student,instructor,html} OUT_DIR


LESSONS_DESCRIPTION = (
    "Write the two versions of every lesson, or executed copies to read, from the tagged source notebooks. "
    "student: the exercise stubs stay, each solution becomes a one-line pointer to the instructor's copy, the "
    "Think! answers are dropped; instructor: the complete lessons; html: the instructor versions executed (fast "
    "mode unless --full), one web page per lesson plus index.html. Every lesson is checked before anything is "
    "written, and the source notebooks are never changed.")
LESSONS_EXAMPLES = (
    "lessons student handout/                  # for the students: stubs, no solutions, no answers",
    "lessons instructor key/                   # for the teacher: complete, no outputs",
    "lessons html lessons_html/ --full         # executed full-mode copies to put on a web server",
    "lessons student handout/ --source my_notebooks/ --overwrite",
)


def add_lessons_parser(sub, make=None):
    """ add the `lessons` subcommand to the CLI's subparsers; `make(parent, name, help, description, examples)`
    builds a subparser the way the other commands' are built (default: argparse with the same layout) """
    helptext = "write the student or instructor version of every lesson, or HTML copies"
    if make is None:
        import argparse
        ls = sub.add_parser("lessons", help=helptext, formatter_class=argparse.RawDescriptionHelpFormatter,
                            description=textwrap.fill(LESSONS_DESCRIPTION, 100), epilog="examples:\n" + "\n".join(
                                f"  python -m minilatent {e}" for e in LESSONS_EXAMPLES))
    else:
        ls = make(sub, "lessons", helptext, textwrap.fill(LESSONS_DESCRIPTION, 100), list(LESSONS_EXAMPLES))
    ls.add_argument("kind", choices=KINDS + ("html",), help="student: stubs without solutions or answers; "
                    "instructor: complete; html: executed instructor versions as web pages")
    ls.add_argument("out_dir", metavar="OUT_DIR", help="folder to write into (refused when it holds files)")
    ls.add_argument("--overwrite", action="store_true", help="write into a folder that already holds files")
    ls.add_argument("--source", default=None, help="folder of source notebooks (default: the shipped lessons)")
    ls.add_argument("--full", action="store_true", help="html: run the full lessons (default: fast mode)")
    ls.add_argument("--timeout", type=float, default=600, help="html: seconds allowed per cell")
    ls.set_defaults(fn=run_lessons)


def run_lessons(args):
    """ the CLI entry point; bad input prints one line and returns 2 before anything is written """
    try:
        if args.kind == "html":
            written = write_html(args.out_dir, args.overwrite, args.source, fast=not args.full,
                                 timeout=args.timeout)
        else:
            written = write_versions(args.kind, args.out_dir, args.overwrite, args.source)
    except (LessonError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} files to {args.out_dir}")
    return 0
