"""utils/metrics/geometry.py: point-to-triangle distance, P2P (mm), bilinear vertex sampling, inconsistency."""

import math

import pytest
import torch

from utils.metrics.geometry import (
    SurfaceDistanceIndex,
    inconsistency,
    mpjpe_mm,
    p2p_mm,
    p2p_parts_mm,
    point_to_surface_distance,
    point_to_surface_distance_brute,
    point_triangle_distance,
    sample_at_pixels,
    sample_surface,
    stratified_surface_samples,
    windowed_inconsistency,
)

TRI = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=torch.float64)

# (point, exact distance to TRI, Voronoi region)
DISTANCE_TABLE = [
    ((0.2, 0.2, 1.0), 1.0, "face"),
    ((0.25, 0.25, -2.0), 2.0, "face, below"),
    ((-1.0, -1.0, 0.0), math.sqrt(2), "vertex A"),
    ((2.0, 0.0, 0.0), 1.0, "vertex B"),
    ((0.0, 3.0, 0.0), 2.0, "vertex C"),
    ((0.5, -1.0, 0.0), 1.0, "edge AB"),
    ((-2.0, 0.5, 0.0), 2.0, "edge AC"),
    ((1.0, 1.0, 0.0), 1 / math.sqrt(2), "edge BC"),
    ((0.5, -1.0, 3.0), math.sqrt(10), "edge AB, off plane"),
    ((2.0, -1.0, 1.0), math.sqrt(3), "vertex B, off plane"),
    ((0.3, 0.3, 0.0), 0.0, "inside"),
]


def square(z=0.0, dtype=torch.float64):
    verts = torch.tensor([[0.0, 0, z], [1, 0, z], [1, 1, z], [0, 1, z]], dtype=dtype)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    return verts, faces


def random_mesh(num_verts=40, seed=0):
    """A bumpy open grid (rows x cols) with random heights: many triangle shapes and sizes."""
    g = torch.Generator().manual_seed(seed)
    n = int(math.sqrt(num_verts))
    ys, xs = torch.meshgrid(
        torch.linspace(0, 1, n, dtype=torch.float64),
        torch.linspace(0, 1, n, dtype=torch.float64),
        indexing="ij",
    )
    xs = xs + 0.03 * torch.randn(n, n, generator=g, dtype=torch.float64)
    verts = torch.stack([xs, ys, 0.2 * torch.rand(n, n, generator=g, dtype=torch.float64)], -1).reshape(-1, 3)
    faces = []
    for r in range(n - 1):
        for c in range(n - 1):
            i = r * n + c
            faces += [[i, i + 1, i + n + 1], [i, i + n + 1, i + n]]
    return verts, torch.tensor(faces)


@pytest.mark.parametrize("point,expected,region", DISTANCE_TABLE)
def test_point_triangle_distance_table(point, expected, region):
    d = point_triangle_distance(torch.tensor([point], dtype=torch.float64), TRI[None])
    assert d.item() == pytest.approx(expected, abs=1e-12), region


def test_point_triangle_distance_any_vertex_order_and_degenerate():
    pts = torch.tensor([row[0] for row in DISTANCE_TABLE], dtype=torch.float64)
    expected = torch.tensor([row[1] for row in DISTANCE_TABLE], dtype=torch.float64)
    for perm in ([1, 2, 0], [2, 1, 0]):
        d = point_triangle_distance(pts, TRI[perm][None].expand(len(pts), -1, -1))
        torch.testing.assert_close(d, expected)
    # A zero-area triangle (collinear corners) behaves like the segment from (0,0,0) to (2,0,0).
    seg = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]], dtype=torch.float64)
    d = point_triangle_distance(
        torch.tensor([[1.0, 1, 0], [3, 0, 0]], dtype=torch.float64), seg.expand(2, -1, -1)
    )
    torch.testing.assert_close(d, torch.tensor([1.0, 1.0], dtype=torch.float64))


def test_point_triangle_distance_bad_shape():
    with pytest.raises(ValueError, match="tris"):
        point_triangle_distance(torch.zeros(4, 3), torch.zeros(3, 3, 3))


def test_kdtree_search_equals_brute_force():
    verts, faces = random_mesh(49)
    g = torch.Generator().manual_seed(1)
    points = torch.rand(300, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2
    fast = point_to_surface_distance(points, verts, faces, k=2)
    slow = point_to_surface_distance_brute(points, verts, faces, chunk=997)
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-12)


