"""load_ct / load_label: geometry and HU of DICOM and NIfTI inputs, and each bad input's error."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from sah.data import CTVolume, load_ct, load_label
from sah.data.readers.dicom import read_slice_hu
from sah.data.readers.privacy import IDENTIFYING_DICOM_ATTRIBUTES, anonymous_id
from sah.errors import ConfigError, DataError

IDENTITY = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-4711",
    "PatientBirthDate": "19600102",
    "StudyDate": "20240101",
    "InstitutionName": "St Example Hospital",
    "AccessionNumber": "ACC998877",
    "ReferringPhysicianName": "Who^Doctor",
}
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
ROTATED = (np.cos(0.5), np.sin(0.5), 0.0, -np.sin(0.5), np.cos(0.5), 0.0)


def phantom(shape: tuple[int, int, int]) -> np.ndarray:
    """A head-like HU volume: air, a bone shell and brain tissue, integer-valued."""
    grid = np.indices(shape).astype(float)
    centre = (np.array(shape, dtype=float) - 1)[:, None, None, None] / 2
    radius = np.sqrt((((grid - centre) / (np.array(shape)[:, None, None, None] / 2)) ** 2).sum(0))
    volume = np.full(shape, -1000.0)
    volume[radius < 0.9] = 1000.0
    volume[radius < 0.75] = 40.0
    noise = np.random.default_rng(0).integers(-5, 6, size=shape)
    return (volume + noise).astype(np.float32)


# --- DICOM writing -----------------------------------------------------------------------------


def write_slice(
    path: Path,
    hu: np.ndarray,
    position,
    *,
    orientation=AXIAL,
    pixel_spacing=(0.7, 0.5),
    series_uid: str,
    series_number: int = 1,
    description: str = "HEAD 2.5mm",
) -> None:
    """One CT slice, stored as 12-bit unsigned with RescaleIntercept -1024 like many scanners.

    ``hu`` is indexed (column, row) to match the volume layout; DICOM stores rows x columns.
    """
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    for keyword, value in IDENTITY.items():
        setattr(ds, keyword, value)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.1", series_uid
    ds.Modality, ds.Manufacturer, ds.KVP = "CT", "ACME", 120
    ds.SeriesNumber, ds.SeriesDescription = series_number, description
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
    ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
    ds.PixelSpacing = [str(s) for s in pixel_spacing]
    ds.SliceThickness = "2.5"
    stored = np.rint(hu.T + 1024).astype(np.uint16)
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)


def geometry(orientation, pixel_spacing, gap: float, origin) -> np.ndarray:
    """The LPS affine of (column, row, slice) indices of a series written with these values."""
    row_dir, col_dir = np.array(orientation[:3]), np.array(orientation[3:])
    affine = np.eye(4)
    affine[:3, 0] = row_dir * pixel_spacing[1]
    affine[:3, 1] = col_dir * pixel_spacing[0]
    affine[:3, 2] = np.cross(row_dir, col_dir) * gap
    affine[:3, 3] = origin
    return affine


def write_series(
    folder: Path,
    volume: np.ndarray,
    *,
    orientation=AXIAL,
    pixel_spacing=(0.7, 0.5),
    gap: float = 2.5,
    origin=(-90.0, -100.0, -40.0),
    positions=None,
    series_number: int = 1,
    description: str = "HEAD 2.5mm",
    seed: int = 0,
) -> list:
    """Write ``volume`` (column, row, slice) as a series in shuffled file order; return files."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = geometry(orientation, pixel_spacing, gap, origin)
    if positions is None:
        positions = [lps[:3, 3] + k * lps[:3, 2] for k in range(volume.shape[2])]
    uid = generate_uid()
    names = np.random.default_rng(seed).permutation(volume.shape[2])
    files = []
    for k, position in enumerate(positions):
        path = folder / f"s{series_number}_{names[k]:03d}"
        write_slice(
            path,
            volume[:, :, k],
            position,
            orientation=orientation,
            pixel_spacing=pixel_spacing,
            series_uid=uid,
            series_number=series_number,
            description=description,
        )
        files.append(path)
    return files


