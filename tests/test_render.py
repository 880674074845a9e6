"""Renderer: torch backend vs. per-pixel references, conventions, gradients, inverse rendering."""

import math

import pytest
import torch

from utils.geometry.camera import Cameras, look_at
from utils.geometry.mesh import vertex_normals
from utils.geometry.sh import sh_shade
from utils.render import get_renderer
from utils.render import torch_backend as tb
from utils.render.interpolate import interpolate_autograd
from utils.render.mesh_render import render_attributes, render_mask, render_normal_map
from utils.render.mesh_render import visible_vertices as mesh_visible_vertices
from utils.render.reference import antialias_reference, interpolate_reference, rasterize_reference

F64 = torch.float64


def _random_scene(seed, batch=2, num_verts=14, num_faces=12, extras=True):
    """Random overlapping triangles in clip space (both windings), optionally with degenerate triangles,
    vertices behind the eye (w <= 0) and in front of the near plane (z < -w)."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num_verts, 2, generator=g, dtype=F64) * 2.6 - 1.3
    w = torch.rand(batch, num_verts, 1, generator=g, dtype=F64) + 0.5
    z = torch.rand(batch, num_verts, 1, generator=g, dtype=F64) * 1.8 - 0.9
    clip = torch.cat([xy * w, z * w, w], -1)
    # Distinct vertex sets (a repeated triangle ties in depth exactly; that case has its own test).
    faces, seen = [], set()
    while len(faces) < num_faces:
        f = torch.randperm(num_verts, generator=g)[:3]
        if frozenset(f.tolist()) not in seen:
            seen.add(frozenset(f.tolist()))
            faces.append(f)
    faces = torch.stack(faces)
    if extras:
        clip[0, 0, 3] = -0.5  # behind the eye: its triangles are culled
        clip[1, 1, 2] = -1.5 * clip[1, 1, 3]  # in front of the near plane: clipped per pixel
        clip[:, 2] = 0.5 * (clip[:, 3] + clip[:, 4])  # vertex 2 on segment 3-4
        faces = torch.cat([faces, torch.tensor([[3, 2, 4], [5, 5, 6]])])  # zero area, repeated vertex
    return clip, faces


def _icosphere(subdivisions=2, radius=1.0):
    """Icosahedron split ``subdivisions`` times (each triangle into 4), projected on the sphere; faces
    wound counter-clockwise seen from outside. (Written out to keep trimesh's import time out of tests.)"""
    p = (1 + 5**0.5) / 2
    # fmt: off
    verts = [(-1, p, 0), (1, p, 0), (-1, -p, 0), (1, -p, 0), (0, -1, p), (0, 1, p), (0, -1, -p), (0, 1, -p),
             (p, 0, -1), (p, 0, 1), (-p, 0, -1), (-p, 0, 1)]
    faces = [(0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11), (1, 5, 9), (5, 11, 4), (11, 10, 2),
             (10, 7, 6), (7, 1, 8), (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9), (4, 9, 5), (2, 4, 11),
             (6, 2, 10), (8, 6, 7), (9, 8, 1)]
    # fmt: on
    for _ in range(subdivisions):
        mid, new_faces = {}, []

        def midpoint(a, b, mid=mid):
            key = (min(a, b), max(a, b))
            if key not in mid:
                mid[key] = len(verts)
                verts.append(tuple((x + y) / 2 for x, y in zip(verts[a], verts[b], strict=True)))
            return mid[key]

        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            new_faces += [(a, ab, ca), (b, bc, ab), (c, ca, bc), (ab, bc, ca)]
        faces = new_faces
    v = torch.tensor(verts, dtype=F64)
    return radius * v / v.norm(dim=-1, keepdim=True), torch.tensor(faces, dtype=torch.long)


def _front_camera(size, focal, distance=1.5, dtype=F64):
    R, t = look_at((0.0, 0.0, -distance), dtype=dtype)
    h, w = size
    K = torch.tensor([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], dtype=dtype)
    return Cameras(K=K[None], R=R[None], t=t[None], image_size=size)


# ---------------------------------------------------------------------------------------------
# rasterize
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rasterize_matches_reference(seed):
    clip, faces = _random_scene(seed)
    rast = tb.rasterize(clip, faces, (13, 17))
    ref = rasterize_reference(clip, faces, (13, 17))
    assert rast.shape == (2, 13, 17, 4) and rast.dtype == F64
    assert torch.equal(rast[..., 3], ref[..., 3])
    assert torch.allclose(rast, ref, atol=1e-9)
    assert (rast[..., 3] > 0).any() and (rast[..., 3] == 0).any()
    # Background is all zero.
    assert (rast[rast[..., 3] == 0] == 0).all()


def test_rasterize_float32_and_chunking():
    clip, faces = _random_scene(3, extras=False)
    ref = tb.rasterize(clip, faces, (20, 24))
    rast32 = tb.rasterize(clip.float(), faces.int(), (20, 24))
    assert rast32.dtype == torch.float32
    assert (rast32[..., 3] != ref[..., 3].float()).sum() <= 1
    # Tiny candidate budget: many chunks, same result.
    assert torch.equal(tb.rasterize(clip, faces, (20, 24), max_candidates=7), ref)


def test_rasterize_tie_break_and_windings():
    tri = torch.tensor([[[-0.9, -0.9, 0.2, 1.0], [0.9, -0.9, 0.2, 1.0], [-0.9, 0.9, 0.2, 1.0]]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [0, 2, 1], [0, 1, 2]])  # same triangle, both windings, duplicated
    rast = tb.rasterize(tri, faces, (8, 8))
    ids = rast[..., 3]
    assert set(ids.unique().tolist()) == {0.0, 1.0}  # exact depth ties go to the smallest index
    one = tb.rasterize(tri, faces[1:2], (8, 8))
    assert torch.equal(one[..., 3] > 0, ids > 0)  # reversed winding covers the same pixels


def test_row_zero_is_top_and_pixel_centres():
    # A triangle in the upper-left quadrant of NDC (y_ndc < 0 is the top, no flip) covers only rows and
    # columns in the first half; a vertex exactly on a pixel centre covers that pixel.
    tri = torch.tensor([[[-1.0, -1.0, 0.0, 1.0], [-0.2, -1.0, 0.0, 1.0], [-1.0, -0.2, 0.0, 1.0]]], dtype=F64)
    rast = tb.rasterize(tri, torch.tensor([[0, 1, 2]]), (10, 10))
    rows, cols = (rast[0, ..., 3] > 0).nonzero(as_tuple=True)
    assert rows.max() < 5 and cols.max() < 5 and rast[0, 0, 0, 3] == 1
    # Pixel (row 1, col 3) has its centre at x_ndc = 7/10 - 1, y_ndc = 3/10 - 1.
    c = (-0.3, -0.7)
    small = torch.tensor(
        [[[c[0], c[1], 0.0, 1.0], [c[0] + 0.05, c[1], 0.0, 1.0], [c[0], c[1] + 0.05, 0.0, 1.0]]], dtype=F64
    )
    rast = tb.rasterize(small, torch.tensor([[0, 1, 2]]), (10, 10))
    assert (rast[0, ..., 3] > 0).nonzero().tolist() == [[1, 3]]
    # The barycentrics there are those of vertex 0: u = 1, v = 0.
    assert torch.allclose(rast[0, 1, 3, :2], torch.tensor([1.0, 0.0], dtype=F64))


def test_watertight_grid_through_pixel_centres():
    # A grid whose vertices and diagonals pass exactly through pixel centres: no holes.
    n = 8
    coords = (2 * torch.arange(n, dtype=F64) + 1) / n - 1
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")
    verts = torch.stack([gx, gy, torch.zeros_like(gx), torch.ones_like(gx)], -1).reshape(1, -1, 4)
    idx = torch.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    faces = torch.cat([torch.stack([a, b, d], -1).reshape(-1, 3), torch.stack([a, d, c], -1).reshape(-1, 3)])
    rast = tb.rasterize(verts, faces, (n, n))
    assert (rast[..., 3] > 0).all()


def test_near_plane_cull_and_clip():
    faces = torch.tensor([[0, 1, 2]])
    tri = torch.tensor([[[-0.9, -0.9, 0.5, 1.0], [0.9, -0.9, 0.5, 1.0], [0.0, 0.9, 0.5, 1.0]]], dtype=F64)
    behind = tri.clone()
    behind[0, 2] = torch.tensor([0.0, -0.9, 0.5, -1.0], dtype=F64)  # w < 0
    assert (tb.rasterize(behind, faces, (8, 8))[..., 3] == 0).all()
    # Vertex 2 in front of the near plane (z/w < -1): the part of the triangle with z/w < -1 is cut.
    crossing = tri.clone()
    crossing[0, 2, 2] = -3.0
    full = tb.rasterize(tri, faces, (16, 16))[..., 3] > 0
    cut = tb.rasterize(crossing, faces, (16, 16))
    assert (cut[..., 3] > 0).sum() < full.sum() and (cut[..., 3] > 0).any()
    assert (cut[..., 2][cut[..., 3] > 0] >= -1).all()
    ref = rasterize_reference(crossing, faces, (16, 16))
    assert torch.equal(cut[..., 3], ref[..., 3]) and torch.allclose(cut, ref, atol=1e-12)


def test_degenerate_input_and_errors():
    clip = torch.tensor([[[0.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0], [1.0, 1.0, 0.0, 1.0]]], dtype=F64)
    rast = tb.rasterize(clip, torch.tensor([[0, 1, 2], [0, 0, 1]]), (8, 8))
    assert (rast == 0).all() and torch.isfinite(rast).all()
    assert (tb.rasterize(clip, torch.zeros(0, 3, dtype=torch.long), (4, 4)) == 0).all()
    with pytest.raises(ValueError, match=r"clip must be a float tensor of shape \(B, V, 4\), got \(3, 4\)"):
        tb.rasterize(clip[0], torch.tensor([[0, 1, 2]]), (8, 8))
    with pytest.raises(ValueError, match=r"faces must be an integer tensor of shape \(F, 3\)"):
        tb.rasterize(clip, torch.tensor([[0.0, 1.0, 2.0]]), (8, 8))
    with pytest.raises(ValueError, match="faces index vertices"):
        tb.rasterize(clip, torch.tensor([[0, 1, 3]]), (8, 8))
    with pytest.raises(ValueError, match="resolution"):
        tb.rasterize(clip, torch.tensor([[0, 1, 2]]), (0, 8))
    with pytest.raises(ValueError, match=r"rast must have shape \(B, H, W, 4\)"):
        tb.interpolate(torch.zeros(3, 1), torch.zeros(8, 8, 4), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="color must have shape"):
        tb.antialias(torch.zeros(1, 4, 4, 1), rast, clip, torch.tensor([[0, 1, 2]]))


# ---------------------------------------------------------------------------------------------
# interpolate
# ---------------------------------------------------------------------------------------------


def test_interpolate_matches_reference_and_clip_path():
    clip, faces = _random_scene(4)
    g = torch.Generator().manual_seed(4)
    attr = torch.randn(2, clip.shape[1], 3, generator=g, dtype=F64)
    rast = tb.rasterize(clip, faces, (12, 12))
    out = tb.interpolate(attr, rast, faces)
    assert torch.allclose(out, interpolate_reference(attr, rast, faces), atol=1e-12)
    out_clip = tb.interpolate(attr, rast, faces, clip=clip.clone().requires_grad_(True))
    assert torch.allclose(out_clip, out, atol=1e-9)
    # (V, C) attributes broadcast over the batch.
    assert torch.allclose(
        tb.interpolate(attr[0], rast, faces)[1], tb.interpolate(attr[:1].expand(2, -1, -1), rast, faces)[1]
    )


def test_interpolation_is_perspective_correct():
    # Interpolated world positions of a slanted triangle project back onto the pixel centres.
    cams = _front_camera((12, 12), focal=14.0, distance=1.0)
    verts = torch.tensor([[[-0.5, -0.4, 0.3], [0.5, -0.3, -0.2], [0.0, 0.5, 0.6]]], dtype=F64)
    faces = torch.tensor([[0, 1, 2]])
    clip = cams.to_clip(verts)
    rast = tb.rasterize(clip, faces, (12, 12))
    pos = tb.interpolate(verts, rast, faces)
    rows, cols = (rast[0, ..., 3] > 0).nonzero(as_tuple=True)
    uv, _ = cams.project(pos[0, rows, cols][None])
    centres = torch.stack([cols.to(F64) + 0.5, rows.to(F64) + 0.5], -1)
    assert len(rows) > 20 and torch.allclose(uv[0], centres, atol=1e-9)


def test_interpolate_gradcheck_attr_and_clip():
    clip, faces = _random_scene(5, batch=1, num_verts=6, num_faces=4, extras=False)
    rast = tb.rasterize(clip, faces, (6, 6))
    assert (rast[..., 3] > 0).sum() > 5
    g = torch.Generator().manual_seed(5)
    attr = torch.randn(1, 6, 2, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a: tb.interpolate(a, rast, faces), (attr,))
    # W.r.t. the vertex positions with the triangle ids held fixed (gradients within triangles).
    clip_var = clip.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda c: tb.interpolate(attr.detach(), rast, faces, clip=c), (clip_var,))


