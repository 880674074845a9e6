"""Skinned meshes as glTF 2.0 binary (``.glb``), written and read with ``pygltflib``, and skinned in NumPy the
way glTF viewers do.

What the file holds (glTF 2.0 spec, "Skins"): one mesh (``POSITION``, ``NORMAL``, ``COLOR_0``, ``JOINTS_0``,
``WEIGHTS_0``, 32-bit indices), one skin whose joints are nodes in a parent hierarchy, and one inverse bind
matrix per joint. The bind pose is the mesh as stored: each joint at its rest position with identity
rotation, so ``IBM_j = translate(-joint_j)``. A joint node's translation is its rest offset from its parent
(the root's: its rest position plus the root translation); its rotation is free: viewers pose the mesh by
it, and the file's default is ``rest_rotations``. A vertex is skinned as
``v' = sum_k w_k * G_{j_k} @ IBM_{j_k} @ v`` with ``G_j`` the joint node's global transform.

Units and frames: metres, the capture's world frame (glTF has +y up; a capture's world need not, so a viewer
may show the hand turned). ``COLOR_0`` is linear RGB as the spec requires: colours given as image values
(sRGB-encoded) are converted, and :func:`read_skinned_glb` converts back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from utils.errors import InputError
from utils.geometry.rotations import quaternion_to_matrix

__all__ = ["SkinAnimation", "SkinnedMesh", "write_skinned_glb", "read_skinned_glb", "skin_vertices"]


@dataclass(frozen=True, slots=True)
class SkinAnimation:
    """Keyframes of the joint nodes, played with linear interpolation (slerp for the rotations).

    Attributes:
        times: ``(T,)`` seconds, increasing. rotations: ``(T, J, 4)`` local joint rotations (x, y, z, w).
        root_translations: ``(T, 3)`` translation of the root joint node (metres). name: the clip's name.
    """

    times: np.ndarray
    rotations: np.ndarray
    root_translations: np.ndarray
    name: str = "poses"

    def __post_init__(self):
        t = len(self.times)
        if (
            self.rotations.shape[:1] != (t,)
            or self.rotations.shape[2:] != (4,)
            or self.root_translations.shape != (t, 3)
        ):
            raise ValueError(
                f"SkinAnimation: times ({t},), rotations {self.rotations.shape}, root_translations "
                f"{self.root_translations.shape}: expected (T,), (T, J, 4), (T, 3)"
            )
        if t < 1 or np.any(np.diff(self.times) <= 0):
            raise ValueError("SkinAnimation.times must be at least one increasing time")


@dataclass(frozen=True, slots=True)
class SkinnedMesh:
    """A mesh with a joint hierarchy and up to 4 joints per vertex.

    Attributes:
        verts: ``(V, 3)`` bind-pose positions, metres. faces: ``(F, 3)`` 0-based indices.
        colors: ``(V, 3)`` RGB in [0, 1], image (sRGB-encoded) values, or None.
        joints: ``(J, 3)`` rest joint positions (bind pose), metres. parents: ``(J,)`` parent index, -1 at the root
            (parents before children). joint_names: J names.
        skin_joints: ``(V, 4)`` joint indices. skin_weights: ``(V, 4)`` weights, each row summing to 1.
        rest_rotations: ``(J, 4)`` unit quaternions ``(x, y, z, w)``, each joint node's default local rotation.
        root_translation: ``(3,)`` added to the root joint's default position (metres).
        animation: keyframes of the joint nodes, or None.
    """

    verts: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None
    joints: np.ndarray
    parents: np.ndarray
    joint_names: list
    skin_joints: np.ndarray
    skin_weights: np.ndarray
    rest_rotations: np.ndarray
    root_translation: np.ndarray
    animation: SkinAnimation | None = None

    def __post_init__(self):
        v, j = len(self.verts), len(self.joints)
        checks = {
            "verts": (self.verts.shape, (v, 3)),
            "faces": (self.faces.shape[1:], (3,)),
            "joints": (self.joints.shape, (j, 3)),
            "parents": (self.parents.shape, (j,)),
            "skin_joints": (self.skin_joints.shape, (v, 4)),
            "skin_weights": (self.skin_weights.shape, (v, 4)),
            "rest_rotations": (self.rest_rotations.shape, (j, 4)),
            "root_translation": (np.shape(self.root_translation), (3,)),
        }
        if self.colors is not None:
            checks["colors"] = (self.colors.shape, (v, 3))
        bad = {k: got for k, (got, want) in checks.items() if got != want}
        if bad or len(self.joint_names) != j:
            raise ValueError(f"SkinnedMesh with {v} vertices and {j} joints: wrong shapes {bad}")
        if self.animation is not None and self.animation.rotations.shape[1] != j:
            raise ValueError(
                f"SkinnedMesh: the animation moves {self.animation.rotations.shape[1]} joints, not {j}"
            )
        if any(p >= i for i, p in enumerate(self.parents)) or self.parents[0] != -1:
            raise ValueError(
                f"SkinnedMesh.parents must list parents before children, root first: {self.parents}"
            )


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] to linear RGB (IEC 61966-2-1)."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    """Linear RGB in [0, 1] to sRGB-encoded values (the inverse of :func:`srgb_to_linear`)."""
    c = np.clip(np.asarray(c, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * c ** (1 / 2.4) - 0.055)


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals ``(V, 3)`` (an isolated vertex gets +z)."""
    tri = verts[faces]
    face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_n)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    return np.where(length > 0, normals / np.maximum(length, 1e-30), np.array([0.0, 0.0, 1.0]))


