"""The package's metadata is pyproject.toml; this file only adds the C extensions, which setuptools takes from
setup.py alone: cffi generates them from models/native_build.py. They are optional: without a C compiler or
Python's headers the install still succeeds, and the service runs the torch form and orjson instead (one
warning at start-up; models/native.py)."""

import runpy

from setuptools import setup

builders = runpy.run_path("models/native_build.py")
extensions = []
for name in ("mtj_builder", "writer_builder", "reader_builder"):
    ext = builders[name].distutils_extension(tmpdir="build/cffi", verbose=False)
    ext.optional = True
    extensions.append(ext)

setup(ext_modules=extensions)
