"""Geometry of cameras, hands and meshes: the domain layer every stage shares.

What lives here: ``camera`` (OpenCV cameras, clip space, InterHand conversions), ``mano`` (MANO and
procedural-hand loading without chumpy), ``lbs`` (Rodrigues, rigid transforms, skinning), ``mesh``
(Loop subdivision, normals, edges, Laplacian), ``mesh_io`` (OBJ/PLY), ``gltf_io`` (skinned glTF 2.0 via
pygltflib, and glTF skinning in NumPy), ``rotations`` (axis-angle <-> quaternion, slerp), ``sh``
(spherical-harmonics shading), ``procedural_hand`` (the procedural MANO-format hand builder behind the shipped assets).

Imports allowed: ``utils.errors``, ``utils.image_size`` and ``utils.checkpoint``; of ``utils``, only its
infrastructure (the atomic writer of ``utils.checkpoint``); besides torch, numpy and the optional geometry
packages (smplx, trimesh, pygltflib; cv2 for the procedural hand's preview) inside functions. Nothing here imports ``utils.render``, ``utils.metrics``,
``models``, ``datasets`` or ``trainers``.
"""