def write_skinned_glb(path: str | os.PathLike, mesh: SkinnedMesh, generator: str = "SRHand") -> str:
    """Write ``mesh`` as a glTF 2.0 binary file (atomic; parent folders created). Returns the path."""
    import pygltflib as gl

    from utils.checkpoint import atomic_write_bytes

    verts = np.ascontiguousarray(mesh.verts, dtype=np.float32)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    num_joints = len(mesh.joints)
    blob = bytearray()
    views, accessors = [], []

    def add(array: np.ndarray, component: int, kind: str, target: int | None, bounds: bool = False) -> int:
        """Append ``array`` as one buffer view + accessor; returns the accessor index."""
        data = np.ascontiguousarray(array).tobytes()
        views.append(gl.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target))
        blob.extend(data)
        blob.extend(b"\0" * (-len(blob) % 4))  # every view starts 4-byte aligned
        count = array.shape[0] if kind != "SCALAR" else array.size
        accessor = gl.Accessor(bufferView=len(views) - 1, componentType=component, count=count, type=kind)
        if bounds:
            accessor.min = array.min(0).astype(float).tolist()
            accessor.max = array.max(0).astype(float).tolist()
        accessors.append(accessor)
        return len(accessors) - 1

    attributes = gl.Attributes(
        POSITION=add(verts, gl.FLOAT, gl.VEC3, gl.ARRAY_BUFFER, bounds=True),
        NORMAL=add(
            _vertex_normals(verts.astype(np.float64), faces).astype(np.float32),
            gl.FLOAT,
            gl.VEC3,
            gl.ARRAY_BUFFER,
        ),
        JOINTS_0=add(mesh.skin_joints.astype(np.uint16), gl.UNSIGNED_SHORT, gl.VEC4, gl.ARRAY_BUFFER),
        WEIGHTS_0=add(mesh.skin_weights.astype(np.float32), gl.FLOAT, gl.VEC4, gl.ARRAY_BUFFER),
    )
    if mesh.colors is not None:
        attributes.COLOR_0 = add(
            srgb_to_linear(mesh.colors).astype(np.float32), gl.FLOAT, gl.VEC3, gl.ARRAY_BUFFER
        )
    indices = add(faces.astype(np.uint32).reshape(-1), gl.UNSIGNED_INT, gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER)
    ibm = np.tile(np.eye(4, dtype=np.float32), (num_joints, 1, 1))
    ibm[:, :3, 3] = -mesh.joints
    # glTF matrices are column-major: write each matrix transposed.
    ibm_accessor = add(
        np.ascontiguousarray(ibm.transpose(0, 2, 1)).reshape(num_joints, 16), gl.FLOAT, gl.MAT4, None
    )

    first_joint = 1  # node 0 is the mesh
    nodes = [gl.Node(name="hand", mesh=0, skin=0)]
    for j in range(num_joints):
        parent = int(mesh.parents[j])
        if parent < 0:
            offset = mesh.joints[j] + np.asarray(mesh.root_translation)
        else:
            offset = mesh.joints[j] - mesh.joints[parent]
        children = [first_joint + c for c in range(num_joints) if int(mesh.parents[c]) == j]
        nodes.append(
            gl.Node(
                name=str(mesh.joint_names[j]),
                translation=[float(x) for x in offset],
                rotation=[float(x) for x in mesh.rest_rotations[j]],
                children=children,
            )
        )
    roots = [first_joint + j for j in range(num_joints) if int(mesh.parents[j]) < 0]
    material = gl.Material(
        name="albedo",
        pbrMetallicRoughness=gl.PbrMetallicRoughness(
            baseColorFactor=[1, 1, 1, 1], metallicFactor=0.0, roughnessFactor=0.8
        ),
    )
    animations = []
    if mesh.animation is not None:
        clip = mesh.animation
        times = clip.times.astype(np.float32)
        time_accessor = add(times, gl.FLOAT, gl.SCALAR, None)
        # an animation's input accessor must state its range
        accessors[time_accessor].min, accessors[time_accessor].max = [float(times[0])], [float(times[-1])]
        samplers, channels = [], []
        for j in range(num_joints):
            out = add(np.ascontiguousarray(clip.rotations[:, j].astype(np.float32)), gl.FLOAT, gl.VEC4, None)
            samplers.append(gl.AnimationSampler(input=time_accessor, output=out, interpolation="LINEAR"))
            channels.append(
                gl.AnimationChannel(
                    sampler=j, target=gl.AnimationChannelTarget(node=first_joint + j, path="rotation")
                )
            )
        out = add(clip.root_translations.astype(np.float32), gl.FLOAT, gl.VEC3, None)
        samplers.append(gl.AnimationSampler(input=time_accessor, output=out, interpolation="LINEAR"))
        channels.append(
            gl.AnimationChannel(
                sampler=num_joints, target=gl.AnimationChannelTarget(node=roots[0], path="translation")
            )
        )
        animations.append(gl.Animation(name=clip.name, samplers=samplers, channels=channels))
    gltf = gl.GLTF2(
        asset=gl.Asset(version="2.0", generator=generator),
        scene=0,
        scenes=[gl.Scene(nodes=[0, *roots])],
        nodes=nodes,
        meshes=[
            gl.Mesh(
                name="hand", primitives=[gl.Primitive(attributes=attributes, indices=indices, material=0)]
            )
        ],
        skins=[
            gl.Skin(
                name="mano",
                inverseBindMatrices=ibm_accessor,
                joints=list(range(first_joint, first_joint + num_joints)),
                skeleton=roots[0],
            )
        ],
        materials=[material],
        animations=animations,
        accessors=accessors,
        bufferViews=views,
        buffers=[gl.Buffer(byteLength=len(blob))],
    )
    gltf.set_binary_blob(bytes(blob))
    atomic_write_bytes(path, b"".join(gltf.save_to_bytes()))
    return os.fspath(path)