def assert_same_voxels(volume: CTVolume, written: np.ndarray, written_lps: np.ndarray) -> None:
    """Every loaded voxel, mapped through both affines, lands on a written voxel of equal HU."""
    index = np.indices(volume.shape).reshape(3, -1).astype(float)
    ras = volume.affine[:3, :3] @ index + volume.affine[:3, 3:4]
    lps = ras * np.array([[-1.0], [-1.0], [1.0]])
    inverse = np.linalg.inv(written_lps)
    written_index = inverse[:3, :3] @ lps + inverse[:3, 3:4]
    rounded = np.rint(written_index)
    np.testing.assert_allclose(written_index, rounded, atol=1e-3)
    expected = written[tuple(rounded.astype(int))]
    np.testing.assert_allclose(volume.array.reshape(-1), expected, atol=1.0)


@pytest.fixture
def written_volume() -> np.ndarray:
    return phantom((12, 10, 6))


@pytest.mark.parametrize(
    "orientation", [AXIAL, CORONAL, ROTATED], ids=["axial", "coronal", "oblique"]
)
def test_dicom_series_round_trips_hu_and_geometry(tmp_path, written_volume, orientation):
    write_series(tmp_path, written_volume, orientation=orientation)
    volume = load_ct(tmp_path)
    assert volume.array.dtype == np.float32
    assert sorted(volume.spacing) == pytest.approx(sorted((0.5, 0.7, 2.5)))
    assert_same_voxels(
        volume, written_volume, geometry(orientation, (0.7, 0.5), 2.5, (-90.0, -100.0, -40.0))
    )


def test_axial_dicom_series_gets_ras_affine_and_flipped_axes(tmp_path, written_volume):
    write_series(tmp_path, written_volume)  # columns run to patient left, rows to posterior
    volume = load_ct(tmp_path)
    columns, rows, _ = written_volume.shape
    expected = np.diag([0.5, 0.7, 2.5, 1.0])
    expected[:3, 3] = [90.0 - (columns - 1) * 0.5, 100.0 - (rows - 1) * 0.7, -40.0]
    np.testing.assert_allclose(volume.affine, expected, atol=1e-4)
    assert volume.spacing == pytest.approx((0.5, 0.7, 2.5))
    np.testing.assert_allclose(volume.array, written_volume[::-1, ::-1, :], atol=1.0)
    assert volume.meta["format"] == "dicom" and volume.meta["n_slices"] == 6


def test_no_identifying_attribute_leaves_the_loader(tmp_path, written_volume):
    write_series(tmp_path, written_volume, description="Jane Doe head")
    volume = load_ct(tmp_path)
    text = repr(volume) + repr(volume.meta) + str(volume.meta)
    for value in [*IDENTITY.values(), "Jane Doe", "1.2.826.0.1.3680043.99.1"]:
        assert value not in text
    assert not set(volume.meta) & set(IDENTIFYING_DICOM_ATTRIBUTES)
    assert "array" not in repr(volume)  # a repr never dumps voxels


# --- gantry tilt -------------------------------------------------------------------------------

TILT_SHAPE = (16, 48, 6)  # columns (0.5 mm), rows (0.7 mm), slices (2.5 mm along the normal)
TILT_ORIGIN = np.array([-90.0, -100.0, -40.0])


def head_field(points: np.ndarray) -> np.ndarray:
    """HU at LPS points (3, N): any shape across x, linear along y (the direction the tilt
    shifts slices), so that shifting a slice back by a fraction of a pixel interpolates
    exactly, up to the storage's rounding to whole HU."""
    x, y, z = points
    return 40.0 + 60.0 * np.sin(x / 1.3) + 0.9 * (y + 100.0) + 0.5 * (z + 40.0)