def test_interpolate_hand_written_backward_matches_autograd():
    """Gradients w.r.t. attributes and positions equal autograd's on the same forward (float64, two
    images, per-image, shared and broadcast attributes, culled and near-clipped vertices)."""
    clip, faces = _random_scene(6)
    rast = tb.rasterize(clip, faces, (12, 12))
    g = torch.Generator().manual_seed(6)
    num_verts = clip.shape[1]
    for attr in (
        torch.randn(2, num_verts, 3, generator=g, dtype=F64),
        torch.randn(num_verts, 3, generator=g, dtype=F64),
        torch.randn(1, num_verts, 3, generator=g, dtype=F64),
    ):
        results = []
        for fn in (tb.interpolate, interpolate_autograd):
            a, c = attr.clone().requires_grad_(True), clip.clone().requires_grad_(True)
            out = fn(a, rast, faces, clip=c)
            weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=F64)
            (out * weight).sum().backward()
            results.append((out.detach(), a.grad, c.grad))
        for new, old in zip(*results, strict=True):
            assert torch.allclose(new, old, atol=1e-10)
    # Both inputs at once, two images.
    clip, faces = _random_scene(8, batch=2, num_verts=6, num_faces=4, extras=False)
    rast = tb.rasterize(clip, faces, (6, 6))
    attr = torch.randn(2, 6, 2, generator=g, dtype=F64, requires_grad=True)
    clip_var = clip.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, c: tb.interpolate(a, rast, faces, clip=c), (attr, clip_var))


