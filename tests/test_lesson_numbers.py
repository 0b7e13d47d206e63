""" Every number a lesson's text states is measured in its code (issue 23, item 5).

The scanner reads the markdown cells of each notebook in notebooks/, finds the numbers they state and flags each
one that no code cell of the same notebook holds as a literal (the lesson rule is stronger: printed and asserted in
the same or the next code cell; this test checks the part a machine can check without running the notebook).

What counts as a stated number:
  - a decimal (0.97, 1.5, -0.01), a percentage of any size ("17.5 %", "0 %"), a multiplier ("2x", "5-fold"),
    a number in scientific notation (1e-4, $10^{-9}$), and an integer >= 10 ("65 conditions", "800").
What is not (skipped as noise):
  - numbers that name a lesson, section, exercise, cell, figure, objective or step ("lesson 06", "Ex 2", "c21",
    "Section 3", "### 2.1"), integers with a leading zero ("01", "07": lesson numbers), ordinals (10th);
  - years in citations ("Stokes, 2015", "(2018)", "et al. 2016"), volume:pages (106:764); URLs, DOIs, arXiv ids;
  - digits inside identifiers and file names (h5, make_lorenz, 01_lfads_lorenz.ipynb, R^2, log2).
A stated number is found when some code cell holds a numeric literal of the same value (comments, strings and
exercise stubs, which raise before their checks run, do not count; solution cells do). Equivalent spellings match: a percentage p matches p or p/100 ("17 %" matches 17 or 0.17), "2x" matches
2, a value in ms also matches the value in s ("20 ms" matches 0.02), 1e-4 matches 0.0001, signs are ignored.
Exceptions live in EXCEPTIONS, each with its reason.

A report of every flagged number, per lesson, with its cell and context:  python tests/test_lesson_numbers.py
"""

import ast
import fnmatch
import json
import math
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
LESSONS = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))

# (notebook name or glob, number or regex) -> reason. A key whose second part is a number exempts that number in the
# notebook; any other second part is a regex, and every number inside one of its matches in the notebook's markdown is
# exempt.
EXCEPTIONS = {
    ("*", r"Estimated timing[^\n]*"): "teaching-time estimates for the reader, not measurements",
    ("*", r"Run All takes about[^.]*\."): "wall times of the whole notebook, measured outside it (README's time table)",
    ("00_spikes_and_rates.ipynb", r"lfads-torch reaches a rate\s+\$R\^2\$ of about 0\.94[^)]*\)"):
        "lfads-torch's result, quoted from a run of that package (docs/benchmarks.md), not computed here",
    ("08_real_recording.ipynb", r"one 777-s session"):
        "the length of the raw recording, which is not shipped (the lesson reads the trial-aligned file made from it)",
}

# ----------------------------------------------------------------------------- the scanner

_NUM = r"\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+"
NUMBER = re.compile(
    r"(?<![\w.\d])(?P<sign>[-−–]?)(?P<num>" + _NUM + r")"
    r"(?P<suffix>\s*(?:%|percent\b)|\s*(?:x|×|-fold)(?![\w])|\s*ms\b)?"
    r"(?![\w\d]|\.\d)")
POW10 = re.compile(r"10\^\{?\s*(?P<exp>[-−]?\d+)\s*\}?")
# a word right before a number that makes the number a reference, not a quantity
REF_WORDS = re.compile(
    r"\b(?:lessons?|notebooks?|tutorials?|sections?|exercises?|ex|cells?|figures?|fig|steps?|parts?|items?|objectives?|"
    r"eq|equations?|chapters?|tables?|questions?|demos?|issues?|c|version|python|nb)\.?\s*(?:\d+\s*(?:,|and|or|to|-|–)\s*)*$",
    re.IGNORECASE)
CITATION_BEFORE = re.compile(r"(?:et al\.?,?|[A-Z][\w'’-]+,|[A-Z][\w'’-]+|&|and|\(|;|,)\s*$")
STRIP = [
    re.compile(r"https?://\S+"),                         # URLs
    re.compile(r"\]\([^)]*\)"),                          # markdown link targets
    re.compile(r"\bdoi:\s*\S+", re.IGNORECASE),
    re.compile(r"\barXiv:\s*\S+", re.IGNORECASE),
    re.compile(r"<[^>]+>"),                              # HTML tags (<details>, <summary>)
    re.compile(r"^#+\s*[\d.]+", re.MULTILINE),            # heading numbers (### 2.1)
    re.compile(r"\b\d+:\d+(?:[-–]\d+)?\b"),               # volume:pages of a citation (106:764)
]


def source(cell):
    s = cell.get("source", "")
    return "".join(s) if isinstance(s, list) else s


def _value(text):
    return float(text.replace(",", ""))


def code_literals(code):
    """ the absolute values of the numeric literals in a code cell (comments and strings excluded) """
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines()]
    try:
        tree = ast.parse("\n".join(lines))
    except SyntaxError:
        return set()
    return {abs(float(n.value)) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)}


