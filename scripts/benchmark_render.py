"""Time rasterize + interpolate + antialias (forward, and forward + backward) on a ~98k-face hand.

The mesh is the shipped procedural hand (MANO format) Loop-subdivided 3 times (1538 -> 98432 faces)
when ``utils.geometry.mano`` and ``utils.geometry.mesh.loop_subdivide`` are available; otherwise a hand-like stand-in
(palm ellipsoid + five finger capsules, 1520 faces) subdivided 3 times with trimesh. One view, camera
0.5 m away facing the palm, the hand's larger extent filling 80 % of the image (the SRHand crop
rule). The pipeline per view is the training one: rasterize, interpolate a 10-channel attribute
(normals, albedo, mask, position) with position gradients, antialias the 7 shaded channels, and for
the backward pass an L1-style loss.

Besides forward and forward + backward, it times a lower bound from the same run: rasterize +
interpolate alone (forward + backward, same loss on the un-antialiased channels). The three are timed
interleaved in every repeat, and the ratio (median over repeats of full / lower bound) cancels most
of the noise of a shared machine. ``--phases`` adds the split of one forward + backward into
rasterize, interpolate, antialias and backward (medians, timed between the calls).

Usage:
    python scripts/benchmark_render.py [--device cpu] [--threads 2] [--repeats 10] [--res 256 512] [--phases]

Prints a table, then as the last line a JSON list with one object per resolution:
``{"res", "faces", "ms_forward", "ms_forward_backward", "ms_lower_bound", "ratio_to_lower_bound"}``
(and ``"phases_ms"`` with ``--phases``).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.geometry.camera import Cameras, look_at  # noqa: E402
from utils.render import DEFAULT_AA_MAX_HOPS, get_renderer  # noqa: E402


def _procedural_hand_mesh() -> tuple[np.ndarray, np.ndarray, str] | None:
    """The shipped procedural hand subdivided 3 times, or None when those modules are not there yet."""
    try:
        from utils.geometry.mano import HandModel, default_hand_model_path
        from utils.geometry.mesh import loop_subdivide
    except ImportError:
        return None
    path = default_hand_model_path("right")
    if not os.path.exists(path):
        return None
    hand = HandModel.from_file(path, side="right")
    verts = hand.v_template.detach().cpu().double()
    faces = hand.faces.detach().cpu().long()
    verts, faces, _ = loop_subdivide(verts, faces, 3)
    verts, faces = torch.as_tensor(verts), torch.as_tensor(faces)
    return verts.numpy(), faces.numpy(), f"procedural hand ({os.path.basename(path)}), Loop x3"


def _stand_in_hand_mesh() -> tuple[np.ndarray, np.ndarray, str]:
    """Palm ellipsoid + 5 finger capsules (separate closed parts, ~1.5k faces), Loop-subdivided 3 times."""
    import trimesh

    parts = []
    palm = trimesh.creation.icosphere(subdivisions=2)  # 320 faces
    palm.apply_scale([0.045, 0.05, 0.015])
    parts.append(palm)
    for i, (x, length) in enumerate(
        [(-0.035, 0.05), (-0.012, 0.075), (0.01, 0.08), (0.03, 0.07), (0.045, 0.055)]
    ):
        finger = trimesh.creation.capsule(height=length, radius=0.008, count=[10, 11])  # 240 faces
        angle = 0.9 if i == 0 else 0.08 * (i - 2)
        finger.apply_transform(trimesh.transformations.rotation_matrix(math.pi / 2, [1, 0, 0]))
        finger.apply_transform(trimesh.transformations.rotation_matrix(angle, [0, 0, 1]))
        finger.apply_translation([x, -0.05 - length / 2 if i else -0.01, 0.0])
        parts.append(finger)
    verts, faces = [], []
    offset = 0
    for p in parts:
        verts.append(np.asarray(p.vertices))
        faces.append(np.asarray(p.faces) + offset)
        offset += len(p.vertices)
    verts, faces = np.concatenate(verts), np.concatenate(faces)
    for _ in range(3):
        verts, faces = trimesh.remesh.subdivide_loop(verts, faces)
    return verts, faces, "stand-in hand (palm ellipsoid + 5 capsules, trimesh Loop x3)"


def _time_interleaved(fns: dict, repeats: int, sync) -> dict[str, list[float]]:
    """Wall times in milliseconds of each of ``fns`` per repeat, the functions run in turn within each
    repeat (so that load changes hit them alike), after one warm-up round."""
    for fn in fns.values():  # warm-up (also fills the topology cache)
        fn()
    sync()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            sync()
            times[name].append(1000.0 * (time.perf_counter() - t0))
    return times


def render_step(
    renderer,
    cams,
    verts_param: torch.Tensor,
    attr: torch.Tensor,
    faces: torch.Tensor,
    res: int,
    sync,
    backward: bool,
    antialias: bool = True,
    phases: dict | None = None,
) -> None:
    """One forward (and with ``backward`` backward) pass of the renderer at ``res`` x ``res``; ``phases``
    collects the milliseconds of each part when given."""

    def mark(name: str) -> None:
        if phases is not None:
            sync()
            now = time.perf_counter()
            phases.setdefault(name, []).append(1000.0 * (now - phases["_t"][0]))
            phases["_t"][0] = now

    if phases is not None:
        phases.setdefault("_t", [0.0])[0] = time.perf_counter()
    verts_param.grad, attr.grad = None, None
    with torch.set_grad_enabled(backward):
        clip = cams.to_clip(verts_param)
        mark("to_clip")
        rast = renderer.rasterize(clip, faces, (res, res))
        mark("rasterize")
        feats = renderer.interpolate(attr, rast, faces, clip=clip)
        mark("interpolate")
        shaded = renderer.antialias(feats[..., :7], rast, clip, faces) if antialias else feats[..., :7]
        mark("antialias")
        if backward:
            loss = shaded.abs().mean() + feats[..., 7:].square().mean()
            mark("loss")
            loss.backward()
            mark("backward")


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--res", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "nvdiffrast"])
    parser.add_argument(
        "--aa-max-hops",
        type=int,
        default=DEFAULT_AA_MAX_HOPS,
        help="torch backend silhouette search depth (0 = nvdiffrast's rule)",
    )
    parser.add_argument(
        "--phases", action="store_true", help="also time rasterize / interpolate / antialias / backward"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)

    mesh = _procedural_hand_mesh() or _stand_in_hand_mesh()
    verts_np, faces_np, desc = mesh
    verts = torch.as_tensor(verts_np, dtype=torch.float32, device=device)
    verts = verts - 0.5 * (verts.amin(0) + verts.amax(0))  # centre the bounding box
    # Look at the palm: along the thinnest axis of the bounding box, from 0.5 m.
    size = verts.amax(0) - verts.amin(0)
    axis = int(size.argmin())
    eye, up = [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]
    eye[axis], up[(axis + 2) % 3] = 0.5, 1.0
    R, t = look_at(eye, up=up)
    extent = float(size[[i for i in range(3) if i != axis]].max())
    faces = torch.as_tensor(faces_np, dtype=torch.long, device=device)
    renderer = get_renderer(args.backend, aa_max_hops=args.aa_max_hops)
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(
        f"mesh: {desc}: {len(verts)} vertices, {len(faces)} faces; device {device}, threads "
        f"{torch.get_num_threads()}{load}, renderer {renderer!r}"
    )

    attr_base = torch.rand(1, len(verts), 10, device=device)
    results, rows = [], []
    for res in args.res:
        # Frame the hand like the SRHand crop: its larger image-plane extent fills 80 % of the view.
        focal = 0.8 * res * 0.5 / extent
        K = torch.tensor([[focal, 0, res / 2], [0, focal, res / 2], [0, 0, 1]], dtype=torch.float32)
        cams = Cameras(K=K[None], R=R[None], t=t[None], image_size=(res, res)).to(device)
        verts_param = verts[None].clone().requires_grad_(True)
        attr = attr_base.clone().requires_grad_(True)

        step = functools.partial(render_step, renderer, cams, verts_param, attr, faces, res, sync)

        times = _time_interleaved(
            {
                "forward": functools.partial(step, False),
                "forward_backward": functools.partial(step, True),
                "lower_bound": functools.partial(step, True, antialias=False),
            },
            args.repeats,
            sync,
        )
        ms_fwd, min_fwd = float(np.median(times["forward"])), min(times["forward"])
        ms_fb, min_fb = float(np.median(times["forward_backward"])), min(times["forward_backward"])
        ms_lb = float(np.median(times["lower_bound"]))
        ratio = float(np.median(np.array(times["forward_backward"]) / np.array(times["lower_bound"])))
        phases = None
        if args.phases:
            phases = {}
            for _ in range(args.repeats + 1):
                step(True, phases=phases)
            phases = {k: round(float(np.median(v[1:])), 2) for k, v in phases.items() if k != "_t"}
        with torch.no_grad():
            clip = cams.to_clip(verts_param)
            covered = float((renderer.rasterize(clip, faces, (res, res))[..., 3] > 0).float().mean())
        result = {
            "res": res,
            "faces": int(len(faces)),
            "ms_forward": round(ms_fwd, 2),
            "ms_forward_backward": round(ms_fb, 2),
            "ms_lower_bound": round(ms_lb, 2),
            "ratio_to_lower_bound": round(ratio, 3),
        }
        if phases is not None:
            result["phases_ms"] = phases
        results.append(result)
        rows.append((res, len(faces), covered, ms_fwd, min_fwd, ms_fb, min_fb, ms_lb, ratio))

    print(
        f"{'res':>5} {'faces':>7} {'covered':>8} {'fwd ms (median/min)':>20} {'fwd+bwd ms (median/min)':>24}"
        f" {'lower bound ms':>15} {'ratio':>6}"
    )
    for res, nf, covered, ms_fwd, min_fwd, ms_fb, min_fb, ms_lb, ratio in rows:
        print(
            f"{res:>5} {nf:>7} {covered:>8.1%} {ms_fwd:>11.2f} / {min_fwd:<6.2f} {ms_fb:>15.2f} / {min_fb:<6.2f}"
            f" {ms_lb:>15.2f} {ratio:>6.2f}"
        )
    print(
        "lower bound: rasterize + interpolate alone, forward + backward; ratio: median of fwd+bwd / lower bound"
    )
    for r in results:
        if "phases_ms" in r:
            split = ", ".join(f"{k} {v:.2f}" for k, v in r["phases_ms"].items())
            print(f"phases at {r['res']} px (ms, median): {split}")
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