def _accessor_array(gltf, index: int) -> np.ndarray:
    """The data of accessor ``index`` of a loaded binary glTF (tightly packed views, as written here)."""
    import pygltflib as gl

    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    dtype = {
        gl.FLOAT: np.float32,
        gl.UNSIGNED_INT: np.uint32,
        gl.UNSIGNED_SHORT: np.uint16,
        gl.UNSIGNED_BYTE: np.uint8,
    }[accessor.componentType]
    width = {gl.SCALAR: 1, gl.VEC2: 2, gl.VEC3: 3, gl.VEC4: 4, gl.MAT4: 16}[accessor.type]
    start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
    raw = np.frombuffer(gltf.binary_blob(), dtype=dtype, count=accessor.count * width, offset=start)
    return raw.reshape(accessor.count, width) if width > 1 else raw


def read_skinned_glb(path: str | os.PathLike) -> dict:
    """The skinned mesh of a ``.glb`` (its first mesh and skin), as arrays.

    Returns:
        dict: ``verts (V, 3)``, ``faces (F, 3)``, ``colors (V, 3)`` (sRGB-encoded, or None), ``skin_joints
        (V, 4)``, ``skin_weights (V, 4)``, ``inverse_bind (J, 4, 4)`` (row-major), ``parents (J,)`` (skin joint
        order, -1 at roots), ``joint_names``, ``translations (J, 3)`` and ``rotations (J, 4)`` (the joint
        nodes' local defaults).
    Raises:
        InputError: not a binary glTF with a skinned mesh.
    """
    import pygltflib as gl

    try:
        gltf = gl.GLTF2().load_binary(os.fspath(path))
    except Exception as err:  # pygltflib raises assorted errors on a foreign file
        raise InputError(f"{path}: not a readable binary glTF ({type(err).__name__}: {err})") from None
    if not gltf.meshes or not gltf.skins:
        raise InputError(f"{path}: no skinned mesh (meshes {len(gltf.meshes)}, skins {len(gltf.skins)})")
    prim = gltf.meshes[0].primitives[0]
    attrs = prim.attributes
    skin = gltf.skins[0]
    joint_nodes = list(skin.joints)
    parent_of = {c: i for i, node in enumerate(gltf.nodes) for c in (node.children or [])}
    parents = np.array(
        [joint_nodes.index(parent_of[n]) if parent_of.get(n) in joint_nodes else -1 for n in joint_nodes]
    )
    colors = None
    if attrs.COLOR_0 is not None:
        colors = linear_to_srgb(_accessor_array(gltf, attrs.COLOR_0)[:, :3])
    nodes = [gltf.nodes[n] for n in joint_nodes]
    return {
        "verts": _accessor_array(gltf, attrs.POSITION).astype(np.float64),
        "faces": _accessor_array(gltf, prim.indices).reshape(-1, 3).astype(np.int64),
        "colors": colors,
        "skin_joints": _accessor_array(gltf, attrs.JOINTS_0).astype(np.int64),
        "skin_weights": _accessor_array(gltf, attrs.WEIGHTS_0).astype(np.float64),
        "inverse_bind": _accessor_array(gltf, skin.inverseBindMatrices)
        .reshape(-1, 4, 4)
        .transpose(0, 2, 1)
        .astype(np.float64),
        "parents": parents,
        "joint_names": [n.name for n in nodes],
        "translations": np.array([n.translation or [0.0, 0.0, 0.0] for n in nodes], dtype=np.float64),
        "rotations": np.array([n.rotation or [0.0, 0.0, 0.0, 1.0] for n in nodes], dtype=np.float64),
        "animation": _read_animation(gltf, joint_nodes),
    }


