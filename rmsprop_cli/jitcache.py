"""Numba's on-disk cache, keyed on everything the kernels compile from.

Numba checks a cached kernel (cache=True) against its own file only: a change to
the jit flags in config.py, or to a constant or function imported from another
module, reused old machine code.  Here the kernels cache in a folder named by a
hash of every .py in kernels/, the package modules they import (followed, so new
modules count by themselves), the package's folder and the Python, numba,
llvmlite and numba-cuda versions.

Why a locator (numba's class that says where a function caches) put first in
numba's list, not numba.config.CACHE_DIR: numba-cuda has a caching module and
config of its own (numba.cuda.core) that CACHE_DIR set in numba misses, and a
locator claims only files in kernels/, so other libraries' caches stay where
numba puts them.  Its root is numba's: NUMBA_CACHE_DIR, else kernels/__pycache__
if writable, else the user's cache folder (a read-only site-packages).  Where
the internals are not as expected, that target's CACHE_DIR points at the hashed
folder instead: as safe for the kernels, but other libraries' caches move too
(MODES says which).  NUMBA_CACHE_LOCATOR_CLASSES replaces numba's list, ours too:
the user's explicit choice.  Older hash folders are left: another process (an
older install, a run still going) may be loading from one.
"""

import ast
import functools
import hashlib
import os
import sys

PACKAGE = __package__ or __name__.rpartition(".")[0]
ROOT = os.path.dirname(os.path.realpath(__file__))
KERNELS = os.path.join(ROOT, "kernels")
CUDA_CACHING = "numba.cuda.core.caching"
MODES: dict[str, str] = {}  # caching module -> "locator" or "cache_dir"
_digest: str | None = None
_listings: dict[str, set[str]] = {}


def _listing(folder: str) -> set[str]:
    if folder not in _listings:
        _listings[folder] = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return _listings[folder]


@functools.lru_cache(maxsize=None)
def _module_file(parts: tuple) -> str | None:
    """The file of module PACKAGE.<parts>, from a listing per folder (a stat per imported name cost 0.5 ms)."""
    parent = os.path.join(ROOT, *parts[:-1])
    if parts and parts[-1] + ".py" in _listing(parent):
        return os.path.join(parent, parts[-1] + ".py")
    if parts and parts[-1] not in _listing(parent):
        return None
    return os.path.join(ROOT, *parts, "__init__.py") if "__init__.py" in _listing(os.path.join(ROOT, *parts)) else None


def _import_statements(text: str) -> str:
    """A module's import statements: ast.parse of whole modules took 8 ms, of these (found by str.find,
    20 times faster than a regular expression) 0.3 ms.  Imports inside functions count (more files only
    make the key stricter); dynamic imports, and one after `:` or `;` on a line, are not seen."""
    out, end, size = [], 0, len(text)
    while (i := text.find("import", end)) != -1:
        end = text.find("\n", i) % (size + 1)  # -1 (no newline) becomes the end of the text
        line = text[text.rfind("\n", 0, i) + 1:end].strip()
        if line.startswith(("from ", "import ")):
            while end < size and (line.endswith("\\") or line.count("(") > line.count(")")):
                start, end = end, text.find("\n", end + 1) % (size + 1)
                line += text[start:end]
            out.append(line)
    return "\n".join(out)


def _imports(path: str, text: str) -> set[str]:
    """Files of this package that module `path` imports, their parent packages included (they run first)."""
    try:
        nodes = ast.parse(_import_statements(text)).body
    except SyntaxError:  # a line of a string that looks like an import: read the whole module
        try:
            nodes = list(ast.walk(ast.parse(text)))
        except SyntaxError:  # its import will say so; its bytes are hashed all the same
            return set()
    here = os.path.dirname(path)[len(ROOT) + 1:]
    package, modules = tuple(here.split(os.sep)) if here else (), set()
    for node in nodes:
        if isinstance(node, ast.Import):
            modules.update(tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == PACKAGE):
            if node.level > len(package) + 1:
                continue
            dotted = tuple(node.module.split(".")) if node.module else ()
            base = package[:len(package) + 1 - node.level] + dotted if node.level else dotted[1:]
            modules.update([base] + [base + (a.name,) for a in node.names])  # a name may be a submodule
    return {f for parts in modules for i in range(len(parts) + 1) if (f := _module_file(parts[:i]))}


