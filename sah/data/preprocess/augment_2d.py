"""Random 2D augmentation for the slice datasets (the LoRA study's elastic deformation).

Window jitter and horizontal flip already live in the 2D training slices; this adds the elastic
deformation, applied to image and label with one displacement field so that they stay aligned.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

# The study used torchvision-style elastic parameters alpha=5, sigma=4 on 512-pixel slices; that
# alpha is in normalised [-1, 1] units, i.e. alpha / 2 = 2.5 pixels here. Smoothing white noise
# shrinks it: the rms displacement is about 0.163 * alpha / sigma pixels, 0.1 px for the study's
# values, so its deformation was nearly the identity. alpha=300, sigma=8 gives about 6 px.
STUDY_ALPHA_PX = 2.5
STUDY_SIGMA_PX = 4.0


def elastic_2d(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    alpha: float = STUDY_ALPHA_PX,
    sigma: float = STUDY_SIGMA_PX,
    *,
    p: float = 1.0,
    image_order: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Elastically deform a 2D ``image`` and its ``label`` together, with probability ``p``.

    Displacements are uniform noise in [-1, 1] smoothed by a Gaussian of ``sigma`` pixels and
    scaled by ``alpha`` pixels (Simard et al. 2003; rms about 0.163 alpha / sigma pixels). The
    image is interpolated with ``image_order`` (1: bilinear), the label with nearest neighbour,
    so it keeps exactly its values (a binary mask stays binary; the study's bilinear
    interpolation followed by ``mask > 0`` grew masks by up to a pixel).
    Samples beyond the edge take the edge value. Returns new arrays; inputs are not modified.
    """
    if image.ndim != 2 or image.shape != label.shape:
        raise ValueError(
            f"elastic_2d needs a 2D image and a label of the same shape; got {image.shape} and "
            f"{label.shape}"
        )
    if p < 1.0 and rng.random() >= p:
        return image, label
    rows, cols = image.shape
    displacement = [
        ndi.gaussian_filter(rng.uniform(-1.0, 1.0, size=(rows, cols)), sigma, mode="constant")
        * alpha
        for _ in range(2)
    ]
    grid = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    coords = [g + d for g, d in zip(grid, displacement, strict=True)]
    warped = ndi.map_coordinates(image, coords, order=image_order, mode="nearest")
    warped_label = ndi.map_coordinates(label, coords, order=0, mode="nearest")
    return warped.astype(image.dtype, copy=False), warped_label.astype(label.dtype, copy=False)
