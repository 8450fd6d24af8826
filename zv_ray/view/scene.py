"""An Item as viser scene nodes: the mesh as GLB, Gaussians as splats, posed views as camera frusta with
their images. World +Z up, cameras OpenCV camera-to-world: viser's frusta use the same convention.
"""

from __future__ import annotations

import numpy as np
import viser
import viser.transforms as vtf
from PIL import Image

from zv_ray.inference.views import PosedViews, uint8_images
from zv_ray.splat.gaussians import Gaussians
from zv_ray.splat.torch_rasterizer import quat_scale_to_covar
from zv_ray.view.items import Item

# The ground truth stands beside a reconstruction, beyond the input cameras (radius <= 2.8 plus the frusta).
GT_OFFSET = np.array([4.5, 0.0, 0.0])
LAYERS = ("mesh", "gaussians", "cameras")
_OBJECT_RADIUS = 1.56  # the bounding sphere of a normalized object's [-0.9, 0.9]^3 box
_LABEL_HEIGHT = 1.25  # labels float above objects of extent 1.8
_FRUSTUM_SCALE = 0.15  # world size of a drawn frustum (dataset cameras may stand 1.5 from the centre)
_THUMBNAIL = 256  # frustum images are sent at most this large
_INPUT_COLOR = (230, 110, 20)  # a model's input views
_VIEW_COLOR = (70, 70, 70)


def splat_arrays(gaussians: Gaussians) -> dict[str, np.ndarray]:
    """viser's splat arrays from one object's activated Gaussians (B = 1): wxyz quaternions and scales become
    covariances R S S^T R^T here, through the rasterizer's own conversion."""
    g = gaussians.detach().to("cpu").float()
    return {
        "centers": g.means[0].numpy(),  # [N, 3]
        "covariances": quat_scale_to_covar(g.quats[0], g.scales[0]).numpy(),  # [N, 3, 3]
        "rgbs": g.colors[0].clamp(0, 1).numpy(),  # [N, 3]
        "opacities": g.opacities[0, :, None].numpy(),  # [N, 1]
    }


def camera_pose(c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # c2w [4, 4] OpenCV
    """(wxyz [4], position [3]) of a camera for viser."""
    return vtf.SO3.from_matrix(np.asarray(c2w[:3, :3], dtype=np.float64)).wxyz, np.asarray(c2w[:3, 3], dtype=np.float64)


def _thumbnail(rgb: np.ndarray) -> np.ndarray:  # [H, W, 3] uint8 -> [h, w, 3] uint8
    image = Image.fromarray(rgb)
    image.thumbnail((_THUMBNAIL, _THUMBNAIL))
    return np.asarray(image)


def add_frusta(scene: viser.SceneApi, views: PosedViews) -> list:
    """One frustum per view of one object (B = 1) with its image; a model's inputs highlighted."""
    height, width = views.images.shape[-2:]
    nodes = []
    for i, (rgb, k, c2w) in enumerate(zip(uint8_images(views.images[0]), views.intrinsics[0].numpy(), views.c2w[0].numpy())):
        wxyz, position = camera_pose(c2w)
        is_input = i < views.num_inputs
        nodes.append(scene.add_camera_frustum(
            f"/item/cameras/{'input' if is_input else 'view'}_{i:03d}", fov=float(2 * np.arctan(height / 2 / k[1])),
            aspect=width / height, scale=_FRUSTUM_SCALE * (1.3 if is_input else 1.0), image=_thumbnail(rgb),
            color=_INPUT_COLOR if is_input else _VIEW_COLOR, wxyz=wxyz, position=position,
        ))
    return nodes


def add_item(scene: viser.SceneApi, item: Item) -> dict[str, list]:
    """The item's nodes under /item, by layer; a reconstruction at the origin, its ground truth at GT_OFFSET."""
    layers: dict[str, list] = {name: [] for name in LAYERS}
    beside = item.mesh is not None and item.gaussians is not None
    if item.gaussians is not None:
        layers["gaussians"].append(scene.add_gaussian_splats("/item/gaussians", **splat_arrays(item.gaussians)))
    if item.mesh is not None:
        offset = GT_OFFSET if beside else np.zeros(3)
        layers["mesh"].append(scene.add_glb("/item/mesh", glb_data=item.mesh.export(file_type="glb"), position=offset))
    if beside:
        for layer, text, at in (("gaussians", "prediction", np.zeros(3)), ("mesh", "ground truth", GT_OFFSET)):
            label = scene.add_label(f"/item/label_{layer}", text, position=at + (0, 0, _LABEL_HEIGHT), anchor="bottom-center")
            layers[layer].append(label)
    if item.views is not None:
        layers["cameras"] += add_frusta(scene, item.views)
    return layers


def initial_view(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """(camera position, look-at point) framing the first item: a reconstruction and its ground truth side by
    side, else the object and its cameras, else (a .ply, any scene) the bulk of its Gaussians."""
    if item.mesh is None and item.gaussians is not None:
        means = item.gaussians.means[0].detach().cpu().numpy()
        centre = np.median(means, axis=0)
        reach = 2.0 * max(float(np.quantile(np.linalg.norm(means - centre, axis=1), 0.9)), 0.25)  # splats spread past it
    elif item.gaussians is not None:
        centre = GT_OFFSET / 2
        reach = float(np.linalg.norm(centre)) + 1.0
    else:
        centre = np.zeros(3)
        cameras = 0.0 if item.views is None else float(item.views.c2w[0, :, :3, 3].norm(dim=-1).max())
        reach = max(_OBJECT_RADIUS, cameras)
    direction = np.array([0.25, -0.9, 0.4])  # from the front (-Y, so +X runs left to right), a little right and above
    return centre + 1.7 * reach * direction / np.linalg.norm(direction), centre
