# Builds the render example's scene with Blender's Python, from Blender's factory settings, so
# no binary asset is committed: a ground, three objects in their own colours, a sun, a camera,
# and a cube that turns and rises over frames 1 to 48. Run by every task of the job
# (`blender -b --factory-startup --python make_scene.py`); also by hand, to look at it:
#   blender --factory-startup --python examples/render/make_scene.py
import math

import bpy

scene = bpy.context.scene
for obj in list(bpy.data.objects):
    bpy.data.objects.remove(obj, do_unlink=True)


def material(name, rgb, roughness=0.5):
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Base Color"].default_value = (*rgb, 1.0)
    bsdf.inputs["Roughness"].default_value = roughness
    return mat


def place(obj, mat):
    obj.data.materials.append(mat)
    return obj


bpy.ops.mesh.primitive_plane_add(size=20, location=(0, 0, 0))
place(bpy.context.object, material("ground", (0.8, 0.8, 0.75), 0.9))
bpy.ops.mesh.primitive_uv_sphere_add(radius=1, location=(-2.5, 0.5, 1), segments=48, ring_count=24)
place(bpy.context.object, material("red", (0.8, 0.1, 0.08), 0.3))
bpy.ops.mesh.primitive_cylinder_add(radius=0.7, depth=2, location=(2.5, 1, 1))
place(bpy.context.object, material("blue", (0.1, 0.2, 0.8), 0.4))
bpy.ops.mesh.primitive_cube_add(size=1.4, location=(0, -1, 0.7))
cube = place(bpy.context.object, material("gold", (0.9, 0.6, 0.1), 0.2))

# The cube turns a full circle and rises over the 48 frames.
scene.frame_start, scene.frame_end = 1, 48
for frame, turn, height in [(1, 0.0, 0.7), (48, 2 * math.pi, 2.0)]:
    cube.rotation_euler = (0.0, 0.0, turn)
    cube.location.z = height
    cube.keyframe_insert("rotation_euler", frame=frame)
    cube.keyframe_insert("location", frame=frame)

bpy.ops.object.light_add(type="SUN", location=(4, -4, 8))
sun = bpy.context.object
sun.data.energy = 4.0
sun.rotation_euler = (math.radians(40), 0, math.radians(30))

bpy.ops.object.camera_add(location=(0, -9, 4.5))
camera = bpy.context.object
camera.rotation_euler = (math.radians(68), 0, 0)
scene.camera = camera

world = scene.world or bpy.data.worlds.new("world")
scene.world = world
world.use_nodes = True
world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.55, 0.65, 0.8, 1.0)
