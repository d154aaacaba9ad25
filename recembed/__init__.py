"""recembed: click logs to item embeddings and nearest-neighbour indexes for candidate retrieval."""

import os

# faiss and numba each bring an OpenMP runtime; with spinning waits they starve each other on
# small machines (measured 5x slower faiss on 2 cores). Set before either library loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# numpy's OpenBLAS threads spin while they wait, too: beside numba's, faiss's and gensim's
# threads they made the small matrix products of calibration and evaluation (256 x 64 x 3k
# items) ~10x slower in wall and CPU time on 2 cores (benchmarks/RESULTS.md, "runs in 60 s";
# the products are the same, OpenBLAS splits rows, not sums). One thread unless the user says.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"

# where numba keeps the compiled kernels when no folder numba would pick is writable (below)
NUMBA_FALLBACK_DIR = "recembed-numba-cache"


def numba_cache_dir(environ, package_dir: str, writable) -> str | None:
    """The NUMBA_CACHE_DIR recembed sets, or None to leave numba's own choice alone.

    numba caches the kernels (`cache=True`, ~46 s to compile them all on 2 busy cores) in the
    first writable of: ``$NUMBA_CACHE_DIR``, the ``__pycache__`` beside the source (the
    package folder), the user cache (``$XDG_CACHE_HOME/numba`` or ``~/.cache/numba``). On a
    read-only install without a writable home none is, and numba refuses to import the
    kernels ("no locator available"); recembed then points it at a folder of this user in the
    temporary directory (compiled once per machine boot, then loaded from there).

    Parameters
    ----------
    environ : mapping
        The environment (`os.environ`).
    package_dir : str
        The folder of the recembed package.
    writable : callable
        path -> bool: whether a folder is writable or, when missing, can be created.

    Returns
    -------
    str or None
        The folder to set as NUMBA_CACHE_DIR, or None.
    """
    if environ.get("NUMBA_CACHE_DIR"):
        return None
    if writable(os.path.join(package_dir, "__pycache__")):
        return None
    home = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if writable(os.path.join(home, "numba")):
        return None
    import tempfile

    uid = getattr(os, "getuid", lambda: 0)()
    return os.path.join(tempfile.gettempdir(), f"{NUMBA_FALLBACK_DIR}-{uid}")


def _writable(path: str) -> bool:
    """A folder is writable, or its nearest existing parent is (so that it can be made)."""
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def _own_folder(path: str) -> str:
    """`path` made (mode 0700) when missing; a fresh private folder instead when someone else
    owns it (numba's cache files are pickles: never load one another user could have written)."""
    import tempfile

    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        if not hasattr(os, "getuid") or os.stat(path).st_uid == os.getuid():
            return path
    except OSError:
        pass
    return tempfile.mkdtemp(prefix=NUMBA_FALLBACK_DIR + "-")


if (_dir := numba_cache_dir(os.environ, os.path.dirname(__file__), _writable)) is not None:
    os.environ["NUMBA_CACHE_DIR"] = _own_folder(_dir)
