"""The collector: scrapes the exporters, stores, evaluates rules, notifies, serves the UI."""

import os

# numpy's OpenBLAS runs a large matrix-vector product (the PromQL kernels' exact row sums) on a
# thread per core, and those threads then spin waiting for more work: measured on 2 cores,
# 0.1 s of CPU per 0.5 s of idle after a 200,000-row product, and the product itself slower
# than on one thread. A collector has its own concurrency; numpy gets one thread. Set before
# numpy is first imported (head.py, promql/); an operator's own setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
