"""rnnkit's compiled part; everything else is in pyproject.toml.

The native LSTM kernel (src/rnnkit/kernels/lstm.c) is built at install time into
rnnkit/kernels/_lstm.<python tag>.so, which rnnkit.kernels loads with ctypes (it is not a
Python module). It carries plain-C, AVX2 and AVX-512 versions chosen at run time, so it is
compiled for the baseline CPU, not -march=native. The extension is optional: where there is no
C compiler (or OpenMP) the install still succeeds and rnnkit uses torch's LSTM.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "rnnkit.kernels._lstm",
    sources=["src/rnnkit/kernels/lstm.c"],
    depends=["src/rnnkit/kernels/lstm_impl.h"],
    extra_compile_args=["-O3", "-fopenmp", "-fno-math-errno"],
    extra_link_args=["-fopenmp"],
    libraries=["m"],
    optional=True,
)])
