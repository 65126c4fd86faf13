"""Numba kernels.  Their cache is keyed on every file they compile from (jitcache), which must be
in place before the first kernel is decorated: a package's __init__ runs before its modules."""

from .. import jitcache

jitcache.install()
