"""rmsprop-cli: MNIST multilayer perceptrons trained with RMSProp on Numba kernels.

    from rmsprop_cli import train, evaluate, predict, compare, sweep

are the commands as Python functions (api.py), imported on first use so that
`import rmsprop_cli` (and `rmsprop --help`) stays instant.
"""

__version__ = "0.1.0"
__all__ = ["train", "evaluate", "predict", "compare", "sweep"]


def __getattr__(name):
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'rmsprop_cli' has no attribute {name!r}")
