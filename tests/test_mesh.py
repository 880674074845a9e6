"""Mesh operations (utils.geometry.mesh) and mesh files (utils.geometry.mesh_io)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _hand_fixtures import MANO_FACES, MANO_VERTS, grid_mesh, procedural_model

from utils.geometry.mesh import (
    check_mesh,
    edge_lengths,
    face_normals,
    loop_subdivide,
    subdivided_hand,
    subdivision_counts,
    uniform_laplacian,
    unique_edges,
    vertex_normals,
)
from utils.geometry.mesh_io import load_obj, load_ply, save_obj, save_ply

torch.set_num_threads(1)
F64 = torch.float64


def _icosphere():
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=2)
    return np.asarray(sphere.vertices), np.asarray(sphere.faces, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# Loop subdivision
# ----------------------------------------------------------------------------------------------
def test_subdivision_counts_on_the_hand_match_mano():
    model = procedural_model("right")
    faces = model.faces
    counts = subdivision_counts(778, 1538, len(unique_edges(faces)), 3)
    assert [c[0] for c in counts] == list(MANO_VERTS) and [c[1] for c in counts] == list(MANO_FACES)
    verts = model.v_template
    for _ in range(3):
        num_edges = len(unique_edges(faces))
        verts_next, faces_next, _ = loop_subdivide(verts, faces, 1)
        assert len(verts_next) == len(verts) + num_edges and len(faces_next) == 4 * len(faces)
        verts, faces = verts_next, faces_next
    assert (len(verts), len(faces)) == (MANO_VERTS[3], MANO_FACES[3])


def test_subdivision_counts_and_euler_on_other_meshes():
    import trimesh

    for verts, faces in (_icosphere(), grid_mesh(4, 5)[:2]):
        mesh = trimesh.Trimesh(verts, faces, process=False)
        expected = subdivision_counts(len(verts), len(faces), len(mesh.edges_unique), 2)
        v2, f2, _ = loop_subdivide(verts, faces, 2)
        assert (len(v2), len(f2)) == expected[2][:2]
        sub = trimesh.Trimesh(v2, f2, process=False)
        assert sub.euler_number == mesh.euler_number and len(sub.edges_unique) == expected[2][2]
        assert isinstance(v2, np.ndarray) and f2.dtype == np.int64


def test_weight_upsampling_averages_edge_endpoints():
    verts, faces, _ = grid_mesh(4, 5)
    identity = np.eye(len(verts))
    new_verts, new_faces, w = loop_subdivide(verts, faces, 1, weights=identity)
    np.testing.assert_array_equal(w[: len(verts)], identity)  # old vertices keep their weights
    new = w[len(verts) :]
    assert ((new == 0.5).sum(1) == 2).all() and ((new > 0).sum(1) == 2).all()
    pairs = {tuple(np.nonzero(row)[0]) for row in new}
    assert pairs == set(map(tuple, unique_edges(faces).tolist()))
    # Independent check of the endpoint pairing: on a flat regular grid every Loop edge point is
    # the edge midpoint, i.e. exactly the averaged "weights" applied to the old positions.
    np.testing.assert_allclose(new_verts[len(verts) :], new @ verts, atol=1e-12)
    # Rows still sum to one after several levels, on the hand.
    model = procedural_model("right")
    _, _, w3 = loop_subdivide(model.v_template, model.faces, 2, weights=model.lbs_weights)
    torch.testing.assert_close(w3.sum(1), torch.ones(MANO_VERTS[2]))


def test_subdivision_keeps_torch_types():
    verts, faces = _icosphere()
    v = torch.tensor(verts, dtype=F64)
    out_v, out_f, out_w = loop_subdivide(v, torch.tensor(faces), 1, weights=torch.ones(len(verts), 2))
    assert out_v.dtype == F64 and out_f.dtype == torch.long and out_w.dtype == torch.float32
    out_v0, out_f0, none = loop_subdivide(v, torch.tensor(faces), 0)
    torch.testing.assert_close(out_v0, v)
    assert none is None


def test_changed_trimesh_order_is_detected(monkeypatch):
    import trimesh.remesh

    original = trimesh.remesh.subdivide_loop

    def reordered(vertices, faces, iterations=None):
        v, f = original(vertices, faces, iterations=iterations)
        return v, f.reshape(-1, 4, 3)[:, [3, 0, 1, 2]].reshape(-1, 3)

    monkeypatch.setattr(trimesh.remesh, "subdivide_loop", reordered)
    verts, faces, _ = grid_mesh(3, 3)
    with pytest.raises(RuntimeError, match="trimesh.*order"):
        loop_subdivide(verts, faces, 1, weights=np.eye(len(verts)))


def test_subdivided_hand_is_cached_and_shaped():
    model = procedural_model("right")
    verts, faces, weights = subdivided_hand(model, 2)
    assert verts.shape == (MANO_VERTS[2], 3) and faces.shape == (MANO_FACES[2], 3)
    assert weights.shape == (MANO_VERTS[2], 16) and faces.dtype == torch.long
    torch.testing.assert_close(weights.sum(1), torch.ones(MANO_VERTS[2]))
    again = subdivided_hand(model, 2)
    torch.testing.assert_close(again[0], verts)
    shape = torch.zeros(10)
    shape[0] = 2.0
    bigger, _, _ = subdivided_hand(model, 2, shape)
    ratio = bigger.norm(dim=1).max() / verts.norm(dim=1).max()
    assert 1.05 < ratio < 1.15


# ----------------------------------------------------------------------------------------------
# Normals, edges, Laplacian
# ----------------------------------------------------------------------------------------------
def test_normals_on_a_sphere_and_batching():
    verts, faces = _icosphere()
    v = torch.tensor(verts, dtype=F64)
    f = torch.tensor(faces)
    normals = vertex_normals(v, f)
    radial = v / v.norm(dim=1, keepdim=True)
    assert ((normals * radial).sum(1) > 0.99).all()
    fn = face_normals(v, f)
    torch.testing.assert_close(fn.norm(dim=1), torch.ones(len(faces), dtype=F64))
    batch = torch.stack([v, 2.0 * v])
    torch.testing.assert_close(vertex_normals(batch, f), torch.stack([normals, normals]))
    torch.testing.assert_close(face_normals(batch, f)[1], fn)


def test_vertex_normals_are_area_weighted():
    # Two faces meet at vertex 0: a big one in the z=0 plane and a small one in the x=0 plane.
    verts = torch.tensor([[0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [0, 1, 0]], dtype=F64)
    faces = torch.tensor([[0, 1, 2], [0, 3, 4]])
    n0 = vertex_normals(verts, faces)[0]
    expected = torch.tensor([0.0, 0.0, 4.0]) + torch.tensor([-1.0, 0.0, 0.0])  # 2*area along each normal
    torch.testing.assert_close(n0, (expected / expected.norm()).to(F64))
    torch.testing.assert_close(face_normals(verts, faces)[0], torch.tensor([0.0, 0.0, 1.0], dtype=F64))


def test_degenerate_faces_give_finite_normals_and_gradients():
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [2, 0, 0], [0, 1, 0]], dtype=F64, requires_grad=True)
    faces = torch.tensor([[0, 1, 2], [0, 1, 3]])
    normals = vertex_normals(verts, faces)
    assert torch.isfinite(normals).all()
    normals.sum().backward()
    assert torch.isfinite(verts.grad).all()
    assert torch.autograd.gradcheck(
        lambda v: vertex_normals(v, faces[1:]), (torch.rand(4, 3, dtype=F64, requires_grad=True),)
    )


def test_unique_edges_and_lengths():
    tetra = np.array([[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]])
    edges = unique_edges(tetra)
    assert edges.tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    model = procedural_model("right")
    assert unique_edges(model.faces).shape == (2315, 2) and unique_edges(model.faces).dtype == torch.long
    verts = torch.tensor([[0, 0, 0], [3, 0, 0], [0, 4, 0], [0, 0, 1]], dtype=F64)
    lengths = edge_lengths(verts, torch.tensor(edges))
    torch.testing.assert_close(lengths, torch.tensor([3, 4, 1, 5, np.sqrt(10), np.sqrt(17)], dtype=F64))
    assert edge_lengths(verts.expand(2, -1, -1), torch.tensor(edges)).shape == (2, 6)


def test_uniform_laplacian_annihilates_constant_and_linear_fields():
    verts, faces, interior = grid_mesh(6, 7)
    lap = uniform_laplacian(len(verts), torch.tensor(faces), dtype=F64)
    assert lap.is_sparse and lap.shape == (len(verts), len(verts))
    dense = lap.to_dense()
    torch.testing.assert_close(dense.diagonal(), -torch.ones(len(verts), dtype=F64))
    torch.testing.assert_close(dense.sum(1), torch.zeros(len(verts), dtype=F64))
    constant = torch.full((len(verts), 1), 3.0, dtype=F64)
    torch.testing.assert_close(torch.sparse.mm(lap, constant), torch.zeros_like(constant))
    linear = torch.tensor(verts @ np.array([2.0, -1.0, 0.5]) + 0.3, dtype=F64)[:, None]
    result = torch.sparse.mm(lap, linear)[:, 0]
    torch.testing.assert_close(result[torch.tensor(interior)], torch.zeros(int(interior.sum()), dtype=F64))
    assert result[torch.tensor(~interior)].abs().max() > 1e-3  # boundary vertices are not annihilated
    # An isolated vertex gets an all-zero row.
    lap_isolated = uniform_laplacian(len(verts) + 1, faces).to_dense()
    assert (lap_isolated[-1] == 0).all() and lap_isolated.dtype == torch.float32


def test_bad_meshes_raise_clear_errors():
    verts, faces = _icosphere()
    bad_index = faces.copy()
    bad_index[3, 1] = len(verts)
    with pytest.raises(ValueError, match="index vertices"):
        loop_subdivide(verts, bad_index, 1)
    with pytest.raises(ValueError, match="index vertices"):
        uniform_laplacian(len(verts), bad_index)
    with pytest.raises(ValueError, match="negative"):
        unique_edges(-faces)
    nan_verts = verts.copy()
    nan_verts[5, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        loop_subdivide(nan_verts, faces, 1)
    with pytest.raises(ValueError, match="NaN"):
        vertex_normals(torch.tensor(nan_verts), torch.tensor(faces), check=True)
    with pytest.raises(ValueError, match="degenerate"):
        loop_subdivide(verts, np.vstack([faces, [[0, 0, 1]]]), 1)
    with pytest.raises(ValueError, match="integer"):
        check_mesh(verts, faces.astype(np.float64))
    with pytest.raises(ValueError, match=r"\(V, 3\)"):
        vertex_normals(torch.zeros(5, 2), torch.tensor(faces))
    with pytest.raises(ValueError, match="weights"):
        loop_subdivide(verts, faces, 1, weights=np.ones((3, 2)))


# ----------------------------------------------------------------------------------------------
# Mesh files
# ----------------------------------------------------------------------------------------------
def _colored_hand():
    model = procedural_model("right")
    verts = model.v_template
    colors = (verts - verts.min(0).values) / (verts.max(0).values - verts.min(0).values)
    return verts, model.faces, colors


def test_obj_round_trip(tmp_path):
    import trimesh

    verts, faces, colors = _colored_hand()
    save_obj(tmp_path / "sub" / "hand.obj", verts, faces, colors)
    v, f, c = load_obj(tmp_path / "sub" / "hand.obj")
    np.testing.assert_allclose(v, verts.numpy(), atol=1e-7)
    np.testing.assert_array_equal(f, faces.numpy())
    np.testing.assert_allclose(c, colors.numpy(), atol=1e-5)
    first = (tmp_path / "sub" / "hand.obj").read_text().splitlines()[0].split()
    assert first[0] == "v" and len(first) == 7
    save_obj(tmp_path / "plain.obj", verts, faces)
    v, f, c = load_obj(tmp_path / "plain.obj")
    assert c is None and f.shape == (1538, 3)
    loaded = trimesh.load(tmp_path / "plain.obj", process=False)
    np.testing.assert_allclose(loaded.vertices, verts.numpy(), atol=1e-7)


def test_load_obj_handles_polygons_and_index_forms(tmp_path):
    path = tmp_path / "quad.obj"
    path.write_text(
        "# a quad\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvt 0 0\nvn 0 0 1\n"
        "f 1/1/1 2/1/1 3/1/1 4/1/1\nf -4//1 -2//1 -1//1\n"
    )
    verts, faces, colors = load_obj(path)
    assert verts.shape == (4, 3) and colors is None
    assert faces.tolist() == [[0, 1, 2], [0, 2, 3], [0, 2, 3]]


@pytest.mark.parametrize("binary", [True, False])
def test_ply_round_trip(tmp_path, binary):
    import trimesh

    verts, faces, colors = _colored_hand()
    path = tmp_path / "hand.ply"
    save_ply(path, verts, faces, colors, binary=binary)
    v, f, c = load_ply(path)
    np.testing.assert_allclose(v, verts.numpy(), atol=1e-7)
    np.testing.assert_array_equal(f, faces.numpy())
    np.testing.assert_allclose(c, colors.numpy(), atol=0.5 / 255 + 1e-9)
    loaded = trimesh.load(path, process=False)
    np.testing.assert_allclose(loaded.vertices, verts.numpy(), atol=1e-7)
    np.testing.assert_array_equal(loaded.faces, faces.numpy())
    np.testing.assert_allclose(
        loaded.visual.vertex_colors[:, :3] / 255.0, colors.numpy(), atol=0.5 / 255 + 1e-9
    )
    save_ply(path, verts, faces, binary=binary)
    assert load_ply(path)[2] is None


PLY_HEAD = """ply
format {fmt} 1.0
comment written by another tool
element vertex 4
property float x
property float y
property float z
property uchar red
property uchar green
property uchar blue
element face 2
property list uchar int vertex_indices
{face_props}end_header
"""
PLY_VERTS = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], dtype=np.float64)
PLY_RGB = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [51, 102, 153]], dtype=np.uint8)
PLY_FACES = np.array([[0, 1, 2], [0, 2, 3]])


def _ply_with_face_properties(path, face_props: list[tuple[str, str, list[int]]], binary: bool) -> None:
    """A 4-vertex, 2-triangle PLY with vertex colours and extra face properties ``(type, name, values)``."""
    head = PLY_HEAD.format(
        fmt="binary_little_endian" if binary else "ascii",
        face_props="".join(f"property {t} {n}\n" for t, n, _ in face_props),
    ).encode()
    if not binary:
        rows = [" ".join(map(str, [*v.astype(int), *c])) for v, c in zip(PLY_VERTS, PLY_RGB, strict=True)]
        rows += [
            " ".join(map(str, [3, *f, *(vals[i] for _, _, vals in face_props)]))
            for i, f in enumerate(PLY_FACES)
        ]
        path.write_bytes(head + ("\n".join(rows) + "\n").encode())
        return
    vdata = np.empty(4, dtype=[("xyz", "<f4", 3), ("rgb", "u1", 3)])
    vdata["xyz"], vdata["rgb"] = PLY_VERTS, PLY_RGB
    types = {"uchar": "u1", "int": "<i4", "float": "<f4"}
    fdata = np.empty(2, dtype=[("n", "u1"), ("idx", "<i4", 3)] + [(n, types[t]) for t, n, _ in face_props])
    fdata["n"], fdata["idx"] = 3, PLY_FACES
    for _, name, values in face_props:
        fdata[name] = values
    path.write_bytes(head + vdata.tobytes() + fdata.tobytes())


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize(
    "face_props",
    [
        [("uchar", "flags", [7, 9])],  # a property after the index list
        [
            ("uchar", "red", [10, 20]),
            ("uchar", "green", [30, 40]),
            ("uchar", "blue", [50, 60]),
        ],  # face colours
        [("float", "quality", [0.5, 1.5]), ("int", "material", [3, 4])],
    ],
    ids=["flags", "face_colours", "quality_material"],
)
def test_ply_with_more_face_properties_keeps_vertex_colours(tmp_path, face_props, binary):
    """The hand-written reader failed on these (issue 22); trimesh reads them."""
    path = tmp_path / "other.ply"
    _ply_with_face_properties(path, face_props, binary)
    verts, faces, colors = load_ply(path)
    np.testing.assert_array_equal(verts, PLY_VERTS)
    np.testing.assert_array_equal(faces, PLY_FACES)
    np.testing.assert_allclose(colors, PLY_RGB / 255.0)
    assert verts.dtype == np.float64 and faces.dtype == np.int64


def test_ply_reader_points_quads_bytes_and_errors(tmp_path):
    import io

    from utils.errors import InputError

    points = b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n0 0 0\n1 2 3\n"
    verts, faces, colors = load_ply(io.BytesIO(points), name="scan.ply")
    assert verts.shape == (2, 3) and faces.shape == (0, 3) and colors is None
    quad = points.replace(b"element vertex 2", b"element vertex 4").replace(
        b"end_header\n", b"element face 1\nproperty list uchar int vertex_indices\nend_header\n"
    )
    quad = quad.replace(b"1 2 3\n", b"1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    path = tmp_path / "quad.ply"
    path.write_bytes(quad)
    np.testing.assert_array_equal(load_ply(path)[1], [[0, 1, 2], [0, 2, 3]])
    (tmp_path / "bad.ply").write_bytes(b"not a mesh")
    with pytest.raises(InputError, match="bad.ply: cannot read the PLY file"):
        load_ply(tmp_path / "bad.ply")
    path.write_bytes(quad.replace(b"4 0 1 2 3", b"4 0 1 2 9"))
    with pytest.raises(InputError, match="faces index vertices outside"):
        load_ply(path)


def test_mesh_io_rejects_bad_input(tmp_path):
    verts, faces, colors = _colored_hand()
    with pytest.raises(ValueError, match="colors"):
        save_obj(tmp_path / "a.obj", verts, faces, colors[:10])
    with pytest.raises(ValueError, match="faces index"):
        save_ply(tmp_path / "a.ply", verts[:10], faces)
    with pytest.raises(ValueError, match="NaN"):
        save_ply(tmp_path / "a.ply", torch.full((3, 3), float("nan")), torch.tensor([[0, 1, 2]]))
    assert not list(tmp_path.iterdir())  # nothing half-written
