"""EER + minDCF: our sort-based numpy metrics vs speechbrain's, time and peak memory.

Each measurement runs in a fresh process so that one's peak RSS cannot hide another's:
peak RSS is the process high-water mark minus its RSS just before the call (the trial
list already allocated), and for numpy code tracemalloc's peak is reported as well.

    python benchmarks/bench_metrics.py                 # 1,000,000 trials, speechbrain on 10,000
    python benchmarks/bench_metrics.py --sb-trials 20000   # speechbrain then needs ~12 GB
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time
import tracemalloc

import numpy as np

TARGET_SECONDS = 2.0
TARGET_BYTES = 1 << 30


def _trials(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A VoxCeleb-like list: 1 target in 10, target scores shifted by 2 standard deviations."""
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.1
    scores = rng.standard_normal(n)
    scores[labels] += 2.0
    return scores, labels


def _rss_bytes() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def _measure(impl: str, n: int, queue) -> None:
    """Child process: time one EER + minDCF evaluation and report its memory."""
    scores, labels = _trials(n)
    if impl == "ours":
        from distill.eval.metrics import verification_metrics

        def run():
            out = verification_metrics(scores, labels)
            return out["eer"], out["min_dcf"]

    else:
        import torch
        from speechbrain.utils.metric_stats import EER, minDCF

        torch.set_num_threads(1)
        pos, neg = torch.from_numpy(scores[labels]), torch.from_numpy(scores[~labels])

        def run():
            # speechbrain's minDCF is not normalised: divide by min(c_miss p, c_fa (1 - p)).
            return EER(pos, neg)[0], minDCF(pos, neg)[0] / 0.01

    base_rss = _rss_bytes()
    tracemalloc.start()
    start = time.perf_counter()
    eer, dcf = run()
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    queue.put(dict(impl=impl, n=n, seconds=seconds, traced=traced_peak, rss=max(peak_rss, 0), eer=eer, dcf=dcf))


def measure(impl: str, n: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(impl, n, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def _mb(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:,.0f} MB"


def _line(r: dict) -> str:
    traced = f", tracemalloc peak {_mb(r['traced'])}" if r["impl"] == "ours" else ""
    return (
        f"{r['impl']:>11} {r['n']:>9,} trials: {r['seconds']:7.3f} s, peak RSS +{_mb(r['rss'])}{traced}"
        f"  (EER {r['eer']:.4f}, minDCF {r['dcf']:.4f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=1_000_000, help="trial-list size for our implementation")
    parser.add_argument(
        "--sb-trials",
        type=int,
        default=10_000,
        help="size for the side-by-side with speechbrain (its minDCF allocates thresholds x trials: ~3 GB at 10,000)",
    )
    args = parser.parse_args(argv)

    big = measure("ours", args.trials)
    print(_line(big))
    ours_small = measure("ours", args.sb_trials)
    sb_small = measure("speechbrain", args.sb_trials)
    print(_line(ours_small))
    print(_line(sb_small))
    print(
        f"speechbrain / ours at {args.sb_trials:,} trials: {sb_small['seconds'] / ours_small['seconds']:,.0f}x time, "
        f"{sb_small['rss'] / max(ours_small['rss'], ours_small['traced'], 1):,.0f}x memory; "
        f"|EER diff| {abs(sb_small['eer'] - ours_small['eer']):.2e}, "
        f"|minDCF diff| {abs(sb_small['dcf'] - ours_small['dcf']):.2e}"
    )
    memory = max(big["rss"], big["traced"])
    ok = big["seconds"] < TARGET_SECONDS and memory < TARGET_BYTES
    print(
        f"| EER + minDCF, {args.trials:,} trials | {big['seconds']:.2f} s, {_mb(memory)} peak "
        f"| < {TARGET_SECONDS:.0f} s, < 1 GB | {'met' if ok else 'MISSED'} |"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
