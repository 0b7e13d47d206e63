"""
Files that must never be half-written: one atomic writer for everything outside the copyable model files
(checkpoints, HDF5 outputs, CSVs, figures), and the run folder of the command line.

atomic_write(path, write_fn) writes into a hidden temporary file next to the target, flushes and fsyncs it,
then renames it over the target: a reader sees the old file or the new one, never a mix, even if the
process is killed or the disk fills up half-way. The temporary file is `.NAME.tmp-PID`; one left behind by
a killed process is removed by the next run that takes the folder (RunFolder.open).

RunFolder: the rules of `python -m minilatent train ... --out DIR`
  - a lock file DIR/.lock (the owner's PID) exists while a run is active; a second run into DIR refuses at
    once; a lock whose PID is no longer alive (a killed run) is taken over
  - DIR holding a previous run (a checkpoint or outputs) is refused unless --overwrite or --resume
  - a run into a new or empty DIR writes its checkpoint straight into DIR (an interrupted run can be resumed);
    its outputs go to DIR/.staging and move into DIR at the end
  - a run into a DIR that already holds a run (--overwrite, or --resume of a finished run) trains and writes
    everything into DIR/.staging/; only when it has finished are the old run's files removed and the new
    ones moved into DIR, run.json last. If it fails or is interrupted, DIR keeps the old run untouched
  - run.json (written last) marks a finished run: its options and what it reached
"""

import csv
import errno
import glob
import io
import json
import os
import shutil

RUN_FILES = ("checkpoint.pt", "metrics.csv", "loss.png", "rates.png", "decoding.png", "run.json", "metrics.json",
             "lfads_output.h5", "lfads_output_*.h5", "sparks_output.h5")
STAGING = ".staging"


def atomic_write(path, write_fn, binary=True, by_name=False):
    """ write_fn(f) into a temporary file next to path, fsync it, then rename it over path. f is the file
    opened 'wb' (binary) or 'w' (text); by_name=True passes the temporary file's name instead, for writers
    that open the file themselves (h5py writes byte-identical files that way). """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        if by_name:
            write_fn(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        else:
            with open(tmp, "wb" if binary else "w") as f:
                write_fn(f)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.errno and e.filename in (None, tmp):      # name the file the user will look for
            raise OSError(e.errno, e.strerror or os.strerror(e.errno), path) from None
        raise
    except RuntimeError as e:                        # torch.save reports a full disk as a RuntimeError
        raise _io_error(e, folder, path) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    """ obj as indented JSON, atomically """
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=1, default=str)), binary=False)


def write_csv(path, rows):
    """ a list of dicts as CSV (columns in order of first appearance), atomically """
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]

    def w(f):
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)
    atomic_write(path, w, binary=False)


def write_figure(fig, path, dpi=90):
    """ a matplotlib figure as PNG, atomically """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


def write_torch(obj, path):
    """ torch.save(obj), atomically (a checkpoint is never half-written) """
    import torch
    atomic_write(path, lambda f: torch.save(obj, f))


def _io_error(e, folder, path):
    """ an OSError for a writer's non-OSError failure: ENOSPC when the disk is (nearly) full """
    try:
        st = os.statvfs(folder)
        full = st.f_bavail * st.f_frsize < 1 << 20
    except OSError:
        full = False
    if full:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
    return OSError(errno.EIO, f"write failed ({str(e).splitlines()[0][:100]})", path)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # alive, owned by someone else
        return True
    except (OverflowError, ValueError):
        return False
    return True


def run_files(folder, patterns=RUN_FILES):
    """ the files (or folders) of a run found in folder (sorted names) """
    found = set()
    for pat in patterns:
        found.update(os.path.basename(p) for p in glob.glob(os.path.join(glob.escape(folder), pat)))
    return sorted(found)


class RunFolderError(Exception):
    """ the run folder cannot be used; the message is one line for the user """


def _remove(path):
    shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


