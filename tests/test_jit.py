"""magcam.jit: numba loads magcam's kernels without importing scipy's BLAS (0.1-0.3 s of a cold run where SciPy is installed)."""

import json
import subprocess
import sys
import textwrap


def _fresh(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_kernel_runs_without_numba_looking_for_scipy():
    # A finder first on sys.meta_path sees every import that gets as far as looking for a
    # module. numba's own import checks scipy's version; after that, its BLAS probe would look
    # for "scipy" (when it is not installed) or "scipy.linalg" (when it is).
    seen = _fresh("""
        import json, sys
        import numba
        looked_for = []
        class Recorder:
            def find_spec(self, name, path=None, target=None):
                looked_for.append(name)
        sys.meta_path.insert(0, Recorder())

        import numpy as np
        from magcam.pipeline import demosaic
        rgb = demosaic.bilinear(np.ones((16, 16), np.float32), "RGGB")   # loads (or compiles) a kernel
        print(json.dumps({"scipy": sorted({n for n in looked_for if n.split(".")[0] == "scipy"}),
                          "arraymath": "numba.np.arraymath" in sys.modules, "rgb": float(rgb.mean()),
                          "probe_left_blocked": "scipy.linalg.cython_blas" in sys.modules}))
    """)
    # numba's own later imports of the probe (np.dot in jitted code) still go through
    assert seen == {"scipy": [], "arraymath": True, "rgb": 1.0, "probe_left_blocked": False}


def test_nothing_is_done_when_the_probe_module_is_already_imported():
    seen = _fresh("""
        import json, sys, types
        probe = sys.modules["scipy.linalg.cython_blas"] = types.ModuleType("scipy.linalg.cython_blas")
        import magcam.jit
        print(json.dumps({"arraymath": "numba.np.arraymath" in sys.modules,
                          "probe_kept": sys.modules["scipy.linalg.cython_blas"] is probe}))
    """)
    assert seen == {"arraymath": False, "probe_kept": True}


def test_every_host_module_takes_numba_from_magcam_jit():
    from pathlib import Path

    import magcam

    direct = [f"{p.name}:{n}" for p in Path(magcam.__file__).parent.rglob("*.py") if p.name != "jit.py"
              for n, line in enumerate(p.read_text().splitlines(), 1)
              if line.strip().startswith(("import numba", "from numba"))]
    assert direct == [], "import numba through magcam.jit (it skips numba's scipy BLAS probe)"