def sample_series(slice_positions: list[np.ndarray]) -> np.ndarray:
    """The field sampled at every pixel of axial slices placed at these positions."""
    columns, rows, _ = TILT_SHAPE
    i, j = np.meshgrid(np.arange(columns), np.arange(rows), indexing="ij")
    slices = []
    for position in slice_positions:
        points = position[:, None] + np.stack([i.ravel() * 0.5, j.ravel() * 0.7, 0 * i.ravel()])
        slices.append(head_field(points).reshape(columns, rows))
    return np.stack(slices, axis=-1)


def tilted_positions(degrees: float) -> list[np.ndarray]:
    """A gantry tilted by ``degrees``: slices 2.5 mm apart along their normal, each shifted
    along y in proportion (the acquired positions of a tilted axial series)."""
    slope = np.tan(np.radians(degrees))
    return [TILT_ORIGIN + np.array([0.0, k * 2.5 * slope, k * 2.5]) for k in range(TILT_SHAPE[2])]


@pytest.mark.parametrize("degrees", [5.0, 17.5, 30.0, -12.0])
def test_gantry_tilted_series_matches_the_same_head_written_untilted(tmp_path, degrees, caplog):
    tilted = tilted_positions(degrees)
    straight = [TILT_ORIGIN + np.array([0.0, 0.0, k * 2.5]) for k in range(TILT_SHAPE[2])]
    write_series(tmp_path / "tilted", sample_series(tilted), positions=tilted)
    write_series(tmp_path / "straight", sample_series(straight), positions=straight)
    with caplog.at_level("WARNING", logger="sah.data.readers.dicom"):
        volume = load_ct(tmp_path / "tilted")
    reference = load_ct(tmp_path / "straight")
    # The tilt's size (a gantry tilted either way), in the metadata and the log.
    assert volume.meta["gantry_tilt_deg"] == pytest.approx(abs(degrees), abs=0.01)
    assert f"gantry tilt of {abs(degrees):.1f}°" in caplog.text
    assert "gantry_tilt_deg" not in reference.meta
    # The same orthogonal grid as the untilted series ...
    assert volume.shape == reference.shape
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-4)
    # ... and the same HU wherever the acquired slice covers the voxel; air where it does not.
    shift_px = np.array([p[1] - TILT_ORIGIN[1] for p in tilted]) / 0.7
    rows = np.arange(TILT_SHAPE[1])[:, None]
    covered = (rows - shift_px >= 0) & (rows - shift_px <= TILT_SHAPE[1] - 1)  # (rows, slices)
    covered = np.broadcast_to(covered[None], TILT_SHAPE)[::-1, ::-1, :]  # loaded axial: RAS flip
    assert covered.mean() > 0.7
    np.testing.assert_allclose(volume.array[covered], reference.array[covered], atol=1.0)
    assert np.all(volume.array[~covered] == -1024.0)


def test_mask_of_a_tilted_series_goes_back_onto_its_acquired_slices(tmp_path):
    """sah-predict writes a tilted series' mask on the slices as acquired: voxel (i, j, k) is
    pixel (i, j) of slice k and the affine carries the shear."""
    from sah.cli.predict import mask_on_tilted_series

    tilted = tilted_positions(20.0)
    write_series(tmp_path / "tilted", sample_series(tilted), positions=tilted)
    volume = load_ct(tmp_path / "tilted")
    centre_lps, radius = TILT_ORIGIN + np.array([4.0, 18.0, 6.0]), 9.0

    def inside(affine: np.ndarray, shape: tuple[int, ...], lps: bool) -> np.ndarray:
        index = np.indices(shape).reshape(3, -1).astype(float)
        points = affine[:3, :3] @ index + affine[:3, 3:4]
        if not lps:
            points = points * np.array([[-1.0], [-1.0], [1.0]])
        distance = np.linalg.norm(points - centre_lps[:, None], axis=0)
        return (distance - radius).reshape(shape)

    mask_ras = (inside(volume.affine, volume.shape, lps=False) < 0).astype(np.uint8)
    image = mask_on_tilted_series(mask_ras, volume.meta)
    path = tmp_path / "mask.nii.gz"
    nib.save(image, path)
    saved = nib.load(path)
    assert saved.shape == TILT_SHAPE
    # The saved affine places each voxel on its acquired DICOM pixel.
    ras = saved.affine @ np.array([0.0, 0.0, 3.0, 1.0])
    np.testing.assert_allclose(ras[:3] * [-1, -1, 1], tilted[3], atol=1e-3)
    # Every acquired pixel clearly inside (outside) the ball is in (out of) the mask.
    signed = inside(saved.affine, TILT_SHAPE, lps=False)
    data = np.asarray(saved.dataobj)
    assert mask_ras.sum() > 100
    assert np.all(data[signed < -0.7] == 1) and np.all(data[signed > 0.7] == 0)


