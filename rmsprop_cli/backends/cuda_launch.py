"""Kernel launches made over and over with the same arguments, and what they
cost the host.

numba-cuda's public launch, kernel[grid, block](*args), resolves the type of
every argument and converts every array to the driver's kernel parameters
again at each call: about 6.6 µs per launch and 3.6 µs more per array
(numba-cuda PR #288, issue #477; measured here with the driver call stubbed,
scripts/bench_gpu.py --host-only).  A training step launches the same kernels
with the same arguments every time (kernels/cuda_layout.py), so a Launch can
do that work once: `prepare` takes the compiled kernel and its parameters as
numba-cuda's own launch builds them (_Kernel._prepare_args), and each call is
then cuda.core's launch(stream, config, kernel, *params), the call numba-cuda
ends in.  Those two are numba-cuda internals; the backend checks a prepared
step against the public path at warm-up (the same step from the same state
must give the same bits) and falls back to the public path if anything
differs or fails.
"""

from __future__ import annotations


class Launch:
    """kernel[grid, block](*args), by the public path until prepare() succeeds."""

    def __init__(self, kernel, grid, block, args, simulator: bool):
        self.kernel, self.grid, self.block, self.args = kernel, grid, block, tuple(args)
        # The simulator's kernel[grid, block] is the kernel itself, reconfigured: configure at each call.
        self.configured = None if simulator else kernel[grid, block]
        self.prepared = None

    def __call__(self):
        if self.prepared is not None:
            launch, params = self.prepared
            launch(*params)
        elif self.configured is not None:
            self.configured(*self.args)
        else:
            self.kernel[self.grid, self.block](*self.args)

    def prepare(self):
        """Marshal the arguments once, for a kernel that a public launch has compiled.  Raises
        when this numba-cuda does not have the internals it needs (the caller falls back)."""
        from cuda.core import LaunchConfig, launch

        kernel = self.kernel.overloads[tuple(self.kernel.typeof_pyval(a) for a in self.args)]
        stream = self.configured.stream
        params, writeback = [], []
        for ty, value in zip(kernel.argument_types, self.args):
            kernel._prepare_args(ty, value, stream, writeback, params)
        if writeback or kernel.debug or kernel.cooperative:
            raise RuntimeError("arguments that need copying back, or a debug or cooperative kernel")
        config = LaunchConfig(grid=self.grid, block=self.block, shmem_size=0)
        self.prepared = (launch, (stream, config, kernel._codelibrary.get_cufunc().kernel, *params))

    def unprepare(self):
        self.prepared = None
