#!/usr/bin/env python3
"""numpy's float32 matmul GFLOP/s on this machine, as a reference point for `wgtrain bench`
(median of 10 runs after a warm-up). Needs numpy; prints nothing useful without it."""
import sys
import time

try:
    import numpy as np
except ImportError:
    sys.exit("numpy is not installed: pip install numpy")

for n in (256, 512, 1024, 2048):
    a = np.random.rand(n, n).astype(np.float32)
    b = np.random.rand(n, n).astype(np.float32)
    a @ b
    times = []
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    ms = sorted(times)[len(times) // 2] * 1e3
    print(f"numpy sgemm {n}x{n}x{n}: {ms:.3f} ms, {2 * n**3 / (ms * 1e-3) / 1e9:.1f} GFLOP/s")