def test_sideways_drift_that_is_no_tilt_is_refused(tmp_path, written_volume):
    positions = [(-90.0, -100.0 + y, -40.0 + k * 2.5) for k, y in enumerate((0, 3, 0, 3, 0, 3))]
    write_series(tmp_path, written_volume, positions=positions)
    with pytest.raises(DataError, match="not in proportion to their distance") as caught:
        load_ct(tmp_path)
    assert caught.value.path == tmp_path and "dcm2niix" in str(caught.value)


def test_missing_slice_is_refused(tmp_path, written_volume):
    files = write_series(tmp_path, written_volume)
    files[3].unlink()
    with pytest.raises(DataError, match=r"1 slice\(s\) missing") as caught:
        load_ct(tmp_path)
    assert caught.value.path == tmp_path


def test_irregular_spacing_is_refused(tmp_path, written_volume):
    positions = [(-90.0, -100.0, z) for z in (0.0, 2.5, 5.0, 8.0, 10.5, 13.0)]
    write_series(tmp_path, written_volume, positions=positions)
    with pytest.raises(DataError, match=r"irregular: gaps from 2\.50 to 3\.00 mm"):
        load_ct(tmp_path)


def test_duplicate_positions_are_refused(tmp_path, written_volume):
    positions = [(-90.0, -100.0, z) for z in (0.0, 2.5, 2.5, 5.0, 7.5, 10.0)]
    write_series(tmp_path, written_volume, positions=positions)
    with pytest.raises(DataError, match="share a position"):
        load_ct(tmp_path)


def test_two_series_in_one_folder_are_listed_not_merged(tmp_path, written_volume):
    write_series(tmp_path, written_volume[:, :, :3], series_number=2, description="HEAD BONE")
    write_series(tmp_path, written_volume[:, :, :4], series_number=3, description="HEAD SOFT")
    with pytest.raises(DataError) as caught:
        load_ct(tmp_path)
    message = str(caught.value)
    assert caught.value.path == tmp_path
    assert "holds 2 series" in message
    assert "series 2 'HEAD BONE' (3 slices)" in message
    assert "series 3 'HEAD SOFT' (4 slices)" in message
    assert "its own folder" in message


def test_folder_without_dicom_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dicom file")
    with pytest.raises(DataError, match="holds no DICOM images"):
        load_ct(tmp_path)
    (tmp_path / "SE0001").mkdir()
    with pytest.raises(DataError, match=r"pass the subfolder of one series \(found: SE0001\)"):
        load_ct(tmp_path)


def test_rounded_positions_of_an_oblique_series_are_not_mistaken_for_tilt(tmp_path, written_volume):
    lps = geometry(ROTATED, (0.7, 0.5), 2.5, (-90.0, -100.0, -40.0))
    jitter = np.random.default_rng(3).uniform(-0.05, 0.05, size=(6, 3))  # export rounding
    normal = lps[:3, 2] / np.linalg.norm(lps[:3, 2])
    jitter -= np.outer(jitter @ normal, normal)  # sideways only: gaps stay regular
    positions = [lps[:3, 3] + k * lps[:3, 2] + jitter[k] for k in range(6)]
    write_series(tmp_path, written_volume, orientation=ROTATED, positions=positions)
    assert load_ct(tmp_path).shape == written_volume.shape


# --- pydicom's real CT_small.dcm --------------------------------------------------------------