def test_interpolate_reuses_the_raster_only_while_unchanged():
    """interpolate (and antialias) reuse the covered pixels, edge values (and projected vertices)
    rasterize computed for the same rast, clip and faces objects; a copy of rast, or clip or rast
    changed in place, must give what a fresh computation gives."""
    clip, faces = _random_scene(10)
    g = torch.Generator().manual_seed(10)
    attr = torch.randn(2, clip.shape[1], 3, generator=g, dtype=F64)
    clip = clip.clone().requires_grad_(True)

    def run(rast, c):
        c.grad = None
        out = tb.interpolate(attr, rast, faces, clip=c)
        out.square().sum().backward()
        return out.detach(), c.grad.clone()

    rast = tb.rasterize(clip, faces, (12, 12))
    for a, b in zip(run(rast, clip), run(rast.clone(), clip), strict=True):
        assert torch.equal(a, b)
    with torch.no_grad():
        clip.mul_(1.01)  # the stashed edge values are stale now
    for a, b in zip(run(rast, clip), run(rast.clone(), clip), strict=True):
        assert torch.equal(a, b)
    rast = tb.rasterize(clip, faces, (12, 12))
    with torch.no_grad():
        rast[..., 3] = torch.where(rast[..., 3] == rast[..., 3].max(), 0, rast[..., 3])  # drop a triangle
    assert torch.equal(tb.interpolate(attr, rast, faces), tb.interpolate(attr, rast.clone(), faces))
    # antialias reuses rasterize's projected vertices the same way.
    rast = tb.rasterize(clip, faces, (12, 12))
    color = torch.rand(2, 12, 12, 2, generator=g, dtype=F64)
    assert torch.equal(tb.antialias(color, rast, clip, faces), tb.antialias(color, rast.clone(), clip, faces))
    with torch.no_grad():
        clip.mul_(0.97)
    assert torch.equal(tb.antialias(color, rast, clip, faces), tb.antialias(color, rast.clone(), clip, faces))


