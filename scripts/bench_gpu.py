"""The default recipe on a real GPU: median epoch seconds, samples/s, evaluation
throughput, and kernel launches per training step.

    pip install -e '.[cuda]'
    python scripts/bench_gpu.py [--epochs 5] [--batch-size 32] [--hidden 128,64]

Exits with the reason when CUDA cannot be used here (no driver, no GPU, no toolkit).
"""

from __future__ import annotations

import sys

from bench import arguments, measure

from rmsprop_cli.backends import cuda_status


def main():
    args = arguments(__doc__, device="cuda")
    usable, detail, _ = cuda_status()
    if not usable:
        sys.exit(f"CUDA cannot be used here: {detail}")
    print(f"GPU: {detail}")
    backend = measure(args)
    steps = backend.step
    # Launches made by training steps only (warm-up and evaluation launches are not counted).
    print(f"kernel launches per training step: {backend.launches / steps:.1f} "
          f"({len(backend.sizes) - 1} layers x 2, + 1 with --clip-norm)")


if __name__ == "__main__":
    main()
