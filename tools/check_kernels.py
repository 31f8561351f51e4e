#!/usr/bin/env python3
"""Compile-check every CUDA kernel family in kernels/ with NVRTC (no GPU needed).

Installs the PyPI wheel `nvidia-cuda-nvrtc==13.0.*` with `pip install --target` into
~/.cache/hybrid-retrieval/nvrtc-13.0 (or $HR_NVRTC_DIR) when it is not there yet, then compiles each kernels/*.cu (with kernels/common.cuh passed as an NVRTC header, exactly like
the runtime in crates/hr-tensor/src/cuda/kernels.rs) to PTX for sm_80 and sm_90 through ctypes
calls into libnvrtc, with the runtime's options. Exits non-zero with the NVRTC log on any error;
warnings are printed.

Usage: python3 tools/check_kernels.py [--arch sm_80,sm_90]
"""

import argparse
import ctypes
import glob
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")
WHEEL = "nvidia-cuda-nvrtc==13.0.*"
# Must match `compile_options` in crates/hr-tensor/src/cuda/kernels.rs.
OPTIONS = ["--std=c++17", "--fmad=false", "-default-device"]


# The pinned NVRTC lives in its own pip --target folder, so other wheels installed into
# site-packages (a different 13.x) cannot change what CI checks against.
PIN_DIR = os.environ.get(
    "HR_NVRTC_DIR", os.path.join(os.path.expanduser("~"), ".cache", "hybrid-retrieval", "nvrtc-13.0")
)


def find_nvrtc():
    env = os.environ.get("HR_NVRTC_LIB")
    if env and os.path.exists(env):
        return env
    for sub in ("cu13/lib", "cuda_nvrtc/lib"):
        hits = sorted(glob.glob(os.path.join(PIN_DIR, "nvidia", sub, "libnvrtc.so.13*")))
        hits = [h for h in hits if ".alt." not in h]
        if hits:
            return hits[0]
    return None


def load_nvrtc():
    path = find_nvrtc()
    if path is None:
        print(f"libnvrtc.so.13 not found in {PIN_DIR}; pip-installing {WHEEL} there", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--upgrade",
             "--target", PIN_DIR, WHEEL],
            check=True,
        )
        path = find_nvrtc()
    if path is None:
        sys.exit(f"error: no libnvrtc.so.13 after installing {WHEEL} into {PIN_DIR}")
    # libnvrtc dlopens libnvrtc-builtins.so.13.0 by name at compile time; outside
    # LD_LIBRARY_PATH that fails, so load it first (global) from the same folder.
    for b in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so.13*"))):
        if ".alt." not in b:
            ctypes.CDLL(b, mode=ctypes.RTLD_GLOBAL)
            break
    return path, ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


class Nvrtc:
    def __init__(self, lib):
        self.lib = lib
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p

    def check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what}: {self.lib.nvrtcGetErrorString(rc).decode()}")

    def version(self):
        major, minor = ctypes.c_int(), ctypes.c_int()
        self.check(self.lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        return major.value, minor.value

    def compile(self, name, src, headers, options):
        """Returns (ok, log, ptx) with the PTX text (empty on failure)."""
        prog = ctypes.c_void_p()
        hdr_src = (ctypes.c_char_p * len(headers))(*[h[1].encode() for h in headers])
        hdr_names = (ctypes.c_char_p * len(headers))(*[h[0].encode() for h in headers])
        self.check(
            self.lib.nvrtcCreateProgram(
                ctypes.byref(prog), src.encode(), name.encode(), len(headers), hdr_src, hdr_names
            ),
            "nvrtcCreateProgram",
        )
        try:
            opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
            rc = self.lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self.check(self.lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "log size")
            buf = ctypes.create_string_buffer(size.value)
            self.check(self.lib.nvrtcGetProgramLog(prog, buf), "log")
            log = buf.value.decode(errors="replace").strip()
            ptx = b""
            if rc == 0:
                ps = ctypes.c_size_t()
                self.check(self.lib.nvrtcGetPTXSize(prog, ctypes.byref(ps)), "ptx size")
                out = ctypes.create_string_buffer(ps.value)
                self.check(self.lib.nvrtcGetPTX(prog, out), "ptx")
                ptx = out.raw[: ps.value].rstrip(b"\0")
            return rc == 0, log, ptx
        finally:
            self.lib.nvrtcDestroyProgram(ctypes.byref(prog))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_80,sm_90", help="comma-separated virtual archs")
    ap.add_argument(
        "--ptx-dir",
        help="also write each file's PTX there as <arch>/<name>.ptx (compare two trees with diff -r)",
    )
    args = ap.parse_args()

    path, lib = load_nvrtc()
    nv = Nvrtc(lib)
    major, minor = nv.version()
    print(f"NVRTC {major}.{minor} from {path}")
    if (major, minor) != (13, 0) and not os.environ.get("HR_NVRTC_LIB"):
        sys.exit(f"error: expected NVRTC 13.0 (pinned {WHEEL}), got {major}.{minor}")
    common = os.path.join(KERNELS, "common.cuh")
    with open(common) as f:
        headers = [("common.cuh", f.read())]
    sources = sorted(glob.glob(os.path.join(KERNELS, "*.cu")))
    if not sources:
        sys.exit("error: no kernels/*.cu found")
    failures = 0
    for arch in args.arch.split(","):
        # compute_XY: PTX for that architecture (the runtime builds sm_XY CUBIN from the same
        # options).
        virt = arch.replace("sm_", "compute_")
        for path_cu in sources:
            name = os.path.basename(path_cu)
            with open(path_cu) as f:
                src = f.read()
            ok, log, ptx = nv.compile(name, src, headers, OPTIONS + [f"--gpu-architecture={virt}"])
            status = f"ok ({len(ptx)} bytes of PTX)" if ok else "FAILED"
            if ok and args.ptx_dir:
                os.makedirs(os.path.join(args.ptx_dir, arch), exist_ok=True)
                with open(os.path.join(args.ptx_dir, arch, name[:-3] + ".ptx"), "wb") as f:
                    f.write(ptx)
            print(f"  {arch} {name}: {status}")
            if log:
                print("    " + log.replace("\n", "\n    "))
            if not ok:
                failures += 1
    if failures:
        sys.exit(f"error: {failures} kernel compilation(s) failed")
    print(f"all {len(sources)} kernel files compile for {args.arch}")


if __name__ == "__main__":
    main()
