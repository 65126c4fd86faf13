"""How many threads a training step is split across: chosen chunk by chunk from
measured times, or pinned by the user.

A step at batch 32 is two parallel regions of about a tenth of a millisecond
each, whose threads wait for one another.  On a quiet 2-core machine two
threads train an epoch in about 0.2 s against 0.3 s on one; but when another
process takes a core, a descheduled thread stalls every region and two threads
became 8-30 times slower than one (OpenMP's wait policies and spin counts were
measured too: none is good both quiet and loaded; README, "Threads on a busy
machine").  Training is bit for bit the same on any number of threads, so the
count may change between any two chunks without changing a number: the policy
below keeps the fastest count it has measured and now and then probes
another on a few batches, backing off while the probes lose.

This module is pure Python (numba is imported only to pin a count), so the
policy can be tested with given timings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .errors import ConfigError

# A probe runs another thread count on a few batches: about PROBE_SECONDS at
# the slower of the two counts' known speeds, so that a losing probe costs
# little even where the other count is many times slower.  Probes come after
# MIN_INTERVAL seconds of training at first; each that loses doubles the wait,
# up to MAX_INTERVAL, which bounds how long training stays on fewer threads
# after the load has gone, and never less than COST_RATIO times what the last
# probe cost, so probing takes at most about 1/COST_RATIO of the time.
PROBE_SECONDS = 0.004
MIN_INTERVAL = 0.25
MAX_INTERVAL = 2.0
COST_RATIO = 50
# A count must be this much faster per batch to displace the current one, so
# that noise does not make the policy flap between two equal counts.
MARGIN = 0.05
# Weight of the newest part in the current count's running time per batch.
SMOOTHING = 0.5
# A count newly chosen, on a probe's few batches or at the start, runs in parts
# that double from two batches for this many batches (about two chunks of the
# default recipe), and is left at once if it proves UNSETTLE times slower than
# the count it replaced: a probe that was lucky then costs a few batches, not
# two whole chunks.
SETTLE_BATCHES = 80
UNSETTLE = 1.5  # "much slower" while settling: more than a hiccup (a lost time slice) makes of a part

_pinned: int | None = None


def pin(threads: int | None) -> None:
    """Train (and evaluate) on exactly `threads` threads from now on; None: choose by measurement.

    This is `--threads`; NUMBA_NUM_THREADS in the environment pins the same way.
    """
    global _pinned
    if threads is None:
        if _pinned is not None:  # numba is imported only to undo a pin, so that commands stay small
            import numba

            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        _pinned = None
        return
    import numba

    limit = numba.config.NUMBA_NUM_THREADS
    if type(threads) is not int or not 1 <= threads <= limit:
        why = "NUMBA_NUM_THREADS in the environment" if os.environ.get("NUMBA_NUM_THREADS") else "this machine's cores"
        raise ConfigError(f"--threads must be a whole number from 1 to {limit} (the limit set by {why}); "
                          f"got {threads}")
    _pinned = threads
    numba.set_num_threads(threads)


def pinned() -> int | None:
    """The thread count the user fixed (--threads, or NUMBA_NUM_THREADS), or None when training chooses."""
    if _pinned is not None:
        return _pinned
    env = os.environ.get("NUMBA_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else None


def choices(most: int) -> tuple[int, ...]:
    """The thread counts tried, from `most` down to 1 by halving, and 2: (8, 4, 2, 1), (6, 3, 2, 1), (2, 1)."""
    out = {most, min(most, 2), 1}
    while most > 1:
        most //= 2
        out.add(max(most, 1))
    return tuple(sorted(out, reverse=True))


@dataclass
class ThreadPolicy:
    """Chooses the thread count of each part of a chunk from the measured time per batch.

    part(n) says how to run the next part of a chunk with n batches left
    (usually all of them, on the current count); record(threads, batches,
    seconds) reports each part's time.  Only fresh measurements move the
    choice: the neighbouring counts (half or twice the current one) and one
    thread are probed in turn; a count just chosen is confirmed on short
    parts; and once it is settled, two parts in a row slower than a known
    alternative make the next part a probe of it rather than a switch to it,
    since what is known of the alternative may be old.
    """

    counts: tuple[int, ...]
    current: int = 0                               # index into counts; counts[0], the most, first
    per_batch: dict = field(default_factory=dict)  # count -> seconds per batch (the current's smoothed)
    interval: float = MIN_INTERVAL                 # seconds of training between probes
    since_probe: float = 0.0
    probes: int = 0
    switches: int = 0
    urgent: bool = False      # the current count looked slow: probe the best alternative next
    settled: float = 0.0      # batches run on the current count since it was chosen
    _slow: int = 0            # parts in a row slower than a known alternative
    _left: tuple | None = None  # (index, interval) of the count a probe's switch left, while settling
    _last_probed: int = -1

    @property
    def threads(self) -> int:
        return self.counts[self.current]

    def _candidates(self) -> list[int]:
        near = {self.current - 1, self.current + 1, len(self.counts) - 1}
        return sorted(i for i in near if 0 <= i < len(self.counts) and i != self.current)

    def _known(self, i: int) -> float:
        return self.per_batch.get(self.counts[i], float("inf"))

    def _best(self) -> int | None:
        return min(self._candidates(), key=self._known, default=None)

    def _due(self) -> int | None:
        """The index of the count to probe next, or None."""
        candidates = self._candidates()
        if not candidates or self.threads not in self.per_batch:
            return None  # a probe is judged against the current count: measure that first
        unknown = [i for i in candidates if self.counts[i] not in self.per_batch]
        if unknown:
            return unknown[0]
        if self.urgent:
            return self._best()
        if self.since_probe < self.interval:
            return None
        later = [i for i in candidates if i > self._last_probed]
        return later[0] if later else candidates[0]

    def _short(self, other: int | None, n_batches: int) -> int:
        """Batches for about PROBE_SECONDS at the slower of the current count and `other`."""
        slower = max(self.per_batch.get(self.threads, 0.0),
                     self.per_batch.get(self.counts[other], 0.0) if other is not None else 0.0, 1e-9)
        return max(1, min(int(PROBE_SECONDS / slower), n_batches // 2))

    def part(self, n_batches: int) -> tuple[int, int]:
        """(threads, batches) for the next part of a chunk with n_batches left.
        Ask again after recording each part, so that a probe that wins carries
        the rest of the chunk."""
        if n_batches <= 1:
            probe = self._due() if n_batches == 1 else None
            return (self.counts[probe] if probe is not None else self.threads), n_batches
        if self.threads not in self.per_batch:
            return self.threads, min(n_batches // 2, 4)  # the most threads may be the slowest: measure briefly
        probe = self._due()
        if probe is not None:
            self._last_probed = probe
            return self.counts[probe], self._short(probe, n_batches)
        if self.settled < SETTLE_BATCHES and self._best() is not None:
            # Newly chosen on a few batches' evidence (which may have been lucky): go on in parts
            # that double from two batches, so a wrong choice costs a few batches, until it holds.
            return self.threads, max(1, min(max(2, int(self.settled)), self._short(self._best(), n_batches)))
        return self.threads, n_batches

    def record(self, threads: int, batches: float, seconds: float) -> None:
        """A part of `batches` batches (fractional for a ragged last one) took `seconds` on `threads`."""
        if batches <= 0 or threads not in self.counts:
            return
        rate = seconds / batches
        i = self.counts.index(threads)
        if i != self.current:
            self._probed(i, rate, seconds)
            return
        self.since_probe += seconds
        self.settled += batches
        if self.settled >= SETTLE_BATCHES:
            self._left = None  # settled: a later move back is a change of load, not an undone lucky probe
        old = self.per_batch.get(threads)
        self.per_batch[threads] = ours = rate if old is None else SMOOTHING * rate + (1 - SMOOTHING) * old
        best = self._best()
        slow = best is not None and ours > self._known(best) * (1 + MARGIN)
        if best is not None and self.settled - batches < SETTLE_BATCHES and ours > self._known(best) * UNSETTLE:
            # Still settling, and what is known of the alternative is fresh (measured just before
            # this count was chosen): much slower than it means the choice was wrong; go back at once.
            self._switch(best)
            return
        # Settled: slow on the running average twice in a row, since one slow part alone is a
        # hiccup (a scheduler time slice lost), not a change of load; then probe, as what is
        # known of the alternative may be old.
        self._slow = self._slow + 1 if slow else 0
        self.urgent = self._slow >= 2

    def _probed(self, i: int, rate: float, seconds: float) -> None:
        self.probes += 1
        self.per_batch[self.counts[i]] = rate
        self.since_probe, self.urgent, self._slow = 0.0, False, 0
        ours = self.per_batch[self.threads]
        if rate < ours * (1 - MARGIN):
            self._switch(i)
            return
        cost = seconds - seconds * ours / rate  # what the probe took beyond the current count's time
        self.interval = max(min(2 * self.interval, MAX_INTERVAL), COST_RATIO * cost)

    def _switch(self, i: int) -> None:
        if self._left is not None and self._left[0] == i:
            # Straight back to the count a probe's switch left: that probe was lucky; wait longer.
            self.interval, self._left = min(2 * self._left[1], MAX_INTERVAL), None
        else:
            self._left, self.interval = (self.current, self.interval), MIN_INTERVAL
        self.current, self.switches, self.settled = i, self.switches + 1, 0.0
        self.since_probe, self.urgent, self._slow = 0.0, False, 0


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