@pytest.fixture
def ct_small() -> Path:
    return Path(get_testdata_file("CT_small.dcm"))


def test_real_slice_hu_matches_rescale_computed_independently(ct_small):
    ds = pydicom.dcmread(ct_small)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    hu = read_slice_hu(ds)
    assert hu.dtype == np.float32 and hu.shape == (ds.Rows, ds.Columns)
    np.testing.assert_array_equal(hu, expected.astype(np.float32))
    assert float(ds.RescaleIntercept) == -1024 and hu.min() < 0  # really rescaled to HU


def test_one_slice_series_is_refused_as_not_a_volume(tmp_path, ct_small):
    shutil.copy(ct_small, tmp_path / "only.dcm")
    with pytest.raises(DataError, match="single slice, not a volume") as caught:
        load_ct(tmp_path)
    assert caught.value.path == tmp_path


def test_a_dicom_file_path_asks_for_its_folder(ct_small):
    with pytest.raises(DataError, match="pass the folder instead"):
        load_ct(ct_small)


def test_real_slices_stacked_load_with_their_hu(tmp_path, ct_small):
    """Two copies of CT_small.dcm one slice-thickness apart: a real encoding through load_ct."""
    ds = pydicom.dcmread(ct_small)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(
        ds.RescaleIntercept
    )
    for k in range(2):
        copy = pydicom.dcmread(ct_small)
        copy.SOPInstanceUID = copy.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        copy.ImagePositionPatient = [x, y, z + 5.0 * k]
        copy.save_as(tmp_path / f"slice{1 - k}.dcm")
    volume = load_ct(tmp_path)
    assert volume.shape == (128, 128, 2)
    assert volume.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    for k in range(2):  # axial LPS storage: RAS flips columns and rows
        np.testing.assert_array_equal(volume.array[:, :, k], expected.T[::-1, ::-1])
    text = repr(volume) + str(volume.meta)
    for keyword in ("PatientName", "PatientID", "SeriesInstanceUID"):
        assert str(ds.get(keyword)) not in text


# --- NIfTI -------------------------------------------------------------------------------------


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def test_lps_nifti_is_flipped_to_ras_with_spacing_kept(tmp_path):
    data = phantom((5, 6, 7))
    affine = np.diag([-0.8, -0.9, 2.5, 1.0])
    affine[:3, 3] = [10.0, 20.0, -30.0]
    volume = load_ct(save_nifti(tmp_path / "lps.nii.gz", data, affine))
    np.testing.assert_array_equal(volume.array, data[::-1, ::-1, :])
    assert volume.spacing == pytest.approx((0.8, 0.9, 2.5))
    assert np.all(np.diag(volume.affine)[:3] > 0)
    corner = volume.affine @ [0, 0, 0, 1]  # the same world point as stored voxel (4, 5, 0)
    np.testing.assert_allclose(corner, affine @ [4, 5, 0, 1])
    assert volume.meta == {"format": "nifti"}


def test_nifti_with_permuted_axes_gets_spacing_per_ras_axis(tmp_path):
    data = phantom((7, 6, 5))  # stored as (S, A, R)
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2], affine[3, 3] = 2.5, 0.9, 0.8, 1.0
    volume = load_ct(save_nifti(tmp_path / "sar.nii", data, affine))
    np.testing.assert_array_equal(volume.array, data.transpose(2, 1, 0))
    assert volume.spacing == pytest.approx((0.8, 0.9, 2.5))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist") as caught:
        load_ct(tmp_path / "absent.nii.gz")
    assert caught.value.path == tmp_path / "absent.nii.gz"


def test_truncated_gzip_is_named(tmp_path):
    path = save_nifti(tmp_path / "cut.nii.gz", phantom((16, 16, 8)), np.eye(4))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as caught:
        load_ct(path)
    assert caught.value.path == path


def test_garbage_nifti_is_named(tmp_path):
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(gzip.compress(b"definitely not a nifti header" * 20))
    with pytest.raises(DataError, match="cannot read NIfTI") as caught:
        load_ct(path)
    assert caught.value.path == path


