"""How many threads a training step is split across: chosen chunk by chunk from
measured times, or pinned by the user.

A step at batch 32 is two parallel regions of about a tenth of a millisecond
each, whose threads wait for one another.  On a quiet 2-core machine two
threads train an epoch in about 0.2 s against 0.3 s on one; but when another
process takes a core, a descheduled thread stalls every region and two threads
became 3-5 times slower than one (OpenMP's wait policies and spin counts were
measured too: none is good both quiet and loaded, see README "Threads on a busy
machine").  Training is bit for bit the same on any number of threads, so the
count may change between any two chunks without changing a number: the policy
below keeps the fastest count it has measured and now and then probes a
neighbouring one on a few batches, backing off while the probes lose.

This module is pure Python (no numba import) so the policy can be tested with
given timings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import ConfigError

# A probe runs the other thread count for about this long (at the current
# count's speed), at least PROBE_MIN_BATCHES batches: long enough to average
# over a few scheduler time slices, short enough that a losing probe costs
# little.  Probes come after MIN_INTERVAL seconds of training at first; each
# probe that loses doubles the wait, up to MAX_INTERVAL, which bounds how long
# training stays on one thread after the load has gone.
PROBE_SECONDS = 0.004
PROBE_MIN_BATCHES = 4
MIN_INTERVAL = 0.25
MAX_INTERVAL = 2.0
# A count must be this much faster per batch to displace the current one, so
# that noise does not make the policy flap between two equal counts.
MARGIN = 0.05
# Weight of the newest chunk in the current count's running time per batch.
SMOOTHING = 0.5

_pinned: int | None = None


def pin(threads: int | None) -> None:
    """Train (and evaluate) on exactly `threads` threads from now on; None: choose by measurement.

    This is `--threads`; NUMBA_NUM_THREADS in the environment pins the same way.
    """
    global _pinned
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if threads is None:
        _pinned = None
        numba.set_num_threads(limit)
        return
    if type(threads) is not int or not 1 <= threads <= limit:
        raise ConfigError(f"--threads must be a whole number from 1 to {limit} (the threads Numba may use here); got {threads}")
    _pinned = threads
    numba.set_num_threads(threads)


def pinned() -> int | None:
    """The thread count the user fixed (--threads, or NUMBA_NUM_THREADS), or None when training chooses."""
    if _pinned is not None:
        return _pinned
    env = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else None


def choices(most: int) -> tuple[int, ...]:
    """The thread counts tried, from `most` down to 1 by halving: (8, 4, 2, 1), (6, 3, 1), (2, 1)."""
    out = [most]
    while out[-1] > 1:
        out.append(max(1, out[-1] // 2))
    return tuple(out)


@dataclass
class ThreadPolicy:
    """Chooses the thread count of each chunk from the measured time per batch.

    part(n) says how to run the next part of a chunk with n batches left
    (usually all of them, on the current count); record(threads, batches,
    seconds) reports each part's time.  Only neighbouring counts (half or twice the current
    one) are probed, so on many cores the choice walks to the best count.
    """

    counts: tuple[int, ...]
    current: int = 0                               # index into counts; counts[0] (the most) first
    per_batch: dict = field(default_factory=dict)  # count -> last known seconds per batch
    interval: float = MIN_INTERVAL                 # seconds of training between probes
    since_probe: float = 0.0
    probes: int = 0
    switches: int = 0
    _fresh: float | None = None   # after a probe's switch: the interval before it, until the next chunk confirms
    _last_probed: int = -1

    @property
    def threads(self) -> int:
        return self.counts[self.current]

    def _neighbours(self) -> list[int]:
        return [i for i in (self.current - 1, self.current + 1) if 0 <= i < len(self.counts)]

    def _due(self) -> int | None:
        """The index of the count to probe before the next chunk, or None."""
        near = self._neighbours()
        if not near or self.threads not in self.per_batch:
            return None  # the current count is measured first: a probe is judged against it
        unknown = [i for i in near if self.counts[i] not in self.per_batch]
        if unknown:
            return unknown[0]
        if self.since_probe < self.interval:
            return None
        return near[0] if len(near) == 1 or self._last_probed == near[1] else near[1]

    def part(self, n_batches: int) -> tuple[int, int]:
        """(threads, batches) for the next part of a chunk with n_batches left:
        a few batches of a probe when one is due, else all of them on the
        current count.  Ask again after recording each part, so that a probe
        that wins carries the rest of the chunk."""
        probe = self._due() if n_batches > 0 else None
        if probe is None:
            return self.threads, n_batches
        size = max(PROBE_MIN_BATCHES, int(PROBE_SECONDS / max(self.per_batch[self.threads], 1e-9)))
        self._last_probed = probe
        return self.counts[probe], min(size, n_batches // 2 if n_batches >= 2 * PROBE_MIN_BATCHES else n_batches)

    def record(self, threads: int, batches: int, seconds: float) -> None:
        if batches <= 0 or threads not in self.counts:
            return
        rate = seconds / batches
        i = self.counts.index(threads)
        if i != self.current:  # a probe
            self.probes += 1
            self.per_batch[threads] = rate
            if rate < self.per_batch[self.threads] * (1 - MARGIN):
                self._fresh, self.interval = self.interval, MIN_INTERVAL
                self.current, self.switches = i, self.switches + 1
            else:
                self.interval = min(2 * self.interval, MAX_INTERVAL)
            self.since_probe = 0.0
            return
        self.since_probe += seconds
        old = self.per_batch.get(threads)
        self.per_batch[threads] = rate if old is None or self._fresh is not None else \
            SMOOTHING * rate + (1 - SMOOTHING) * old
        before, self._fresh = self._fresh, None
        # When the load changes under the current count, move at once to a
        # neighbour known to be faster, without waiting for a probe.
        best = min(self._neighbours(), key=lambda j: self.per_batch.get(self.counts[j], float("inf")), default=None)
        if best is not None and self.per_batch.get(self.counts[best], float("inf")) < rate * (1 - MARGIN) \
                and self.per_batch[threads] > self.per_batch[self.counts[best]] * (1 + MARGIN):
            self.current, self.switches = best, self.switches + 1
            # Straight back after a probe's switch: that probe was lucky, so wait longer before the next.
            self.interval = min(2 * before, MAX_INTERVAL) if before is not None else MIN_INTERVAL
            self.since_probe = 0.0


def policy(most: int) -> ThreadPolicy:
    """The policy for a training step that can use up to `most` threads (pinned: exactly that many)."""
    fixed = pinned()
    if fixed is not None:
        return ThreadPolicy((min(fixed, most),))
    return ThreadPolicy(choices(most))


def describe(most: int) -> str:
    """How training chooses its threads, for `rmsprop info`."""
    fixed = pinned()
    if fixed is not None:
        source = "--threads" if _pinned is not None else "NUMBA_NUM_THREADS"
        return f"pinned to {min(fixed, most)} by {source}"
    if most == 1:
        return "1 (one core, or a threading layer that sleeps between regions)"
    counts = choices(most)
    return (f"chosen per chunk of batches from {', '.join(map(str, counts))} by measured speed "
            f"(starts on {most}; fewer while other programs take cores; --threads N pins it)")