def _is_year_citation(text, start, end, value):
    """ 2015 in "(Stokes, 2015)", "Mongillo et al. 2008;", "Benjamin et al. 2018)", "1996a": a year after a name or
    an opening bracket, not followed by a noun or unit ("the 2000 trials" is a quantity) """
    if not (value.is_integer() and 1900 <= value <= 2099):
        return False
    after, before = text[end:end + 3], text[max(0, start - 40):start]
    if re.match(r"[a-z]\b", after) or re.search(r"et al\.?,?\s*$", before):    # 2015a; et al. 2008 and ...
        return True
    nxt = after.lstrip()[:1]
    if nxt and (nxt.islower() or nxt.isdigit() or nxt in "%×"):
        return False
    return bool(CITATION_BEFORE.search(before))


def stated_numbers(md):
    """ [(value, candidates, text, start)] for the numbers a markdown text states: `candidates` are the values a code
    literal may have to count as this number """
    text = md
    for pat in STRIP:
        text = pat.sub(lambda m: " " * len(m.group(0)), text)
    out = []
    for m in POW10.finditer(text):                       # $10^{-9}$ -> 1e-9
        v = 10.0 ** int(m.group("exp").replace("−", "-"))
        out.append((v, {v}, m.group(0), m.start()))
    text = POW10.sub(lambda m: " " * len(m.group(0)), text)
    for m in NUMBER.finditer(text):
        num, suffix = m.group("num"), (m.group("suffix") or "").strip()
        start, end = m.start("num"), m.end()
        v = abs(_value(num))
        is_decimal = "." in num or "e" in num.lower()
        before = text[max(0, start - 30):start]
        if REF_WORDS.search(before):
            continue                                     # lesson 06, Section 3, Section 5.1, Ex 2, c21
        if re.fullmatch(r"0\d+", num):
            continue                                     # 00, 01, 07: lesson numbers
        if re.match(r"(?:st|nd|rd|th)\b", text[end:end + 3]):
            continue
        if suffix in ("%", "percent"):
            out.append((v, {v, v / 100}, m.group(0), start))
        elif suffix in ("x", "×", "-fold"):
            out.append((v, {v}, m.group(0), start))
        elif is_decimal:
            out.append((v, {v, v / 1000} if suffix == "ms" else {v}, m.group(0), start))
        elif v >= 10:
            if _is_year_citation(text, start, m.end("num"), v):
                continue
            out.append((v, {v, v / 1000} if suffix == "ms" else {v}, m.group(0), start))
    return out


def _found(candidates, literals):
    return any(math.isclose(c, lit, rel_tol=1e-9, abs_tol=1e-15) for c in candidates for lit in literals)


def _exempt(name, value, md, start, exceptions):
    for (nb_pat, what), _reason in exceptions.items():
        if not fnmatch.fnmatch(name, nb_pat):
            continue
        try:
            if math.isclose(abs(_value(what)), value, rel_tol=1e-9):
                return True
            continue
        except ValueError:
            pass
        if any(m.start() <= start < m.end() for m in re.finditer(what, md)):
            return True
    return False


def unmeasured_numbers(nb, name="notebook", exceptions=None):
    """ [(cell index, stated text, context)] for each number a markdown cell states that no code cell holds """
    exceptions = EXCEPTIONS if exceptions is None else exceptions
    cells = nb["cells"]
    literals = set()
    for c in cells:      # an exercise stub raises before its checks run: its literals do not count
        if c.get("cell_type") == "code" and "exercise" not in c.get("metadata", {}).get("tags", []):
            literals |= code_literals(source(c))
    flagged = []
    for i, c in enumerate(cells):
        if c.get("cell_type") != "markdown":
            continue
        md = source(c)
        for value, candidates, text, start in stated_numbers(md):
            if _found(candidates, literals) or _exempt(name, value, md, start, exceptions):
                continue
            context = " ".join(md[max(0, start - 40):start + 40].split())
            flagged.append((i, text.strip(), context))
    return flagged


# ----------------------------------------------------------------------------- the scanner on synthetic notebooks

def _nb(*cells):
    """ cells: (kind, source) or (kind, source, tags) """
    return {"cells": [{"cell_type": c[0], "metadata": {"tags": list(c[2])} if len(c) > 2 else {}, "source": c[1]}
                      for c in cells]}


def _flagged_texts(nb, exceptions=None, name="x.ipynb"):
    return [t for _, t, _ in unmeasured_numbers(nb, name, exceptions={} if exceptions is None else exceptions)]


def test_a_number_only_in_markdown_is_flagged():
    nb = _nb(("markdown", "On this data 17.5 % of the bins hold two spikes, over 65 conditions; "
                          "the error falls 0.97 of the way."),
             ("code", "x = 1  # 17.5 % in a comment does not count\nprint('0.97 in a string does not count')"))
    assert _flagged_texts(nb) == ["17.5 %", "65", "0.97"]


