"""Numba's on-disk cache, keyed on everything the kernels compile from.

Numba checks a cached kernel (cache=True) against its own source file only, so
a change to the jit flags in config.py, or to a constant or function a kernel
imports from another module, silently reused old machine code.  Here each
kernel's cache lives in a folder named by a hash of every .py file in kernels/,
every module of this package they import (transitively: new modules count by
themselves), the package's folder, and the Python, numba, llvmlite and
numba-cuda versions.

How: a cache locator (the numba class that says where a function's cache
lives) put first in numba's list of them.  numba-cuda has its own copy of the
caching module and of the config (numba.cuda.core), so numba.config.CACHE_DIR
alone would not reach the CUDA kernels; a locator class works for both, and it
claims only files in kernels/, so other libraries' caches in the same process
stay where numba puts them.  Its root is chosen as numba chooses: NUMBA_CACHE_DIR,
else kernels/__pycache__ if writable, else the user's cache folder (a read-only
site-packages).  These are numba internals: each is checked when installed,
and where one is not as expected that target's CACHE_DIR is pointed at the
hashed folder instead: as correct for our kernels, but it also moves other
libraries' caches of this process (MODES records which way each went).  A
user's NUMBA_CACHE_LOCATOR_CLASSES replaces numba's list, ours included: that
explicit choice wins.

Folders of older hashes are never deleted: another process (an older install,
a run still going) may be loading from one at this moment.
"""

from __future__ import annotations

import ast
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
_files: dict[tuple, str | None] = {}


def _listing(folder: str) -> set[str]:
    if folder not in _listings:
        try:
            _listings[folder] = set(os.listdir(folder))
        except OSError:
            _listings[folder] = set()
    return _listings[folder]


def _module_file(parts: tuple) -> str | None:
    """The file of module PACKAGE.<parts>, from one listing per folder (a stat per imported name cost 0.5 ms)."""
    if parts not in _files:
        folder, name = os.path.join(ROOT, *parts[:-1]), parts[-1] if parts else ""
        _files[parts] = (os.path.join(folder, name + ".py") if name + ".py" in _listing(folder) else
                         os.path.join(folder, name, "__init__.py")
                         if (not parts or name in _listing(folder)) and "__init__.py" in _listing(os.path.join(folder, name))
                         else None)
    return _files[parts]


def _import_statements(text: str) -> str:
    """The import statements of a module, one after another: ast.parse of whole modules took 8 ms, of
    these alone (found with str.find, 20 times faster than a regular expression) 0.3 ms.  Imports inside
    functions count too (more files only make the key stricter); dynamic imports, and one after `:` or
    `;` on a line, are not seen."""
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
    """Files of this package that module `path` imports, parent packages included (they run first)."""
    try:
        statements = ast.parse(_import_statements(text)).body
    except SyntaxError:  # a line in a string that looks like an import: read the whole module
        try:
            statements = list(ast.walk(ast.parse(text)))
        except SyntaxError:  # its import will fail and say so; its bytes are hashed all the same
            return set()
    here = os.path.dirname(path)[len(ROOT) + 1:]
    package = tuple(here.split(os.sep)) if here else ()
    modules = set()
    for node in statements:
        if isinstance(node, ast.Import):
            modules.update(tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level - 1 > len(package):
                    continue
                base = package[:len(package) - node.level + 1] + tuple(node.module.split(".") if node.module else ())
            elif node.module and node.module.split(".")[0] == PACKAGE:
                base = tuple(node.module.split(".")[1:])
            else:
                continue
            modules.add(base)
            modules.update(base + (a.name,) for a in node.names)  # a name may be a submodule
    found = {_module_file(parts[:i]) for parts in modules for i in range(len(parts) + 1)}
    found.discard(None)
    return found


def sources() -> dict[str, bytes]:
    """Every file the kernels compile from, by path: kernels/*.py and the package modules they import, transitively."""
    todo = [os.path.join(KERNELS, f) for f in _listing(KERNELS) if f.endswith(".py")]
    seen: dict[str, bytes] = {}
    while todo:
        path = todo.pop()
        if path not in seen:
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
            import numba_cuda  # its __init__ only reads its version
            cuda_version = numba_cuda.__version__
        except ImportError:
            cuda_version = None
        h = hashlib.sha256(repr((ROOT, sys.version, numba.__version__, llvmlite.__version__, cuda_version)).encode())
        for path, text in sorted(sources().items()):
            h.update(b"\0%s\0%s" % (path[len(ROOT):].encode(), text))
        _digest = h.hexdigest()
    return _digest


def folder_name() -> str:
    return f"rmsprop-cli-{digest()[:16]}"


def _user_cache() -> str:
    from numba.misc.appdirs import AppDirs  # what numba's user-wide locator uses
    return AppDirs(appname="numba", appauthor=False).user_cache_dir


def _locator(caching):
    config = caching.config

    class Locator(caching._CacheLocator):
        rmsprop_cli = True
        _chosen: dict = {}

        def __init__(self, py_func, path):
            self._lineno = py_func.__code__.co_firstlineno
            self._path = path

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
            roots = ([config.CACHE_DIR] if config.CACHE_DIR else []) + [os.path.join(KERNELS, "__pycache__")]
            key = tuple(roots)
            if key not in cls._chosen:  # one writability probe per process, not one per kernel
                cls._chosen[key] = None
                for root in roots + [_user_cache()]:
                    try:
                        cls(py_func, os.path.join(root, folder_name())).ensure_cache_path()
                    except OSError:
                        continue
                    cls._chosen[key] = os.path.join(root, folder_name())
                    break
            return None if cls._chosen[key] is None else cls(py_func, cls._chosen[key])

    return Locator


def _cover(caching) -> None:
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


class _CudaHook:
    """Covers numba-cuda's caching module as it loads: importing it here would cost every CPU run 0.3 s."""

    done = False

    def find_spec(self, fullname, path, target=None):
        if fullname != CUDA_CACHING or self.done:
            return None
        self.done = True  # left in sys.meta_path: removing it would make the import skip the next finder
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                break
        else:
            return None
        run = getattr(spec.loader, "exec_module", None)
        if run is not None:
            def exec_module(module):
                run(module)
                _cover(module)
            spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Key the cache of the kernels in kernels/: the CPU target now, CUDA's when numba-cuda loads."""
    import numba.core.caching
    _cover(numba.core.caching)
    if CUDA_CACHING in sys.modules:
        _cover(sys.modules[CUDA_CACHING])
    elif not any(isinstance(f, _CudaHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _CudaHook())