def test_sample_surface_on_the_mesh_and_seeded():
    verts, faces = random_mesh(25)
    a = sample_surface(verts, faces, 500, torch.Generator().manual_seed(3))
    b = sample_surface(verts, faces, 500, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert point_to_surface_distance_brute(a, verts, faces).max() < 1e-12


def test_p2p_parallel_squares_2mm():
    v0, f = square(0.0)
    v1, _ = square(0.002)
    assert p2p_mm(v0, f, v1, f, num_samples=500) == pytest.approx(2.0, abs=1e-9)
    assert p2p_mm(v0, f, v0, f, num_samples=500) == pytest.approx(0.0, abs=1e-9)


def test_p2p_is_symmetric_mean_of_directions():
    # Half-size square 1 mm above the unit square: pred->gt is exactly 1 mm for every point;
    # gt->pred is the distance from the unit square to the small one (computed by brute force).
    v_gt, f = square(0.0)
    v_pred, _ = square(0.001)
    v_pred[:, :2] *= 0.5
    value = p2p_mm(v_pred, f, v_gt, f, num_samples=2000, seed=5)
    g = torch.Generator().manual_seed(5)
    _ = stratified_surface_samples(v_pred, f, 1000, g)
    pts_gt = stratified_surface_samples(v_gt, f, 1000, g).reshape(-1, 3)
    expected = 0.5 * (1.0 + 1000 * point_to_surface_distance_brute(pts_gt, v_pred, f).mean().item())
    assert value == pytest.approx(expected, rel=1e-9)


def test_sample_at_pixels_centres_and_midpoints():
    img = torch.arange(12, dtype=torch.float32).reshape(1, 1, 3, 4)
    uv = torch.tensor([[[0.5, 0.5], [3.5, 2.5], [1.0, 0.5], [1.5, 1.0]]])  # centres, then midpoints
    out = sample_at_pixels(img, uv)[0, :, 0]
    torch.testing.assert_close(out, torch.tensor([0.0, 11.0, 0.5, 3.0]))


def test_inconsistency_hand_computed():
    # vertex 0 seen 3x with grey levels 0, .5, 1 (variance 1/6 per channel); vertex 1 seen once
    # (ignored); vertex 2 seen twice with the same colour (0).
    colors = torch.zeros(3, 3, 3)
    colors[:, 0] = torch.tensor([0.0, 0.5, 1.0])[:, None]
    colors[:, 2] = torch.tensor([0.2, 0.4, 0.6])
    colors[0, 1] = 0.9
    vis = torch.tensor([[1, 1, 1], [1, 0, 1], [1, 0, 0]], dtype=torch.bool)
    assert inconsistency(colors, vis) == pytest.approx((1 / 6 + 0) / 2)
    assert inconsistency(list(colors), list(vis)) == pytest.approx(1 / 12)
    # windows of 2 samples: (0,1) -> vertex 0 var 1/16, vertex 2 var 0; (1,2) -> vertex 0 var 1/16
    assert inconsistency(colors, vis, window=2) == pytest.approx(((1 / 16) / 2 + 1 / 16) / 2)
    assert math.isnan(inconsistency(colors[:1], vis[:1]))


def test_mpjpe_mm_hand_computed():
    gt = torch.zeros(2, 3, 3)
    pred = gt.clone()
    pred[0, :, 0] = 0.003  # 3 mm along x for every joint of frame 0
    pred[1, 0] = torch.tensor([0.0, 0.003, 0.004])  # 5 mm for one of three joints of frame 1
    assert torch.allclose(mpjpe_mm(pred, gt), torch.tensor([3.0, 5.0 / 3], dtype=torch.float64))
    with pytest.raises(ValueError, match="must be equal"):
        mpjpe_mm(pred[:, :2], gt)


def test_p2p_parts_one_sided_directions():
    # The reconstruction covers only the left half of the true unit square: every reconstructed point lies on
    # the truth (recon -> truth = 0), while the truth's right half is missing (truth -> recon > 0). For a point
    # (x, y) of the truth with x > 0.5 the distance to the half square is x - 0.5; its mean over the whole
    # square is the integral of (x - 0.5) from 0.5 to 1, 1/8 of a metre.
    square = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.float64)
    quad = torch.tensor([[0, 1, 2], [0, 2, 3]])
    half = square * torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64)
    parts = p2p_parts_mm(half, quad, square, quad, num_samples=20000)
    assert parts["pred_to_gt"] == pytest.approx(0.0, abs=1e-9) and parts["pred_to_gt_se"] < 1e-9
    assert 0 < parts["gt_to_pred_se"] < 2.0  # mm, on a mean of 125 mm over a metre-wide square
    assert abs(parts["gt_to_pred"] - 1000.0 / 8) < 4 * parts["gt_to_pred_se"]
    assert parts["symmetric"] == p2p_mm(half, quad, square, quad, num_samples=20000)
    assert parts["symmetric"] == pytest.approx((parts["pred_to_gt"] + parts["gt_to_pred"]) / 2, rel=1e-12)


def test_windowed_inconsistency_per_view():
    # 4 frames x 2 views, one vertex seen everywhere. View 0 sees colours 0, 0, 1, 1 over the frames and
    # view 1 sees a constant colour. Windows of 2 frames on view 0: variances 0, 1/4, 0 -> mean 1/12; view 1: 0.
    num_frames, num_views = 4, 2
    colours = torch.zeros(num_frames * num_views, 1, 3, dtype=torch.float64)
    for f, value in enumerate([0.0, 0.0, 1.0, 1.0]):
        colours[f * num_views + 0] = value
        colours[f * num_views + 1] = 0.3
    vis = torch.ones(num_frames * num_views, 1, dtype=torch.bool)
    assert windowed_inconsistency(colours, vis, num_views, window=2) == pytest.approx((1 / 12 + 0) / 2)
    # A window longer than the sequence shrinks to it: all 4 frames, variance 1/4 on view 0.
    assert windowed_inconsistency(colours, vis, num_views, window=8) == pytest.approx(1 / 8)
    # Pooled over views the same colours give a different number: the protocols are not interchangeable.
    assert inconsistency(colours, vis) != pytest.approx(
        windowed_inconsistency(colours, vis, num_views, window=8)
    )
    with pytest.raises(ValueError, match="whole number of frames"):
        windowed_inconsistency(colours[:7], vis[:7], num_views)