class RunFolder:
    """ the output folder of one command-line run: lock, staging, and the final swap (see the module docstring) """

    def __init__(self, path, files=RUN_FILES, state=("checkpoint.pt",)):
        self.files = files             # name patterns of what a run leaves in DIR (files or folders)
        self.state = state             # what a fresh run writes straight into DIR, resumable at once (a checkpoint,
                                       # a search's Ray state); everything else is staged until finish()
        self.path = os.fspath(path)
        self.lock = os.path.join(self.path, ".lock")
        self.work = self.path          # where this run's checkpoint goes until finish()
        self.stage = None              # DIR/.staging: outputs (and, when staged, the checkpoint) until finish()
        self.staged = False
        self.held = False

    # --- checks that write nothing -----------------------------------------------

    def check_path(self):
        """ Raise RunFolderError if --out cannot be a folder we write into. Writes nothing. """
        p = self.path
        if p.strip() == "":
            raise RunFolderError("--out: empty path; give a folder name, e.g. --out runs/first")
        if os.path.islink(p) and not os.path.exists(p):
            raise RunFolderError(f"--out {p} is a symbolic link to a missing target ({os.readlink(p)})")
        if os.path.exists(p) and not os.path.isdir(p):
            raise RunFolderError(f"--out {p} exists and is not a directory")
        real = os.path.realpath(p)
        if real == "/proc" or real.startswith(("/proc/", "/sys/", "/dev/")) or real in ("/sys", "/dev"):
            raise RunFolderError(f"--out {p} is inside a system folder ({real.split('/')[1] and '/' + real.split('/')[1]}); choose a folder of your own")
        parent = p
        while not os.path.exists(parent):                      # the deepest existing ancestor must be writable
            parent = os.path.dirname(os.path.abspath(parent))
        if not os.path.isdir(parent):
            raise RunFolderError(f"--out {p}: {parent} is not a directory")
        try:
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        if read_only:
            raise RunFolderError(f"--out {p}: {parent} is on a read-only file system")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise RunFolderError(f"--out {p}: no permission to write in {parent}")

    def active_pid(self):
        """ the PID of a live run holding the folder's lock, else None (reads only) """
        pid = self._lock_pid()
        return pid if pid is not None and pid != os.getpid() and _pid_alive(pid) else None

    def previous_run(self):
        """ names of a previous run's files in the folder, [] if none """
        return run_files(self.path, self.files) if os.path.isdir(self.path) else []

    def finished(self):
        """ True when the folder holds a finished run (run.json, or outputs of an older version) """
        return any(f == "run.json" or f.endswith("_output.h5") or f.startswith("lfads_output_") for f in self.previous_run())

    # --- taking the folder ---------------------------------------------------------

    def open(self, staged):
        """ Create the folder, take its lock (or refuse), clean leftovers of killed runs, and choose where
        this run writes: DIR itself, or DIR/.staging when staged (a previous run must stay intact). """
        try:
            os.makedirs(self.path, exist_ok=True)
            self._take_lock()
        except OSError as e:
            raise RunFolderError(f"--out {self.path}: cannot write there ({os.strerror(e.errno) if e.errno else e})") from None
        self.held = True
        self.clean_temporaries(self.path)
        self.stage = os.path.join(self.path, STAGING)
        shutil.rmtree(self.stage, ignore_errors=True)           # a failed earlier attempt
        os.makedirs(self.stage)
        self.staged = staged
        self.work = self.stage if staged else self.path
        return self.work

    def _take_lock(self):
        """ The lock file appears with its PID already in it (written aside, then hard-linked into place, which
        fails if a lock exists), so another run never reads an empty lock and mistakes it for a stale one. """
        mine = f"{self.lock}.{os.getpid()}"
        with open(mine, "w") as f:
            f.write(f"{os.getpid()}\n")
        try:
            for _ in range(3):
                try:
                    os.link(mine, self.lock)
                    return
                except FileExistsError:
                    pid = self._lock_pid()
                    if pid is not None and pid != os.getpid() and _pid_alive(pid):
                        raise RunFolderError(f"--out {self.path} is in use by another run (process {pid}); wait "
                                             "for it to end or choose another folder") from None
                    if self._lock_pid() == pid:              # still the dead run's lock: take it over
                        try:
                            os.remove(self.lock)
                        except FileNotFoundError:
                            pass
            raise RunFolderError(f"--out {self.path}: could not take the lock {self.lock}")
        finally:
            os.remove(mine)

    def _lock_pid(self):
        try:
            with open(self.lock) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def clean_temporaries(folder):
        """ remove `.NAME.tmp-PID` files that a killed process left behind (we hold the lock: none is live) """
        leftovers = glob.glob(os.path.join(glob.escape(folder), ".*.tmp-*"))
        leftovers += [p for p in glob.glob(os.path.join(glob.escape(folder), ".lock.*"))
                      if not (p.rsplit(".", 1)[-1].isdigit() and _pid_alive(int(p.rsplit(".", 1)[-1])))]
        for p in leftovers:
            pid = p.rsplit("-", 1)[-1]
            if not (pid.isdigit() and int(pid) == os.getpid()):
                try:
                    os.remove(p)
                except OSError:
                    pass

    def file(self, name):
        """ where this run writes `name` now: outputs always into DIR/.staging (moved into DIR by finish, so an
        interrupted write never leaves outputs that look finished); the checkpoint there too when staged, else
        straight into DIR (a fresh run's checkpoint is resumable at once) """
        if name in self.state and not self.staged:
            return os.path.join(self.path, name)
        return os.path.join(self.stage, name)

    def final(self, name):
        """ where `name` ends up when the run has finished """
        return os.path.join(self.path, name)

    # --- the end ---------------------------------------------------------------------

    def finish(self, summary):
        """ Mark the run finished (run.json, written last) and move its files into DIR; when staged, the
        previous run's files that the new run does not replace are removed first (never a mix). """
        write_json(self.file("run.json"), summary)
        new = run_files(self.stage, self.files)
        if self.staged:
            for name in run_files(self.path, self.files):
                if name not in new:
                    _remove(os.path.join(self.path, name))
        for name in sorted(new, key=lambda n: n == "run.json"):   # run.json last
            target = os.path.join(self.path, name)
            if os.path.isdir(target):                           # a folder is not replaced by a rename
                shutil.rmtree(target)
            os.replace(os.path.join(self.stage, name), target)
        shutil.rmtree(self.stage, ignore_errors=True)
        self.work = self.path

    def release(self):
        """ drop the lock (always; also after a failure) and the staging folder unless it holds the
        checkpoint of a failed staged run """
        stage = getattr(self, "stage", None)
        if stage and os.path.isdir(stage):
            if self.staged:                                     # a failed replacement: keep its checkpoint
                for name in run_files(stage, self.files):
                    if name not in self.state:
                        _remove(os.path.join(stage, name))
                try:
                    os.rmdir(stage)                             # only if nothing else is left
                except OSError:
                    pass
            else:                                               # a fresh run's partial outputs: its checkpoint is in DIR
                shutil.rmtree(stage, ignore_errors=True)
        if self.held:
            try:
                with open(self.lock) as f:
                    mine = f.read().split()[:1] == [str(os.getpid())]
                if mine:
                    os.remove(self.lock)
            except OSError:
                pass
            self.held = False


def disk_full(e):
    """ True when an OSError means the disk (or quota) is full """
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)
