"""rmsprop-cli: MNIST multilayer perceptrons trained with RMSProp on Numba kernels."""

__version__ = "0.1.0"