# ---------------------------------------------------------------------------------------------
# antialias
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [6, 7])
def test_antialias_matches_reference(seed):
    clip, faces = _random_scene(seed, num_faces=14)
    g = torch.Generator().manual_seed(seed)
    rast = tb.rasterize(clip, faces, (14, 15))
    color = torch.rand(2, 14, 15, 3, generator=g, dtype=F64)
    for hops in (0, 8):  # nvdiffrast's rule, and the silhouette search across interior edges
        out = tb.antialias(color, rast, clip, faces, max_hops=hops)
        ref = antialias_reference(color, rast, clip, faces, max_hops=hops)
        assert torch.allclose(out, ref, atol=1e-12)
        assert not torch.allclose(out, color)


@pytest.mark.parametrize("seed", [10, 23])
def test_antialias_silhouette_filter_with_culled_vertices(seed):
    """Triangles with a vertex at w <= 0 are not drawn and their edges are no silhouette candidates of
    their own (scenes where such a triangle's screen box is NaN; a regression once crashed here)."""
    clip, faces = _random_scene(seed)
    assert (clip[..., 3] <= 0).any()
    g = torch.Generator().manual_seed(seed)
    rast = tb.rasterize(clip, faces, (12, 12))
    color = torch.rand(2, 12, 12, 2, generator=g, dtype=F64)
    out = tb.antialias(color, rast, clip, faces, max_hops=8)
    assert torch.allclose(out, antialias_reference(color, rast, clip, faces, max_hops=8), atol=1e-12)


