"""Decode throughput of GIIF (output megapixels per second) on the current device and thread count.

For each model size ('paper': RDN G0=128/D=16/C=8/G=64 + 4-stack depth-2 width-128 hourglass + MLP
[256]*4, 31.9 M parameters; 'cpu': the small ``giif_spec('cpu')``) and each output size, it times
``encode`` (LR 16x16 + normal map) and the chunked query of every output pixel under ``no_grad``, after
a warm-up decode of one full chunk. Random weights and inputs: throughput does not depend on them.

    python scripts/benchmark_giif.py                       # both sizes, 256 and 512, CPU, 1 thread
    python scripts/benchmark_giif.py --device cuda --sizes paper --outputs 256 512 1024 --threads 0

Prints a table, then one JSON line (the last line) with every measurement.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402
from models.giif import giif_spec  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        result = fn()
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def benchmark(
    size: str,
    out_sizes: list[int],
    device: torch.device,
    lr_size: int,
    normal_size: int,
    chunk: int,
    batch: int,
    repeats: int,
    use_normal: bool = True,
) -> list[dict]:
    torch.manual_seed(0)
    model = models.make(giif_spec(size, use_normal=use_normal)).to(device).eval()
    num_params = sum(p.numel() for p in model.parameters())
    lr = torch.rand(batch, 3, lr_size, lr_size, device=device)
    normal_map = None
    if use_normal:
        normal_map = torch.nn.functional.normalize(torch.randn(batch, 3, normal_size, normal_size), dim=1)
        normal_map = normal_map.to(device)
    rows = []
    with torch.no_grad():
        # warm-up with one full chunk (allocator, first-touch page faults, kernel selection)
        warm = math.ceil(math.sqrt(min(chunk, max(out_sizes) ** 2)))
        model.decode(lr, normal_map, (warm, warm), chunk=chunk)
        encode_s, feats = _timed(lambda: model.encode(lr, normal_map), device, repeats)
        for out in out_sizes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            query_s, image = _timed(
                lambda: model.decode_feats(feats, (out, out), chunk=chunk), device, repeats
            )
            assert image.shape == (batch, 3, out, out)
            megapixels = batch * out * out / 1e6
            rows.append(
                {
                    "size": size,
                    "use_normal": use_normal,
                    "params_M": round(num_params / 1e6, 3),
                    "out": out,
                    "batch": batch,
                    "encode_s": round(encode_s, 4),
                    "query_s": round(query_s, 4),
                    "decode_s": round(encode_s + query_s, 4),
                    "query_MPps": round(megapixels / query_s, 4),
                    "decode_MPps": round(megapixels / (encode_s + query_s), 4),
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
    parser.add_argument("--outputs", nargs="+", type=int, default=[256, 512], help="square output sizes")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N | auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave the default)")
    parser.add_argument("--lr-size", type=int, default=16)
    parser.add_argument("--normal-size", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=30000, help="queries per chunk")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="timed repetitions (best is reported)")
    parser.add_argument("--no-normal", action="store_true", help="benchmark the LIIF path (use_normal=False)")
    args = parser.parse_args(argv)

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    rows = []
    for size in args.sizes:
        rows += benchmark(
            size,
            args.outputs,
            device,
            args.lr_size,
            args.normal_size,
            args.chunk,
            args.batch,
            args.repeats,
            use_normal=not args.no_normal,
        )

    device_name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    )
    print(
        f"device {device} ({device_name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"LR {args.lr_size}^2, normal map {args.normal_size}^2, chunk {args.chunk}, batch {args.batch}"
    )
    header = f"{'size':<6} {'params':>8} {'out':>6} {'encode s':>9} {'query s':>9} {'query MP/s':>11} {'decode MP/s':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:<6} {r['params_M']:>7.2f}M {r['out']:>6} {r['encode_s']:>9.3f} {r['query_s']:>9.3f} "
            f"{r['query_MPps']:>11.4f} {r['decode_MPps']:>12.4f}"
        )
    summary = {
        "device": str(device),
        "device_name": device_name,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lr_size": args.lr_size,
        "normal_size": args.normal_size,
        "chunk": args.chunk,
        "results": rows,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