def _read_animation(gltf, joint_nodes: list) -> dict | None:
    """The first animation's keyframes on the skin's joints: ``times (T,)``, ``rotations (T, J, 4)`` (the
    nodes' defaults where a joint has no channel) and ``root_translations (T, 3)``; None without one."""
    if not gltf.animations:
        return None
    anim = gltf.animations[0]
    times, rotations, translation = None, {}, None
    for channel in anim.channels:
        sampler = anim.samplers[channel.sampler]
        keys = _accessor_array(gltf, sampler.input).astype(np.float64)
        times = keys if times is None else times
        if channel.target.node in joint_nodes:
            values = _accessor_array(gltf, sampler.output).astype(np.float64)
            if channel.target.path == "rotation":
                rotations[joint_nodes.index(channel.target.node)] = values
            elif channel.target.path == "translation":
                translation = values
    if times is None:
        return None
    defaults = [gltf.nodes[n].rotation or [0.0, 0.0, 0.0, 1.0] for n in joint_nodes]
    stacked = np.stack(
        [rotations.get(j, np.tile(defaults[j], (len(times), 1))) for j in range(len(joint_nodes))], 1
    )
    return {"times": times, "rotations": stacked, "root_translations": translation}


def skin_vertices(glb: dict, rotations: np.ndarray | None = None, root_translation=None) -> np.ndarray:
    """Vertices of a :func:`read_skinned_glb` mesh posed by its skin, as a glTF viewer does.

    Args:
        glb: the arrays of :func:`read_skinned_glb`.
        rotations: ``(J, 4)`` local joint rotations (x, y, z, w) replacing the file's defaults, or None.
        root_translation: ``(3,)`` replacing the root joints' translation, or None.
    Returns:
        ``(V, 3)`` float64 posed vertices, metres.
    """
    rot = glb["rotations"] if rotations is None else np.asarray(rotations, dtype=np.float64)
    trans = glb["translations"].copy()
    parents = glb["parents"]
    if root_translation is not None:
        trans[parents < 0] = np.asarray(root_translation, dtype=np.float64)
    num = len(parents)
    local = np.tile(np.eye(4), (num, 1, 1))
    local[:, :3, :3] = quaternion_to_matrix(rot)
    local[:, :3, 3] = trans
    world = np.empty_like(local)
    for j in range(num):  # parents come before children in the skin's joint list (checked when written)
        world[j] = local[j] if parents[j] < 0 else world[parents[j]] @ local[j]
    skin = world @ glb["inverse_bind"]  # (J, 4, 4)
    verts_h = np.concatenate([glb["verts"], np.ones((len(glb["verts"]), 1))], axis=1)
    blended = np.einsum("vk,vkij->vij", glb["skin_weights"], skin[glb["skin_joints"]])
    return np.einsum("vij,vj->vi", blended, verts_h)[:, :3]