def sources() -> dict[str, bytes]:
    """Every file the kernels compile from, by path: kernels/*.py and the package modules they import, transitively."""
    todo, seen = [os.path.join(KERNELS, f) for f in os.listdir(KERNELS) if f.endswith(".py")], {}
    while todo:
        if (path := todo.pop()) not in seen:
            with open(path, "rb") as f:
                seen[path] = f.read()
            todo.extend(_imports(path, seen[path].decode("utf-8", "replace")))
    return seen


def digest() -> str:
    """sha256 of the contents of sources(), the package's folder and the compilers' versions (once a process)."""
    global _digest
    if _digest is None:
        import llvmlite
        import numba
        try:
            from numba_cuda import __version__ as cuda  # numba_cuda/__init__ only reads its version
        except ImportError:
            cuda = None
        h = hashlib.sha256(repr((ROOT, sys.version, numba.__version__, llvmlite.__version__, cuda)).encode())
        for path, text in sorted(sources().items()):
            h.update(b"\0%s\0%s" % (path[len(ROOT):].encode(), text))
        _digest = h.hexdigest()
    return _digest


def folder_name() -> str:
    return "rmsprop-cli-" + digest()[:16]


def _user_cache() -> str:
    from numba.misc.appdirs import AppDirs  # as numba's user-wide locator
    return AppDirs(appname="numba", appauthor=False).user_cache_dir


def _locator(caching):
    config = caching.config

    class Locator(caching._CacheLocator):
        rmsprop_cli, chosen = True, {}

        def __init__(self, py_func, path):
            self._lineno, self._path = py_func.__code__.co_firstlineno, path

        def get_cache_path(self):
            return self._path

        def get_source_stamp(self):
            return digest()  # content, not mtimes: a reinstall of the same files keeps its cache

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.realpath(py_file)) != KERNELS:
                return None  # not ours: numba's own locators take it
            if (key := config.CACHE_DIR) not in cls.chosen:  # one writability probe a process, not one a kernel
                cls.chosen[key] = None
                for root in ([key] if key else []) + [os.path.join(KERNELS, "__pycache__"), _user_cache()]:
                    try:
                        cls(py_func, os.path.join(root, folder_name())).ensure_cache_path()
                        cls.chosen[key] = os.path.join(root, folder_name())
                        break
                    except OSError:
                        pass
            return cls.chosen[key] and cls(py_func, cls.chosen[key])

    return Locator


def _cover(caching) -> None:
    """Put the locator first in the list of `caching` (numba's or numba-cuda's module), if it is as expected."""
    try:
        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # numba has had both names
        classes, base, config = impl._locator_classes, caching._CacheLocator, caching.config
        expected = (isinstance(classes, list) and hasattr(base, "ensure_cache_path") and hasattr(config, "CACHE_DIR")
                    and base.__abstractmethods__ == {"get_cache_path", "get_source_stamp", "get_disambiguator"})
    except AttributeError:
        expected = False
    if expected:
        if not any(getattr(c, "rmsprop_cli", False) for c in classes):
            classes.insert(0, _locator(caching))
        MODES[caching.__name__] = "locator"
    elif hasattr(getattr(caching, "config", None), "CACHE_DIR"):
        caching.config.CACHE_DIR = os.path.join(caching.config.CACHE_DIR or _user_cache(), folder_name())
        MODES[caching.__name__] = "cache_dir"


class _CoverOnLoad:
    """numba-cuda's caching module's loader, covering the module once it has run."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _cover(module)


class _CudaHook:
    """Covers numba-cuda's caching module as it loads: importing it up front cost every CPU run 0.3 s."""

    done = False

    def find_spec(self, fullname, path, target=None):
        if fullname != CUDA_CACHING or self.done:
            return None
        self.done = True  # stays in sys.meta_path: removing it now would make this import skip a finder
        for finder in sys.meta_path:
            if (spec := getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)) is not None:
                if hasattr(spec.loader, "exec_module"):
                    spec.loader = _CoverOnLoad(spec.loader)
                return spec
        return None


def install() -> None:
    """Key the cache of the kernels in kernels/: the CPU target's now, CUDA's when numba-cuda loads."""
    import numba.core.caching
    _cover(numba.core.caching)
    if CUDA_CACHING in sys.modules:
        _cover(sys.modules[CUDA_CACHING])
    elif not any(isinstance(f, _CudaHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _CudaHook())