def test_nan_voxels_are_refused_or_filled_on_request(tmp_path):
    data = phantom((6, 6, 4))
    data[1, 2, 3], data[0, 0, 0] = np.nan, np.inf
    path = save_nifti(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(DataError, match="2 voxels are NaN or infinite") as caught:
        load_ct(path)
    assert caught.value.path == path and "fill_nonfinite" in str(caught.value)
    volume = load_ct(path, fill_nonfinite=-1024)
    assert np.isfinite(volume.array).all() and volume.array[1, 2, 3] == -1024


def test_raw_scanner_values_are_refused_with_the_offset_fix(tmp_path):
    hu = phantom((10, 10, 6))
    path = save_nifti(tmp_path / "raw.nii.gz", hu + 1024, np.eye(4))  # 0-4095 storage, no rescale
    with pytest.raises(DataError, match="not Hounsfield units") as caught:
        load_ct(path)
    assert caught.value.path == path
    assert "RescaleIntercept -1024" in str(caught.value) and "assume_offset=-1024" in str(
        caught.value
    )
    repaired = load_ct(path, assume_offset=-1024)
    np.testing.assert_allclose(repaired.array, hu)
    assert repaired.meta["assumed_offset"] == -1024


def test_skull_stripped_hu_with_zero_background_is_accepted(tmp_path):
    brain = np.zeros((10, 10, 6), dtype=np.float32)
    brain[3:7, 3:7, 2:4] = 35.0  # no air, min 0, but nothing where raw soft tissue would be
    assert load_ct(save_nifti(tmp_path / "brain.nii.gz", brain, np.eye(4))).array.max() == 35


def test_normalised_intensities_are_refused(tmp_path):
    data = np.random.default_rng(1).random((8, 8, 4)).astype(np.float32)
    with pytest.raises(DataError, match="normalised data or a mask"):
        load_ct(save_nifti(tmp_path / "norm.nii.gz", data, np.eye(4)))


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 1)], ids=["2d", "one-slice"])
def test_2d_image_is_refused(tmp_path, shape):
    path = save_nifti(tmp_path / "slice.nii.gz", np.full(shape, 40.0, np.float32), np.eye(4))
    with pytest.raises(DataError, match="is a 2D image") as caught:
        load_ct(path)
    assert caught.value.path == path


def test_4d_image_is_refused(tmp_path):
    path = save_nifti(tmp_path / "4d.nii.gz", np.zeros((4, 4, 4, 3), np.float32), np.eye(4))
    with pytest.raises(DataError, match="several volumes"):
        load_ct(path)


def test_unknown_file_type_is_refused(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="neither a NIfTI file"):
        load_ct(path)


# --- labels ------------------------------------------------------------------------------------


@pytest.fixture
def image_and_affine(tmp_path) -> tuple[CTVolume, np.ndarray]:
    affine = np.diag([0.5, 0.5, 5.0, 1.0])
    affine[:3, 3] = [-20.0, -30.0, 10.0]
    return load_ct(save_nifti(tmp_path / "ct.nii.gz", phantom((8, 8, 4)), affine)), affine


def test_label_on_the_image_grid_loads_as_uint8(tmp_path, image_and_affine):
    image, affine = image_and_affine
    label = np.zeros((8, 8, 4), np.float32)
    label[2:4, 2:4, 1] = 4
    loaded = load_label(save_nifti(tmp_path / "seg.nii.gz", label, affine), like=image)
    assert loaded.dtype == np.uint8 and loaded.shape == image.shape
    np.testing.assert_array_equal(loaded, label)


def test_label_stored_in_other_orientation_still_matches(tmp_path, image_and_affine):
    image, affine = image_and_affine
    label = np.zeros((8, 8, 4), np.uint8)
    label[1, 2, 3] = 1
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = 7  # same grid, axis 0 stored reversed
    path = save_nifti(tmp_path / "flipped.nii.gz", label[::-1].copy(), affine @ flip)
    np.testing.assert_array_equal(load_label(path, like=image), label)