def grid_mesh(n: int, size: float = 1.0, offset: float = 0.0, height=None):
    """An ``n`` x ``n``-cell triangulated square ``[offset, offset + size]^2``, ``z = height(x, y)`` (0)."""
    lin = torch.linspace(offset, offset + size, n + 1, dtype=torch.float64)
    y, x = torch.meshgrid(lin, lin, indexing="ij")
    z = torch.zeros_like(x) if height is None else height(x, y)
    verts = torch.stack([x, y, z], -1).reshape(-1, 3)
    idx = torch.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    faces = torch.cat([torch.stack([a, b, c], -1), torch.stack([a, c, d], -1)]).reshape(-1, 3)
    return verts, faces


def test_stratified_p2p_of_a_tilted_plane_is_the_analytic_mean():
    """Points of the unit square (z = 0) to the plane z = a + b x (a larger square, so every closest point is
    inside it): the distance is (a + b x) / sqrt(1 + b^2), whose mean over the square is (a + b / 2) /
    sqrt(1 + b^2). The estimate is within 4 of its own standard errors of that, and the standard error is
    far below the smallest difference the benchmark tables discuss (0.003 mm)."""
    a, b = 0.003, 0.002
    pred = grid_mesh(20)
    truth = grid_mesh(60, size=3.0, offset=-1.0, height=lambda x, y: a + b * x)
    parts = p2p_parts_mm(*pred, *truth, num_samples=4000, seed=3)
    expected = 1000.0 * (a + b / 2) / math.sqrt(1 + b * b)
    assert abs(parts["pred_to_gt"] - expected) < 4 * parts["pred_to_gt_se"] + 1e-9
    assert parts["pred_to_gt_se"] < 1e-3


def test_standard_error_is_the_spread_of_the_estimate():
    """On a curved pair (a sphere and an ellipsoid around it) the reported standard error is the estimate's
    scatter over sampling seeds, and a 40-times larger estimate agrees within a few standard errors."""
    from utils.geometry.mesh import loop_subdivide

    t = (1 + 5**0.5) / 2
    ico = torch.tensor(
        [
            [-1, t, 0],
            [1, t, 0],
            [-1, -t, 0],
            [1, -t, 0],
            [0, -1, t],
            [0, 1, t],
            [0, -1, -t],
            [0, 1, -t],
            [t, 0, -1],
            [t, 0, 1],
            [-t, 0, -1],
            [-t, 0, 1],
        ],
        dtype=torch.float64,
    )
    faces = torch.tensor(
        [
            [0, 11, 5],
            [0, 5, 1],
            [0, 1, 7],
            [0, 7, 10],
            [0, 10, 11],
            [1, 5, 9],
            [5, 11, 4],
            [11, 10, 2],
            [10, 7, 6],
            [7, 1, 8],
            [3, 9, 4],
            [3, 4, 2],
            [3, 2, 6],
            [3, 6, 8],
            [3, 8, 9],
            [4, 9, 5],
            [2, 4, 11],
            [6, 2, 10],
            [8, 6, 7],
            [9, 8, 1],
        ]
    )
    verts, faces = loop_subdivide(ico, faces, 2)[:2]
    sphere = 0.05 * verts / verts.norm(dim=-1, keepdim=True)
    ellipsoid = sphere * torch.tensor([1.08, 1.0, 0.95], dtype=torch.float64)
    runs = [p2p_parts_mm(sphere, faces, ellipsoid, faces, num_samples=400, seed=s) for s in range(12)]
    values = torch.tensor([r["symmetric"] for r in runs])
    reported = torch.tensor([r["symmetric_se"] for r in runs]).mean()
    assert 0.5 < float(values.std() / reported) < 2.0
    reference = p2p_parts_mm(sphere, faces, ellipsoid, faces, num_samples=16000, seed=99)
    assert (
        abs(float(values.mean()) - reference["symmetric"])
        < 4 * float(reported / 12**0.5) + 4 * reference["symmetric_se"]
    )


def test_surface_distance_index_equals_brute_force():
    verts, faces = random_mesh(49)
    g = torch.Generator().manual_seed(4)
    points = torch.rand(400, 3, generator=g, dtype=torch.float64) * 1.4 - 0.2
    index = SurfaceDistanceIndex(verts, faces, k=2)
    torch.testing.assert_close(
        index.distance(points, block=97), point_to_surface_distance_brute(points, verts, faces)
    )
