"""Decode throughput of GIIF and LIIF (output megapixels per second), factorised query against the reference.

For each model size ('paper': RDN G0=128/D=16/C=8/G=64 + 4-stack depth-2 width-128 hourglass + MLP
[256]*4, 31.9 M parameters; 'cpu': the small ``giif_spec('cpu')``), each model ('giif'; 'liif': the same
RDN and MLP, no normal branch, 3x3 feature unfolding as in LIIF) and each output size, it times ``encode``
(LR 16x16 + normal map) and the chunked query of every output pixel under ``no_grad``, after a warm-up
decode of one full chunk in each query mode. The query is timed in both ``query_mode``s of the same
model, interleaved (reference, factorised, reference, ...), ``--repeats`` times each; medians are reported
with their ratio and the largest absolute difference between the two images. Random weights and inputs:
throughput does not depend on them. The machine may be shared: compare the two columns of one run, not
numbers of different runs.

    python scripts/benchmark_giif.py --threads 2           # both sizes, both models, 256 and 512, CPU
    python scripts/benchmark_giif.py --device cuda --sizes paper --outputs 256 512 1024 --threads 0

Prints a table, then one JSON line (the last line) with every measurement: ``results`` holds the GIIF rows
(timings of the default, factorised path; ``reference_query_s``, ``query_speedup``, ``max_abs_diff``
compare), ``liif_results`` the LIIF rows.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from models.giif import giif_spec  # noqa: E402
from models.sr_coords import RESIDUAL_MODES  # noqa: E402

MODES = ("reference", "factorized")


def model_spec(size: str, model: str, residual: str = "none") -> dict:
    """GIIF at ``size``, or LIIF with GIIF's RDN and MLP (``feat_unfold`` on, LIIF's default), with the given
    ``residual`` mode (``models.giif``: the LR image interpolated at every query is added to the MLP's output)."""
    spec = giif_spec(size, residual=residual)
    if model == "giif":
        return spec
    return {
        "name": "liif",
        "args": {
            "encoder": spec["args"]["encoder"],
            "hidden_list": spec["args"]["hidden_list"],
            "residual": residual,
        },
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn, device: torch.device) -> tuple[float, object]:
    """Wall time of one call (seconds) and its result."""
    _sync(device)
    start = time.perf_counter()
    result = fn()
    _sync(device)
    return time.perf_counter() - start, result


def benchmark(
    size: str,
    model_name: str,
    out_sizes: list[int],
    device: torch.device,
    lr_size: int,
    normal_size: int,
    chunk: int,
    batch: int,
    repeats: int,
    residual: str = "none",
) -> list[dict]:
    torch.manual_seed(0)
    model = models.make(model_spec(size, model_name, residual)).to(device).eval()
    # the same weights in each query mode (a runtime argument of the constructor, not part of the spec)
    by_mode = {
        mode: models.make(models.model_spec(model, with_sd=True), load_sd=True, args={"query_mode": mode})
        .to(device)
        .eval()
        for mode in MODES
    }
    num_params = sum(p.numel() for p in model.parameters())
    lr = torch.rand(batch, 3, lr_size, lr_size, device=device)
    normal_map = None
    if model.use_normal:
        normal_map = torch.nn.functional.normalize(torch.randn(batch, 3, normal_size, normal_size), dim=1)
        normal_map = normal_map.to(device)
    rows = []
    with torch.no_grad():
        # warm-up with one full chunk per mode (allocator, first-touch page faults, kernel selection)
        warm = math.ceil(math.sqrt(min(chunk, max(out_sizes) ** 2)))
        for mode in MODES:
            by_mode[mode].decode(lr, normal_map, (warm, warm), chunk=chunk)
        encode_times = []
        for _ in range(repeats):
            seconds, feats = _time(lambda: model.encode(lr, normal_map), device)
            encode_times.append(seconds)
        encode_s = statistics.median(encode_times)
        for out in out_sizes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            times = {mode: [] for mode in MODES}
            images = {}
            for _ in range(repeats):
                for mode in MODES:
                    decode = functools.partial(by_mode[mode].decode_feats, feats, (out, out), chunk=chunk)
                    seconds, images[mode] = _time(decode, device)
                    times[mode].append(seconds)
            assert images["factorized"].shape == (batch, 3, out, out)
            query_s = statistics.median(times["factorized"])
            reference_s = statistics.median(times["reference"])
            megapixels = batch * out * out / 1e6
            rows.append(
                {
                    "size": size,
                    "model": model_name,
                    "residual": residual,
                    "use_normal": model.use_normal,
                    "params_M": round(num_params / 1e6, 3),
                    "out": out,
                    "batch": batch,
                    "repeats": repeats,
                    "encode_s": round(encode_s, 4),
                    "query_s": round(query_s, 4),
                    "decode_s": round(encode_s + query_s, 4),
                    "query_MPps": round(megapixels / query_s, 4),
                    "decode_MPps": round(megapixels / (encode_s + query_s), 4),
                    "reference_query_s": round(reference_s, 4),
                    "reference_decode_s": round(encode_s + reference_s, 4),
                    "query_speedup": round(reference_s / query_s, 3),
                    "max_abs_diff": float((images["factorized"] - images["reference"]).abs().max()),
                    "peak_mem_MB": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
                    if device.type == "cuda"
                    else None,
                }
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="+", default=["paper", "cpu"], choices=["paper", "cpu"])
    parser.add_argument("--models", nargs="+", default=["giif", "liif"], choices=["giif", "liif"])
    parser.add_argument("--outputs", nargs="+", type=int, default=[256, 512], help="square output sizes")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--lr-size", type=int, default=16)
    parser.add_argument("--normal-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=30000, help="queries per chunk")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--residual",
        default="none",
        choices=list(RESIDUAL_MODES),
        help="model.args.residual of the timed models (the interpolated LR image added to every query)",
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repetitions per mode (medians reported)"
    )
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    rows = []
    for size in args.sizes:
        for model_name in args.models:
            rows += benchmark(
                size,
                model_name,
                args.outputs,
                device,
                args.lr_size,
                args.normal_size,
                args.chunk,
                args.batch,
                args.repeats,
                args.residual,
            )

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    print(
        f"device {device} ({device_name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"LR {args.lr_size}^2, normal map {args.normal_size}^2, chunk {args.chunk}, batch {args.batch}, "
        f"medians of {args.repeats} interleaved repeats"
    )
    header = (
        f"{'size':<6} {'model':<5} {'params':>8} {'out':>5} {'encode s':>9} {'ref query s':>12} "
        f"{'new query s':>12} {'speedup':>8} {'max |diff|':>11} {'decode MP/s':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:<6} {r['model']:<5} {r['params_M']:>7.2f}M {r['out']:>5} {r['encode_s']:>9.3f} "
            f"{r['reference_query_s']:>12.3f} {r['query_s']:>12.3f} {r['query_speedup']:>7.2f}x "
            f"{r['max_abs_diff']:>11.2e} {r['decode_MPps']:>12.4f}"
        )
    summary = {
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lr_size": args.lr_size,
        "normal_size": args.normal_size,
        "chunk": args.chunk,
        "repeats": args.repeats,
        "results": [r for r in rows if r["model"] == "giif"],
        "liif_results": [r for r in rows if r["model"] == "liif"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
