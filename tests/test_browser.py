""" Every lesson as a student meets it: the student version, written by `python -m minilatent lessons student`
of a non-editable install outside the checkout (conftest.install_package), opened in JupyterLab (from this venv)
in Debian's Chromium, driven by Playwright, on a kernel that runs the installed package. For each lesson, in fast
mode: open it, Run > Run All Cells, wait until every code cell has run, then check
- no error output except in the cells tagged `exercise` (which must raise NotImplementedError);
- no "Error displaying widget", every widget output rendered, no cell showing the same widget twice;
- moving a slider (the arrow key on an ipywidgets slider) redraws the figure next to it;
- the kernel imported minilatent from the install's site-packages, not from the checkout.
(The instructor versions, the lessons as they are in notebooks/, run under nbval with the rest of the suite.)
Screenshots of each lesson go to $MINILATENT_SCREENSHOTS when set.

Needs /usr/bin/chromium (`apt-get install chromium`) and Playwright for Python (`pip install 'minilatent[browser]'`);
it never downloads a browser. Skips with the reason where either is missing. """

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import install_package, run_ok

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NB_DIR = os.path.join(ROOT, "notebooks")
LESSONS = sorted(f for f in os.listdir(NB_DIR) if f.endswith(".ipynb"))
CHROMIUM = os.environ.get("MINILATENT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
RUN_ALL_TIMEOUT = float(os.environ.get("MINILATENT_BROWSER_TIMEOUT", 900))   # seconds per lesson
TOKEN = "minilatent-browser-test"

pytestmark = pytest.mark.browser


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(folder):
    """ JupyterLab user settings: no news/update pop-ups; every cell kept in the page (no windowing) """
    files = {"@jupyterlab/apputils-extension/notification.jupyterlab-settings":
             {"fetchNews": "false", "checkForUpdates": False},
             "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"}}
    for rel, value in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(value, f)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    pytest.importorskip("playwright", reason="Playwright for Python is not installed (pip install 'minilatent[browser]')")
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    if not os.path.exists(jupyter):
        pytest.skip(f"no jupyter next to {sys.executable}")
    base = tmp_path_factory.mktemp("lab")
    py, ienv, site = install_package(base)
    work = base / "lessons"                       # the student versions, written by the installed package
    run_ok([py, "-m", "minilatent", "lessons", "student", str(work)], env=ienv, cwd=base)
    assert sorted(f for f in os.listdir(work) if f.endswith(".ipynb")) == LESSONS
    kernel = base / "data" / "kernels" / "python3"   # found before this venv's own python3 kernel
    kernel.mkdir(parents=True)
    with open(kernel / "kernel.json", "w") as f:
        json.dump({"argv": [py, "-m", "ipykernel_launcher", "-f", "{connection_file}"], "language": "python",
                   "display_name": "Python 3 (minilatent installed)", "env": {"PATH": ienv["PATH"]}}, f)
    settings(str(base / "settings"))
    port = free_port()
    cmd = [jupyter, "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.token={TOKEN}",
           f"--ServerApp.root_dir={work}", f"--LabApp.user_settings_dir={base / 'settings'}",
           f"--LabApp.workspaces_dir={base / 'workspaces'}", "--LabApp.expose_app_in_browser=True",
           "--LabApp.news_url=", "--ServerApp.open_browser=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = dict(os.environ, MINILATENT_FAST="1", JUPYTER_CONFIG_DIR=str(base / "config"),
               JUPYTER_DATA_DIR=str(base / "data"), JUPYTER_PREFER_ENV_PATH="0",
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"))
    log = open(base / "lab.log", "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited ({proc.returncode}): {open(base / 'lab.log').read()[-2000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("JupyterLab did not answer within 120 s")
        from playwright.sync_api import sync_playwright
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            yield url, browser, site
            browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


# read the notebook the page shows, outputs included, through the app that --expose-app-in-browser exposes
NOTEBOOK_JSON = """() => {
    const w = window.jupyterapp.shell.currentWidget;
    return w && w.context && w.context.model ? JSON.stringify(w.context.model.toJSON()) : null;
}"""
KERNEL_IDLE = """() => {
    const w = window.jupyterapp.shell.currentWidget;
    const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
    return k ? k.status : null;
}"""


KERNEL_EXEC = """async (code) => {
    const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
    let text = "";
    const future = k.requestExecute({code: code, silent: false, store_history: false});
    future.onIOPub = (msg) => { if (msg.header.msg_type === "stream") { text += msg.content.text; } };
    await future.done;
    return text;
}"""


def kernel_says(page, code):
    """ what the lesson's kernel prints for `code` (run outside the notebook's cells) """
    return page.evaluate(KERNEL_EXEC, code).strip()


def notebook(page):
    s = page.evaluate(NOTEBOOK_JSON)
    return json.loads(s) if s else None


def shot(page, name):
    folder = os.environ.get("MINILATENT_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        page.screenshot(path=os.path.join(folder, name), full_page=False)


def run_all(page, url, name):
    # a workspace of its own per lesson (reset), so JupyterLab does not reopen the lessons of earlier tests
    page.goto(f"{url}/lab/workspaces/{name[:-6]}/tree/{name}?reset&token={TOKEN}")
    page.wait_for_function("(name) => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.context "
                           "&& window.jupyterapp.shell.currentWidget.context.path === name", arg=name, timeout=120_000)
    page.wait_for_function(KERNEL_IDLE.replace("return k ? k.status : null;", "return k && k.status === 'idle';"),
                           timeout=120_000)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    t0, nb = time.time(), None
    while time.time() - t0 < RUN_ALL_TIMEOUT:
        time.sleep(2)
        nb = notebook(page)
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        if time.time() - t0 > 120 and not any(c.get("execution_count") for c in code) \
                and page.evaluate(KERNEL_IDLE) == "idle":
            shot(page, f"not_started_{name[:-6]}.png")
            pytest.fail(f"{name}: Run > Run All Cells started nothing within 120 s")
        if all(c.get("execution_count") for c in code) and page.evaluate(KERNEL_IDLE) == "idle":
            return nb
    shot(page, f"timeout_{name}.png")
    missing = [i for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code" and not c.get("execution_count")]
    pytest.fail(f"{name}: Run All did not reach the end in {RUN_ALL_TIMEOUT:.0f} s; cells never run: {missing[:10]}")


def widget_ids(cell):
    return [o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] for o in cell.get("outputs", [])
            if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]


@pytest.mark.parametrize("name", LESSONS)
def test_lesson_in_the_browser(lab, name):
    url, browser, site = lab
    context = browser.new_context(viewport={"width": 1280, "height": 900})   # fresh storage per lesson
    page = context.new_page()
    try:
        nb = run_all(page, url, name)
        shot(page, f"{name[:-6]}_end.png")
        cells = page.locator(".jp-Notebook .jp-Cell")
        assert cells.count() == len(nb["cells"]), "the page does not show every cell"
        problems = []
        for i, c in enumerate(nb["cells"]):
            if c["cell_type"] != "code":
                continue
            tags = set(c.get("metadata", {}).get("tags", []))
            errors = [o["ename"] for o in c.get("outputs", []) if o["output_type"] == "error"]
            if "exercise" in tags:
                if errors != ["NotImplementedError"]:
                    problems.append(f"cell {i} (exercise) raised {errors or 'nothing'}")
            elif errors:
                problems.append(f"cell {i} raised {errors}")
            ids = widget_ids(c)
            if len(ids) != len(set(ids)):
                problems.append(f"cell {i} shows the same widget {len(ids) - len(set(ids)) + 1} times")
            if ids:
                cell = cells.nth(i)
                cell.scroll_into_view_if_needed()
                text = cell.inner_text()
                if "Error displaying widget" in text:
                    problems.append(f"cell {i}: Error displaying widget")
                views = cell.locator(".jp-OutputArea-output .jupyter-widgets").count()
                rendered = cell.locator(".jp-OutputArea-child .widget-box, .jp-OutputArea-child .jupyter-widgets")
                if views == 0 or rendered.count() == 0:
                    problems.append(f"cell {i}: widget output not rendered")
        where = kernel_says(page, "import minilatent; print(minilatent.__file__)")
        if not where.startswith(site):
            problems.append(f"the kernel imported minilatent from {where!r}, not from the install ({site})")
        assert not problems, f"{name}: " + "; ".join(problems)
        check_a_slider(page, nb, name)
    finally:
        try:                                      # free the kernel's memory before the next lesson
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:
            pass
        context.close()


def check_a_slider(page, nb, name):
    """ the first cell with a slider and a figure: an arrow key on the slider must redraw the figure """
    cells = page.locator(".jp-Notebook .jp-Cell")
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code" or not widget_ids(c):
            continue
        cell = cells.nth(i)
        handle = cell.locator(".widget-slider .noUi-handle")
        img = cell.locator(".jp-OutputArea-output img")
        if handle.count() == 0 or img.count() == 0:
            continue
        cell.scroll_into_view_if_needed()
        readout = cell.locator(".widget-slider .widget-readout").first
        before, value = img.first.get_attribute("src"), readout.inner_text()
        handle.first.focus()
        handle.first.press("ArrowRight")
        t0 = time.time()
        while time.time() - t0 < 60:
            time.sleep(0.5)
            now = cell.locator(".jp-OutputArea-output img")
            if now.count() and now.first.get_attribute("src") != before:
                shot(page, f"{name[:-6]}_slider.png")
                return
        shot(page, f"{name[:-6]}_slider_failed.png")
        pytest.fail(f"{name} cell {i}: the figure did not change within 60 s of moving the slider (slider "
                    f"{value} -> {readout.inner_text()}, {img.count()} images, handle {handle.first.get_attribute('class')})")
    nwidgets = sum(bool(widget_ids(c)) for c in nb["cells"] if c["cell_type"] == "code")
    if nwidgets:
        pytest.fail(f"{name}: {nwidgets} widget cells but none with a slider and a figure")