def test_antialias_next_to_triangles_behind_the_eye():
    """Edges between drawn triangles and undrawn ones (a vertex at w <= 0) inside a consistently wound
    grid are silhouettes for the exact test; the silhouette filter must keep them (a regression once
    dropped them)."""
    n = 9
    xs, ys = torch.linspace(-1.6, 1.6, n, dtype=F64), torch.linspace(-1.6, 1.2, n, dtype=F64)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    w = 1.0 - 0.9 * (y + 1.6) / 2.2 + 0.013 * x  # the bottom rows lie behind the eye
    clip = torch.stack([x * w, y * w, 0.3 * w, w], -1).reshape(1, -1, 4)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            faces += [[a, d, b], [b, d, e]]
    faces = torch.tensor(faces)
    assert (clip[..., 3] <= 0).any()
    rast = tb.rasterize(clip, faces, (20, 20))
    color = torch.rand(1, 20, 20, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = antialias_reference(color, rast, clip, faces, max_hops=8)
    assert (ref != color).any(-1).sum() >= 5
    assert torch.allclose(tb.antialias(color, rast, clip, faces, max_hops=8), ref, atol=1e-12)


def test_antialias_closed_mesh_blends_only_the_outline():
    verts, faces = _icosphere(2, 0.4)
    cams = _front_camera((24, 24), focal=30.0)
    clip = cams.to_clip(verts[None])
    rast = tb.rasterize(clip, faces, (24, 24))
    inside = (rast[..., 3:] > 0).to(F64)
    out = tb.antialias(inside, rast, clip, faces)
    changed = (out - inside).abs()[0, ..., 0] > 1e-12
    # Every changed pixel touches the background (no blending across interior edges).
    bg = torch.nn.functional.pad(1 - inside[0, ..., 0], (1, 1, 1, 1))
    near_bg = (bg[1:-1, 1:-1] + bg[:-2, 1:-1] + bg[2:, 1:-1] + bg[1:-1, :-2] + bg[1:-1, 2:]) > 0
    assert changed.any() and (near_bg[changed]).all()
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_antialias_coverage_gradient_matches_finite_differences():
    faces = torch.tensor([[0, 1, 2]])
    base = torch.tensor(
        [[[-0.63, -0.71, 0.3, 1.0], [0.52, -0.44, 0.3, 1.2], [-0.18, 0.66, 0.3, 0.9]]], dtype=F64
    )

    def coverage(clip):
        rast = tb.rasterize(clip, faces, (16, 16))
        return tb.antialias((rast[..., 3:] > 0).to(F64), rast, clip, faces).sum()

    clip = base.clone().requires_grad_(True)
    coverage(clip).backward()
    grad = clip.grad[0, 0, 0]
    assert abs(float(grad)) > 1.0

    def fd(eps):
        plus, minus = base.clone(), base.clone()
        plus[0, 0, 0] += eps
        minus[0, 0, 0] -= eps
        return float(coverage(plus) - coverage(minus)) / (2 * eps)

    # Small steps keep the triangle ids: the AA output is smooth there and matches its gradient.
    assert math.isclose(fd(1e-6), float(grad), rel_tol=1e-4)
    # Large steps (pixels change hands) follow the true area change, which AA approximates.
    area_rate = fd(0.1)
    assert math.isclose(area_rate, float(grad), rel_tol=0.2)


def test_antialias_silhouette_gradient_on_dense_mesh():
    # A dense sphere (5120 faces, ~1 px triangles): the silhouette triangles are sub-pixel slivers.
    # d(sum of AA coverage)/d(scale) must match the analytic rate of the projected disc's area,
    # pi f^2 r^2 / (d^2 - r^2) for a sphere of radius r at distance d. nvdiffrast's rule (max_hops=0)
    # finds almost none of these silhouettes; the search across interior edges does.
    verts, faces = _icosphere(4, 0.4)
    focal, dist, r = 60.0, 1.5, 0.4
    cams = _front_camera((48, 48), focal=focal, distance=dist)
    expect = 2 * math.pi * focal**2 * r**2 * dist**2 / (dist**2 - r**2) ** 2

    def rate(max_hops):
        scale = torch.ones((), dtype=F64, requires_grad=True)
        clip = cams.to_clip(verts[None] * scale)
        rast = tb.rasterize(clip, faces, (48, 48))
        cover = tb.antialias((rast[..., 3:] > 0).to(F64), rast, clip, faces, max_hops=max_hops).sum()
        return torch.autograd.grad(cover, scale)[0].item()

    assert abs(rate(tb.DEFAULT_AA_MAX_HOPS) / expect - 1) < 0.07
    assert rate(0) < 0.1 * expect


def test_antialias_search_matches_reference_with_holes_and_flips():
    # The pair prefilter and the walk against the plain per-pair reference, on a dense mesh with
    # boundary edges (holes) and inconsistently wound triangles.
    verts, faces = _icosphere(4, 0.4)
    g = torch.Generator().manual_seed(11)
    flip = torch.rand(len(faces), generator=g) < 0.1
    faces = torch.where(flip[:, None], faces[:, [0, 2, 1]], faces)
    faces = faces[torch.rand(len(faces), generator=g) > 0.05]
    cams = _front_camera((20, 20), focal=25.0)
    clip = cams.to_clip(verts[None])
    rast = tb.rasterize(clip, faces, (20, 20))
    color = torch.rand(1, 20, 20, 2, generator=g, dtype=F64)
    out = tb.antialias(color, rast, clip, faces, max_hops=32)
    assert torch.allclose(out, antialias_reference(color, rast, clip, faces, max_hops=32), atol=1e-12)
    assert ((out - color).abs() > 1e-12).sum() > 50


def test_antialias_without_silhouettes_keeps_the_graph():
    # A triangle covering the whole image has no silhouette pair: the output equals the input but a
    # loss on it still back-propagates (zero gradient) to clip.
    clip = torch.tensor([[[-4.0, -4.0, 0.0, 1.0], [4.0, -4.0, 0.0, 1.0], [0.0, 4.0, 0.0, 1.0]]], dtype=F64)
    clip.requires_grad_(True)
    faces = torch.tensor([[0, 1, 2]])
    rast = tb.rasterize(clip, faces, (6, 6))
    assert (rast[..., 3] == 1).all()
    color = torch.rand(1, 6, 6, 3, dtype=F64)
    out = tb.antialias(color, rast, clip, faces)
    assert torch.equal(out, color)
    out.sum().backward()
    assert torch.equal(clip.grad, torch.zeros_like(clip))


def test_antialias_gradcheck_color_and_clip():
    clip, faces = _random_scene(8, batch=1, num_verts=7, num_faces=5, extras=False)
    rast = tb.rasterize(clip, faces, (7, 7))
    g = torch.Generator().manual_seed(8)
    color = torch.rand(1, 7, 7, 2, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: tb.antialias(c, rast, clip, faces), (color,))
    clip_var = clip.clone().requires_grad_(True)
    out = tb.antialias(color.detach(), rast, clip_var, faces)
    assert out.requires_grad and not torch.equal(out.detach(), color.detach())
    assert torch.autograd.gradcheck(
        lambda c: tb.antialias(color.detach(), rast, c, faces), (clip_var,), eps=1e-7, fast_mode=True
    )


def test_antialias_blend_backward_gradcheck():
    """The blend's hand-written backward, w.r.t. colour and blend weights at once, with pixels that
    several pairs blend (two images, float64)."""
    from utils.render.antialias import _Blend

    g = torch.Generator().manual_seed(9)
    color = torch.rand(2, 4, 5, 3, generator=g, dtype=F64, requires_grad=True)
    pix0 = torch.tensor([0, 1, 6, 6, 7, 21, 33, 0])
    pix1 = torch.tensor([1, 2, 7, 11, 12, 22, 38, 5])
    alpha = (torch.rand(8, generator=g, dtype=F64) - 0.5).requires_grad_(True)
    target = torch.where(alpha > 0, pix0, pix1).detach()
    assert torch.autograd.gradcheck(lambda c, a: _Blend.apply(c, a, pix0, pix1, target), (color, alpha))


# ---------------------------------------------------------------------------------------------
# visibility, helpers, inverse rendering
# ---------------------------------------------------------------------------------------------


def test_visible_vertices_and_topology():
    verts, faces = _icosphere(2, 0.4)
    cams = _front_camera((32, 32), focal=40.0)
    clip = cams.to_clip(verts[None])
    rast = tb.rasterize(clip, faces, (32, 32))
    vis = tb.visible_vertices(rast, faces, len(verts))
    ids = rast[..., 3][rast[..., 3] > 0].long().unique() - 1
    expect = torch.zeros(len(verts), dtype=torch.bool)
    expect[faces[ids].reshape(-1)] = True
    assert torch.equal(vis[0], expect)
    # The camera is at -z: front vertices visible, back ones not.
    assert vis[0, verts[:, 2].argmin()] and not vis[0, verts[:, 2].argmax()]
    assert torch.equal(mesh_visible_vertices(get_renderer("torch"), verts, faces, cams), vis)
    # Topology of a closed mesh: every edge has a neighbour, and the neighbour's vertex is not on the edge.
    topo = tb.mesh_topology(faces)
    opp, nbr = topo.opposite, topo.neighbour
    assert (opp >= 0).all() and (opp != faces).all() and (nbr >= 0).all() and topo.consistent.all()
    # Each undirected edge once: E = 3F / 2 for a closed mesh.
    assert topo.edges.shape == (len(faces) * 3 // 2, 4) and topo.edge_consistent.all()
    assert not tb.mesh_topology(torch.cat([faces[:1, [0, 2, 1]], faces[1:]])).consistent.all()
    # The neighbour across edge i holds both edge vertices and the opposite vertex.
    for f in (0, 17, 100):
        for i in range(3):
            edge = {int(faces[f, (i + 1) % 3]), int(faces[f, (i + 2) % 3])}
            assert set(faces[nbr[f, i]].tolist()) == edge | {int(opp[f, i])}
    assert tb.mesh_topology(faces)[0] is opp  # cached


@pytest.mark.parametrize("dtype", [torch.long, torch.int32])
def test_per_mesh_caches_follow_changes_to_the_faces(dtype):
    """Faces-derived tables (long copy, index columns, topology, search table) are cached per faces
    tensor; an in-place edit or a new tensor of the same shape must give what fresh faces give."""
    verts, faces = _icosphere(2, 0.5)
    cams = _front_camera((24, 24), focal=30.0)
    clip = cams.to_clip(verts[None])

    def render(f):
        rast = tb.rasterize(clip, f, (24, 24))
        return rast, tb.antialias((rast[..., 3:] > 0).to(F64), rast, clip, f), tb.mesh_topology(f)

    def same(a, b):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        assert all(torch.equal(x, y) for x, y in zip(a[2], b[2], strict=True))

    faces = faces.to(dtype)
    render(faces)  # fills the caches
    # Flip the winding of half the faces and drop a few (repeat another face): topology changes.
    edited = faces.clone()
    edited[::2] = edited[::2].flip(1)
    edited[:7] = edited[7]
    faces[:] = edited  # in place: same tensor object, new version
    same(render(faces), render(edited.clone()))
    assert not tb.mesh_topology(faces).consistent.all()
    # A new tensor with the original faces (same shape) gets the original topology again.
    _, original = _icosphere(2, 0.5)
    assert tb.mesh_topology(original.to(dtype)).consistent.all()
    same(render(original.to(dtype)), render(original.clone()))


def test_ops_run_under_inference_mode():
    """Inference tensors have no version counter: the caches keyed on it are skipped for them, with the
    same results as under no_grad (inputs made outside and inside inference mode)."""
    clip, faces = _random_scene(11)
    color = torch.rand(2, 10, 10, 2, generator=torch.Generator().manual_seed(11), dtype=F64)

    def run(c, f, col):
        rast = tb.rasterize(c, f, (10, 10))
        return rast, tb.interpolate(c[..., :3], rast, f, clip=c), tb.antialias(col, rast, c, f)

    with torch.no_grad():
        expect = run(clip, faces, color)
    with torch.inference_mode():
        outside = run(clip, faces, color)
        inside = run(clip.clone(), faces.clone(), color.clone())
    for a, b, c in zip(expect, outside, inside, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_mesh_render_helpers():
    verts, faces = _icosphere(3, 0.4)
    normals = vertex_normals(verts[None], faces)[0]
    assert torch.allclose(normals, verts / verts.norm(dim=-1, keepdim=True), atol=2e-2)
    cams = _front_camera((20, 20), focal=25.0)
    renderer = get_renderer("torch")
    nmap = render_normal_map(renderer, verts, faces, cams)
    assert nmap.shape == (1, 3, 20, 20)
    hard = render_mask(renderer, verts, faces, cams, antialias=False)
    soft = render_mask(renderer, verts, faces, cams)
    assert set(hard.unique().tolist()) <= {0.0, 1.0} and float(soft.min() + 1) > 0 and float(soft.max()) <= 1
    norms = nmap.norm(dim=1, keepdim=True)
    assert (
        torch.allclose(norms[hard > 0], torch.ones(1, dtype=F64), atol=1e-6)
        and (nmap[(hard == 0).expand(-1, 3, -1, -1)] == 0).all()
    )
    # Camera space (OpenCV): the surface point facing the camera has n = (0, 0, -1).
    assert torch.allclose(nmap[0, :, 10, 10], torch.tensor([0.0, 0.0, -1.0], dtype=F64), atol=0.1)
    world = render_normal_map(renderer, verts, faces, cams, space="world")
    assert torch.allclose(torch.einsum("ij,jhw->ihw", cams.R[0], world[0]), nmap[0], atol=1e-9)
    out = render_attributes(
        renderer,
        verts,
        faces,
        cams,
        resolution=(10, 10),
        attrs={"pos": verts, "one": torch.ones(len(verts), 1, dtype=F64)},
        antialias=["one"],
    )
    assert out["pos"].shape == (1, 10, 10, 3) and torch.allclose(out["one"], out["mask"])
    with pytest.raises(ValueError, match="antialias names"):
        render_attributes(renderer, verts, faces, cams, attrs={}, antialias=["x"])
    with pytest.raises(ValueError, match="space"):
        render_normal_map(renderer, verts, faces, cams, space="tangent")


def test_inverse_rendering_recovers_translation_and_scale():
    torch.manual_seed(0)
    base, faces = _icosphere(2, 0.3)
    base, cams = base.float(), _front_camera((40, 40), focal=45.0, dtype=torch.float32)
    renderer = get_renderer("torch")
    sh = torch.zeros(1, 27)
    sh[0, [2, 11, 20]] = -0.25  # light from the camera side (camera-space -z)
    sh[0, [3, 12, 21]] = 0.1

    def render(scale, shift):
        verts = base * scale + torch.cat([shift, torch.zeros(1)])
        normals = (vertex_normals(verts[None], faces)[0][:, None, :] * cams.R[0]).sum(-1)  # R n
        clip = cams.to_clip(verts)
        rast = renderer.rasterize(clip, faces, cams.image_size)
        n = torch.nn.functional.normalize(renderer.interpolate(normals, rast, faces, clip=clip), dim=-1)
        valid = (rast[..., 3:] > 0).float()
        # Silhouette (coverage) and SH-shaded albedo, antialiased together.
        image = torch.cat([valid, 0.7 * sh_shade(n, sh) * valid], -1)
        return renderer.antialias(image, rast, clip, faces)

    with torch.no_grad():
        target = render(torch.tensor(1.25), torch.tensor([0.12, -0.08]))
    log_scale = torch.zeros(1, requires_grad=True)
    shift = torch.zeros(2, requires_grad=True)
    opt = torch.optim.Adam([log_scale, shift], lr=0.03)
    for _ in range(60):
        loss = (render(log_scale.exp()[0], shift) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(log_scale.detach().exp().item() - 1.25) < 0.03
    assert torch.allclose(shift.detach(), torch.tensor([0.12, -0.08]), atol=0.01)


# ---------------------------------------------------------------------------------------------
# backends
# ---------------------------------------------------------------------------------------------


def test_get_renderer_backends():
    assert get_renderer("torch").name == "torch" and get_renderer("torch", aa_max_hops=0).aa_max_hops == 0
    auto = get_renderer("auto")
    clip, faces = _random_scene(9, extras=False)
    assert torch.equal(auto.rasterize(clip, faces, (8, 8)), tb.rasterize(clip, faces, (8, 8)))
    with pytest.raises(ValueError, match="unknown renderer backend"):
        get_renderer("opengl")
    try:
        import nvdiffrast.torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="nvdiffrast"):
            get_renderer("nvdiffrast")


def test_nvdiffrast_wrapper_calls(monkeypatch):
    # The wrapper against a stand-in nvdiffrast.torch (the real one needs CUDA): argument types,
    # batching of (V, C) attributes, topology-hash reuse, dtypes of the results.
    import sys
    import types

    calls = []

    def rasterize(ctx, pos, tri, resolution):
        calls.append(("rasterize", pos.dtype, pos.is_contiguous(), tri.dtype, tuple(resolution)))
        return tb.rasterize(pos, tri, resolution), None

    def interpolate(attr, rast, tri):
        calls.append(("interpolate", tuple(attr.shape), attr.dtype, tri.dtype))
        return tb.interpolate(attr, rast, tri), None

    def construct(tri):
        calls.append(("topology", tri.dtype))
        return object()

    def antialias(color, rast, pos, tri, topology_hash=None):
        calls.append(("antialias", color.dtype, pos.dtype, tri.dtype, topology_hash is not None))
        return tb.antialias(color, rast, pos, tri, max_hops=0)

    fake = types.ModuleType("nvdiffrast.torch")
    fake.rasterize, fake.interpolate, fake.antialias = rasterize, interpolate, antialias
    fake.antialias_construct_topology_hash = construct
    package = types.ModuleType("nvdiffrast")
    package.torch = fake
    monkeypatch.setitem(sys.modules, "nvdiffrast", package)
    monkeypatch.setitem(sys.modules, "nvdiffrast.torch", fake)
    from utils.render.nvdiffrast_backend import NvdiffrastRenderer

    renderer = NvdiffrastRenderer()
    monkeypatch.setattr(renderer, "_context", lambda device: None)
    clip, faces = _random_scene(12, extras=False)
    rast = renderer.rasterize(clip, faces, (9, 11))
    assert rast.dtype == F64 and torch.equal(rast, tb.rasterize(clip.float(), faces, (9, 11)).double())
    assert calls[-1] == ("rasterize", torch.float32, True, torch.int32, (9, 11))
    out = renderer.interpolate(torch.ones(clip.shape[1], 2, dtype=F64), rast, faces)
    assert out.dtype == F64 and calls[-1] == (
        "interpolate",
        (2, clip.shape[1], 2),
        torch.float32,
        torch.int32,
    )
    color = torch.rand(2, 9, 11, 3, dtype=F64)
    renderer.antialias(color, rast, clip, faces)
    renderer.antialias(color, rast, clip, faces.clone())
    assert [c[0] for c in calls].count("topology") == 1
    renderer.antialias(color, rast, clip, faces.flip(0))
    assert [c[0] for c in calls].count("topology") == 2
    assert calls[-1] == ("antialias", torch.float32, torch.float32, torch.int32, True)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_backend_on_cuda_matches_cpu():
    clip, faces = _random_scene(10, extras=False)
    rast_cpu = tb.rasterize(clip, faces, (16, 16))
    rast = tb.rasterize(clip.cuda(), faces.cuda(), (16, 16))
    assert rast.device.type == "cuda" and torch.allclose(rast.cpu(), rast_cpu)
    color = torch.rand(2, 16, 16, 3, dtype=F64)
    out = tb.antialias(color.cuda(), rast, clip.cuda(), faces.cuda())
    assert torch.allclose(out.cpu(), tb.antialias(color, rast_cpu, clip, faces))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_nvdiffrast_parity():
    pytest.importorskip("nvdiffrast.torch")
    verts, faces = _icosphere(3, 0.4)
    cams = _front_camera((64, 64), focal=80.0, dtype=torch.float32)
    clip = cams.to_clip(verts.float()[None]).cuda()
    faces = faces.cuda()
    nv, th = get_renderer("nvdiffrast"), get_renderer("torch")
    r_nv, r_th = nv.rasterize(clip, faces, (64, 64)), th.rasterize(clip, faces, (64, 64))
    same = r_nv[..., 3] == r_th[..., 3]
    assert same.float().mean() > 0.99
    attr = verts.float().cuda()
    i_nv, i_th = nv.interpolate(attr, r_nv, faces), th.interpolate(attr, r_th, faces)
    assert torch.allclose(i_nv[same], i_th[same], atol=1e-4)
    # Same raster for both; the torch search limited to nvdiffrast's rule (max_hops=0).
    mask = (r_th[..., 3:] > 0).float()
    a_nv = nv.antialias(mask, r_th, clip, faces)
    a_th = get_renderer("torch", aa_max_hops=0).antialias(mask, r_th, clip, faces)
    assert ((a_nv - a_th).abs() > 1e-3).float().mean() < 0.01
