"""Build of the compiled generator (models/generate/csrc): three variants of one source, chosen at run time
(models/generate/compiled.py).

- models.generate._engine_avx512: -mavx512f/bw/vl/dq -mavx512bf16 -mfma, hand-written AVX-512 kernels, bf16 weights.
- models.generate._engine_avx2: -mavx2 -mfma, the same kernels in 8 lanes (x86-64-v3 CPUs without AVX-512 BF16: AMD
  before Zen 4, Intel client cores, and AVX-512 Xeons before Cooper Lake / Sapphire Rapids).
- models.generate._engine_generic: baseline flags only, plain loops; runs on any CPU.

Run-time dispatch rather than -march=native: the build machine's CPU is not baked in, so a wheel or an image built
here still runs (on the best variant that CPU has) where AVX-512 is missing, and a compiler that lacks a variant's
flags only loses that variant. All are optional: if none compiles the package still installs and the reference
Python generator runs (with a warning).
"""

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

COMMON = ["-O3", "-ffp-contract=off"]  # no fast-math: results must not depend on the compiler's reassociation
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma"]
AVX2 = ["-mavx2", "-mfma"]
QUIET = ["-Wno-maybe-uninitialized"]  # gcc 12 false positive inside its own avx512 headers (_mm512_undefined_ps)
DEPENDS = ["models/generate/csrc/engine_impl.h", "models/generate/csrc/kernels.h"]

ext_modules = [
    Pybind11Extension(
        "models.generate._engine_avx512",
        ["models/generate/csrc/engine_avx512.cpp"],
        cxx_std=17,
        extra_compile_args=COMMON + AVX512 + QUIET,
        depends=DEPENDS,
        optional=True,
    ),
    Pybind11Extension(
        "models.generate._engine_avx2",
        ["models/generate/csrc/engine_avx2.cpp"],
        cxx_std=17,
        extra_compile_args=COMMON + AVX2,
        depends=DEPENDS,
        optional=True,
    ),
    Pybind11Extension(
        "models.generate._engine_generic",
        ["models/generate/csrc/engine_generic.cpp"],
        cxx_std=17,
        extra_compile_args=COMMON,
        depends=DEPENDS,
        optional=True,
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