def test_label_with_other_shape_names_both_files(tmp_path, image_and_affine):
    image, affine = image_and_affine
    path = save_nifti(tmp_path / "seg.nii.gz", np.zeros((8, 8, 5), np.uint8), affine)
    with pytest.raises(DataError, match="label shape") as caught:
        load_label(path, like=image)
    assert caught.value.path == path and str(image.source) in str(caught.value)


def test_label_with_shifted_affine_names_both_files(tmp_path, image_and_affine):
    image, affine = image_and_affine
    shifted = affine.copy()
    shifted[0, 3] += 1.0
    path = save_nifti(tmp_path / "seg.nii.gz", np.zeros((8, 8, 4), np.uint8), shifted)
    with pytest.raises(DataError, match=r"differs from the grid of image .* by up to 1 mm") as e:
        load_label(path, like=image)
    assert e.value.path == path and str(image.source) in str(e.value)
    rounding = affine.copy()
    rounding[0, 3] += 1e-4
    path = save_nifti(tmp_path / "seg2.nii.gz", np.zeros((8, 8, 4), np.uint8), rounding)
    assert load_label(path, like=image).shape == image.shape


def test_interpolated_label_is_refused(tmp_path, image_and_affine):
    image, affine = image_and_affine
    label = np.zeros((8, 8, 4), np.float32)
    label[3, 3, 1] = 0.5
    with pytest.raises(DataError, match="non-integer"):
        load_label(save_nifti(tmp_path / "seg.nii.gz", label, affine), like=image)


# --- pseudonyms --------------------------------------------------------------------------------


def test_anonymous_id_is_a_short_salted_hash():
    first = anonymous_id("MRN-4711", salt="s3cret")
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert first == anonymous_id("MRN-4711", salt="s3cret")
    assert first != anonymous_id("MRN-4711", salt="other")
    assert first != anonymous_id("MRN-4712", salt="s3cret")
    with pytest.raises(ConfigError, match="salt"):
        anonymous_id("MRN-4711", salt="")


class BrightVoxels:
    """A rule as the model: voxels above 60 HU, so the test needs no trained checkpoint."""

    def __init__(self) -> None:
        self.sources = ["rule:hu>60"]

    def segment(self, ct: CTVolume, flip_tta: bool = False) -> np.ndarray:
        return ct.array > 60.0


def test_sah_predict_reports_the_tilt_and_writes_the_mask_on_the_acquired_slices(tmp_path):
    import json

    from sah.cli.predict import Case, predict_case

    tilted = tilted_positions(25.0)
    acquired = sample_series(tilted)
    write_series(tmp_path / "scan", acquired, positions=tilted)
    out = tmp_path / "out"
    out.mkdir()
    result = predict_case(Case("scan", tmp_path / "scan"), BrightVoxels(), False, out)
    assert result["gantry_tilt_deg"] == pytest.approx(25.0, abs=0.01)
    assert json.loads((out / "result.json").read_text())["gantry_tilt_deg"] == pytest.approx(25.0)
    mask = nib.load(out / "mask.nii.gz")
    assert mask.shape == TILT_SHAPE
    # Each acquired pixel's mask value is the rule applied to that very pixel (HU stored as
    # whole numbers: pixels within 1 HU of the cut may go either way).
    data = np.asarray(mask.dataobj)
    clear = np.abs(acquired - 60.0) > 1.0
    shift_px = np.array([p[1] - TILT_ORIGIN[1] for p in tilted]) / 0.7
    rows = np.arange(TILT_SHAPE[1])[:, None]
    # Pixels whose nearest orthogonal voxel lies inside the field of view (not on its edge row).
    inner = (rows >= 1) & (rows + shift_px <= TILT_SHAPE[1] - 2)
    covered = np.broadcast_to(inner[None], TILT_SHAPE)
    check = clear & covered
    assert check.mean() > 0.5
    np.testing.assert_array_equal(data[check], (acquired > 60.0)[check])