def test_a_number_asserted_in_code_is_not_flagged():
    nb = _nb(("markdown", "17.5 % of the bins; 65 conditions; a ratio of 0.97; 20 ms bins; 5x slower; "
                          "a learning rate of 1e-4 and a floor of $10^{-9}$; an error of −0.01."),
             ("code", "assert abs(share - 0.175) < 0.01\nn_cond = 65\nassert r > 0.97\ndt = 0.02\n"
                      "assert tau_ratio == 5\nlr = 0.0001\nfloor = 1e-9\nassert err > -0.01"))
    assert _flagged_texts(nb) == []


def test_quantities_that_look_like_noise_are_flagged():
    nb = _nb(("markdown", "The 2000 trials (2000 steps) of a complex 12-neuron net; Stokes 2015 trials."),
             ("code", "x = 1"))
    assert _flagged_texts(nb) == ["2000", "2000", "12", "2015"]


def test_noise_is_not_flagged():
    nb = _nb(("markdown", "# Tutorial 00\n### 2.1 The encoder\n## Section 12: as in lesson 06 and notebooks 01-07 "
                          "(Ex 2, cell 21, c33)\nActivity-silent memory (Stokes, 2015; Mongillo et al. 2008; "
                          "J Neurophysiol 106:764; Ben-Yishai, Bar-Or & Sompolinsky 1995). van Vreeswijk and Sompolinsky "
                          "(1996, 1998) explained it, as in Mongillo et al. 2008 and others; see Section 5.1. [paper](https://x.org/a/2101.55) in "
                          "`01_lfads_lorenz.ipynb` and eg_data/lorenz.h5, the 10th trial, $R^2$ and log2."),
             ("code", "x = 1"))
    assert _flagged_texts(nb) == []


def test_a_number_only_in_an_exercise_stub_is_flagged():
    nb = _nb(("markdown", "The share is 0.175."),
             ("code", "def f():\n    raise NotImplementedError('Student exercise')\nassert f() == 0.175",
              ["exercise", "raises-exception"]),
             ("code", "def f():\n    return 0.1\n", ["solution"]))
    assert _flagged_texts(nb) == ["0.175"]


def test_an_exception_is_honoured():
    nb = _nb(("markdown", "The paper reports 0.94, and the speed of light is 299792458 m/s. We found 0.5."),
             ("code", "x = 1"))
    assert _flagged_texts(nb) == ["0.94", "299792458", "0.5"]
    exc = {("x.ipynb", "0.94"): "quoted from the paper", ("*", r"speed of light is \d+"): "a constant of nature"}
    assert _flagged_texts(nb, exc) == ["0.5"]
    assert _flagged_texts(nb, exc, name="y.ipynb") == ["0.94", "0.5"]    # keyed by notebook


def test_percent_and_ms_spellings():
    nb = _nb(("markdown", "17 % and 40% and 200 ms"), ("code", "a = 0.17\nb = 40\nc = 0.2"))
    assert _flagged_texts(nb) == []
    nb = _nb(("markdown", "17 % and 40% and 200 ms"), ("code", "a = 0.18\nb = 0.41\nc = 0.3"))
    assert _flagged_texts(nb) == ["17 %", "40%", "200 ms"]


# ----------------------------------------------------------------------------- the real lessons

@pytest.mark.parametrize("name", LESSONS)
def test_every_stated_number_is_in_the_code(name):
    with open(os.path.join(NB_DIR, name), encoding="utf-8") as f:
        nb = json.load(f)
    flagged = unmeasured_numbers(nb, name)
    assert not flagged, f"{name}: {len(flagged)} numbers stated in markdown but in no code cell:\n" + "\n".join(
        f"  cell {i}: {t!r} in '...{ctx}...'" for i, t, ctx in flagged)


def test_every_exception_is_used():
    """ an exception that no longer matches anything is stale: remove it """
    used = set()
    for name in LESSONS:
        with open(os.path.join(NB_DIR, name), encoding="utf-8") as f:
            nb = json.load(f)
        for c in nb["cells"]:
            if c.get("cell_type") != "markdown":
                continue
            md = source(c)
            for value, _, _, start in stated_numbers(md):
                for key, reason in EXCEPTIONS.items():
                    if _exempt(name, value, md, start, {key: reason}):
                        used.add(key)
    assert set(EXCEPTIONS) == used, set(EXCEPTIONS) - used


if __name__ == "__main__":       # a report of what each lesson still states without measuring it
    for n in LESSONS:
        with open(os.path.join(NB_DIR, n), encoding="utf-8") as f:
            flagged = unmeasured_numbers(json.load(f), n)
        print(f"{n}: {len(flagged)}")
        for i, t, ctx in flagged:
            print(f"  cell {i}: {t!r}  ...{ctx}...")
