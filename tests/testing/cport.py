"""Build examples/c_port/vmap_lib.c (replay.c's vm_alloc/vm_free) as a shared library and wrap
it for vaalloc.testing through ctypes: the "port" the kit is proved on."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

from vaalloc.testing import Region
from vaalloc.vectors import c_header

C_PORT = Path(__file__).resolve().parents[2] / "examples" / "c_port"
COMPILER = shutil.which("cc") or shutil.which("gcc")
FIT_TEST = "if (start + nr < bit)"  # vm_alloc's interior fit test: a guard bit after the run


def build(directory: Path, *, planted_bug: bool = False) -> ctypes.CDLL:
    """Compile vmap_lib.c (which includes replay.c) into ``directory``/libvmap.so and load it.

    With ``planted_bug`` the copy of replay.c has the fit test's ``<`` turned into ``<=``: the
    missing guard page that Xen fixed in August 2013."""
    assert COMPILER is not None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vaalloc_xen.h").write_text(c_header())
    replay = (C_PORT / "replay.c").read_text()
    assert replay.count(FIT_TEST) == 1
    if planted_bug:
        replay = replay.replace(FIT_TEST, FIT_TEST.replace("<", "<="))
    (directory / "replay.c").write_text(replay)
    shutil.copy(C_PORT / "vmap_lib.c", directory / "vmap_lib.c")
    lib = directory / "libvmap.so"
    subprocess.run(
        [
            COMPILER,
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O2",
            "-fPIC",
            "-shared",
            "-I",
            str(directory),
            "-o",
            str(lib),
            str(directory / "vmap_lib.c"),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return load(lib)


def load(path: Path) -> ctypes.CDLL:
    """Load the library and declare its prototypes (64-bit values, an opaque handle)."""
    so = ctypes.CDLL(str(path))
    u64, handle = ctypes.c_uint64, ctypes.c_void_p
    so.vmap_lib_create.argtypes, so.vmap_lib_create.restype = [u64, u64, u64], handle
    so.vmap_lib_alloc.argtypes, so.vmap_lib_alloc.restype = [handle, u64, u64], u64
    so.vmap_lib_free.argtypes, so.vmap_lib_free.restype = [handle, u64], u64
    so.vmap_lib_vm_low.argtypes, so.vmap_lib_vm_low.restype = [handle], u64
    so.vmap_lib_vm_top.argtypes, so.vmap_lib_vm_top.restype = [handle], u64
    so.vmap_lib_destroy.argtypes, so.vmap_lib_destroy.restype = [handle], None
    return so


class CVmap:
    """The adapter vaalloc.testing drives: one C vmap region."""

    def __init__(self, so: ctypes.CDLL, region: Region) -> None:
        self.so = so
        self.handle = so.vmap_lib_create(region.start, region.end, region.granule)
        assert self.handle, "vmap_lib_create: out of memory"

    def alloc(self, nr: int, align: int) -> int | None:
        return self.so.vmap_lib_alloc(self.handle, nr, align) or None

    def free(self, address: int) -> int:
        return int(self.so.vmap_lib_free(self.handle, address))

    @property
    def vm_low(self) -> int:
        return int(self.so.vmap_lib_vm_low(self.handle))

    @property
    def vm_top(self) -> int:
        return int(self.so.vmap_lib_vm_top(self.handle))

    def close(self) -> None:
        self.so.vmap_lib_destroy(self.handle)
        self.handle = None
