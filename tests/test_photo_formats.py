"""HEIC, AVIF and RAW originals in PhotoPrism, Immich and digiKam: every face cropped with the right pixels.

The files are real (pillow-heif, Pillow's AVIF writer, a DNG LibRaw reads: tests/fixtures/formats.py), in
orientations 1, 3, 6 and 8. Each source's rows go through the real export, the photo's location and the
crop job's code (likeness.crop.cropping.crop_face, as the crop rule runs it). Each crop is compared with
the same scene saved as JPEG, cut at the same box, within the codecs' error; the crops of one face from
the three sources are the same box and the same pixels within that error.
"""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from fixtures.databases import (
    PostgresDatabase,
    digikam_path_map,
    immich_path_map,
    write_digikam_sqlite,
    write_sqlite,
)
from fixtures.formats import FORMATS, ORIENTATIONS, build_formats_library, digikam_library, immich_frame, immich_library
from fixtures.managers import stable_uuid, write_immich
from fixtures.rawfiles import encode_dng
from likeness import imageheader
from likeness.config import validate_config
from likeness.crop import decoders
from likeness.crop.cropping import crop_face
from likeness.crop.jobs import spec_for
from likeness.export import photos, sourceapi
from likeness.geometry import apply_orientation

pytestmark = pytest.mark.postgres
PERSON = "Zoë O'Brien"
PASSWORD_ENV = "LIKENESS_TEST_PG_PASSWORD"
# Mean absolute difference per channel between a crop and the JPEG scene's: HEVC, AV1 and JPEG at ~92.
CODEC_ERROR = 6.0
LABELS = [f"{kind}-{o}" for kind in FORMATS for o in ORIENTATIONS]


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    library = build_formats_library(root)
    write_sqlite(library)
    digikam_db = write_digikam_sqlite(digikam_library(library))
    database = PostgresDatabase()
    engine = database.writable_engine()
    immich = immich_library(library)
    write_immich(immich.builder, engine)
    engine.dispose()
    # What Immich records for an EXIF-only HEIC: the tag in asset_exif, and asset.width/height turned by it
    # (metadata.service), though its decoder ignores the tag: the preview and the boxes are in the stored frame.
    for label, (kind, orientation) in library.kinds.items():
        if kind == "heic-exif":
            asset = stable_uuid(library.photos[label].photo_uid)
            database.execute(
                'UPDATE asset_exif SET orientation = %(o)s WHERE "assetId" = %(id)s',
                {"o": str(orientation), "id": asset},
            )
            if orientation in (5, 6, 7, 8):
                database.execute("UPDATE asset SET width = height, height = width WHERE id = %(id)s", {"id": asset})
    _add_live_photo_video(library, database)
    database.grant_read()
    sources = {
        "photoprism": {
            "url": f"sqlite:///{root / 'storage' / 'index.db'}",
            "originals": str(library.originals),
            "sidecar": str(library.sidecar),
        },
        "immich": {"url": database.url, "password_env": PASSWORD_ENV, "path_map": immich_path_map(library)},
        "digikam": {"url": f"sqlite:///{digikam_db}", "path_map": digikam_path_map(library)},
    }
    crops = {}
    import os

    os.environ[PASSWORD_ENV] = database.password
    try:
        for kind, source in sources.items():
            crops[kind] = _crop_all(library, kind, source, root / f"crops-{kind}")
    finally:
        os.environ.pop(PASSWORD_ENV, None)
        database.drop()
    yield library, crops


def _add_live_photo_video(library, database) -> None:
    """The video half of a Live Photo: a hidden VIDEO asset (its .MOV on disk) the still points to, with a face."""
    still = library.photos["heic-6"]
    video_id = stable_uuid("live-video")
    movie = library.originals / "2024/live/IMG_0009.MOV"
    movie.parent.mkdir(parents=True, exist_ok=True)
    movie.write_bytes(b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + bytes(2000))
    database.execute(
        'INSERT INTO asset (id, "deviceAssetId", "ownerId", "deviceId", type, "originalPath", "fileCreatedAt",'
        ' "fileModifiedAt", checksum, "originalFileName", "localDateTime", visibility)'
        " SELECT %(id)s, 'live', \"ownerId\", 'likeness-tests', 'VIDEO', '/data/library/2024/live/IMG_0009.MOV',"
        ' "fileCreatedAt", "fileModifiedAt", %(sum)s, \'IMG_0009.MOV\', "localDateTime", \'hidden\''
        " FROM asset WHERE id = %(still)s",
        {"id": video_id, "sum": b"\x01" * 20, "still": stable_uuid(still.photo_uid)},
    )
    database.execute(
        'UPDATE asset SET "livePhotoVideoId" = %(video)s WHERE id = %(still)s',
        {"video": video_id, "still": stable_uuid(still.photo_uid)},
    )
    database.execute(
        'INSERT INTO asset_face (id, "assetId", "personGroupId", "imageWidth", "imageHeight", "boundingBoxX1",'
        ' "boundingBoxY1", "boundingBoxX2", "boundingBoxY2", "sourceType")'
        " SELECT %(face)s, %(video)s, \"personGroupId\", 240, 320, 40, 60, 120, 140, 'machine-learning'"
        ' FROM asset_face WHERE "assetId" = %(still)s',
        {"face": stable_uuid("live-video-face"), "video": video_id, "still": stable_uuid(still.photo_uid)},
    )


def _crop_all(library, kind: str, source: dict, out) -> dict:
    """label -> (record, crop pixels or None) for every face of the person the source lists; 'video' too."""
    config = validate_config({"person": PERSON, "source": source, "crop": {"size": 128}})
    export = sourceapi.read_export(config.source, PERSON)
    assert export.manager == kind
    photos.locate_photos(export, photos.roots(export))
    out.mkdir()
    label_of = {}
    for label, photo in library.photos.items():
        label_of[photo.file_name] = label_of[photo.file_name.removesuffix(".jpg")] = label
    results = {}
    for marker in export.markers:
        label = label_of.get(marker.file_name, "video")
        if not marker.croppable:
            results[label] = ({"status": "excluded", "reason": marker.reason}, None)
            continue
        image = out / f"{marker.stem}.jpg"
        record = crop_face(spec_for(marker, export.manager), config.crop, str(image), str(out / f"{marker.stem}.json"))
        results[label] = (record, cv2.imread(str(image)) if record["status"] == "ok" else None)
    return results


def _expected(scene: np.ndarray, record: dict) -> np.ndarray:
    left, top, side, _ = record["crop_box"]
    cut = scene[top : top + side, left : left + side]
    out = record["output_side"]
    return cv2.resize(cut, (out, out), interpolation=cv2.INTER_AREA) if cut.shape[0] != out else cut


@pytest.mark.parametrize("source", ["photoprism", "immich", "digikam"])
@pytest.mark.parametrize("label", LABELS)
def test_every_face_is_cropped_with_the_right_pixels(formats, source, label):
    library, crops = formats
    record, crop = crops[source][label]
    assert record["status"] == "ok", record["reason"]
    kind, _orientation = library.kinds[label]
    scene = immich_frame(label, library)[0] if source == "immich" else library.scenes[label]
    assert (record["photo_width"], record["photo_height"]) == (scene.shape[1], scene.shape[0])
    error = np.abs(crop.astype(float) - _expected(scene, record).astype(float)).mean()
    assert error < CODEC_ERROR, f"{source} {label}: {error:.1f}"
    # The wrong frame (no orientation, or a second one) would put other pixels there.
    wrong = apply_orientation(scene, 3)
    assert np.abs(crop.astype(float) - _expected(wrong, record).astype(float)).mean() > 3 * CODEC_ERROR
    expected_decode = {"heic": "heif", "heic-exif": "heif", "avif": "avif", "dng": "raw-preview"}
    if source != "photoprism":
        assert record["decode"].split("/")[0] == expected_decode.get(kind, "raw-demosaic")


@pytest.mark.parametrize("label", LABELS)
def test_the_same_crop_from_every_source(formats, label):
    library, crops = formats
    kind, orientation = library.kinds[label]
    reference, reference_crop = crops["photoprism"][label]
    for source in ("immich", "digikam"):
        record, crop = crops[source][label]
        if source == "immich" and kind == "heic-exif" and orientation != 1:
            # Immich shows this file as stored: the same face, turned by the EXIF tag Immich ignores.
            crop = apply_orientation(crop, orientation)
        else:
            assert record["crop_box"] == reference["crop_box"]
        assert crop.shape == reference_crop.shape
        assert np.abs(crop.astype(float) - reference_crop.astype(float)).mean() < CODEC_ERROR


def test_a_live_photo_still_is_cropped_and_its_video_half_is_not(formats):
    _library, crops = formats
    still, _ = crops["immich"]["heic-6"]
    assert still["status"] == "ok" and still["decode"] == "heif"
    video, _ = crops["immich"]["video"]
    assert video["status"] == "excluded"
    assert video["reason"] == "asset hidden in Immich"


def test_no_reason_gives_photoprism_advice_outside_photoprism(tmp_path):
    """A file that changed since the manager read it: each manager's own advice."""
    library = build_formats_library(tmp_path / "lib", 160, 120)
    settings = validate_config({"person": PERSON, "source": {"url": "sqlite:///x.db"}}).crop
    photo = library.photos["heic-6"]
    path = library.originals / photo.file_name.removesuffix(".jpg")
    face = photo.faces[0]
    for manager, words in (("immich", "Immich"), ("digikam", "digiKam")):
        spec = {
            "marker_uid": "m1",
            "path": str(path),
            "x": face.x,
            "y": face.y,
            "w": face.w,
            "h": face.h,
            "file_width": 200,
            "file_height": 100,
            "file_orientation": 6,
            "manager": manager,
        }
        record = crop_face(spec, settings, str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
        assert record["status"] == "excluded"
        assert words in record["reason"] and "PhotoPrism" not in record["reason"], record["reason"]


def test_a_raw_never_reaches_opencvs_tiff_decoder(tmp_path):
    """DNG, NEF, CR2 and ARW begin like TIFFs: the bytes or the name say RAW first."""
    scene = np.full((40, 60, 3), 128, np.uint8)
    dng = encode_dng(scene, 6)
    assert imageheader.parse_header(dng).format == "raw"
    nef_like = b"II*\x00\x08\x00\x00\x00" + bytes(64)  # a plain TIFF structure: only the name tells
    assert imageheader.parse_header(nef_like, "DSC_0001.NEF").format == "raw"
    assert imageheader.parse_header(b"II*\x00\x08\x00\x00\x00CR\x02\x00" + bytes(64)).format == "raw"
    assert imageheader.parse_header(b"FUJIFILMCCD-RAW 0201" + bytes(64)).format == "raw"
    assert imageheader.parse_header(b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom").format == "raw"
    # A real TIFF photo is still a TIFF.
    _ok, tiff = cv2.imencode(".tiff", scene)
    assert imageheader.parse_header(tiff.tobytes(), "scan.tif").format == "tiff"


def test_a_raw_of_another_size_than_recorded_is_a_reason(tmp_path):
    scene = np.zeros((60, 80, 3), np.uint8)
    scene[20:40, 30:50] = 200
    path = tmp_path / "IMG_1.DNG"
    path.write_bytes(encode_dng(scene, 1, preview=True))
    settings = validate_config({"person": PERSON, "source": {"url": "sqlite:///x.db"}}).crop
    spec = {
        "marker_uid": "m",
        "path": str(path),
        "x": 0.3,
        "y": 0.3,
        "w": 0.3,
        "h": 0.3,
        "file_width": 96,
        "file_height": 64,
        "file_orientation": 1,
        "manager": "digikam",
    }
    record = crop_face(spec, settings, str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
    assert record["status"] == "excluded"
    assert "RAW decodes to 80x60 pixels (LibRaw)" in record["reason"] and "96x64" in record["reason"]
    with pytest.raises(decoders.DecodeError, match="RAW"):
        decoders.read_raw(b"II*\x00\x08\x00\x00\x00" + bytes(100), (0, 0), 1e8)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_container_transforms_read_as_libheif_applies_them(orientation):
    """Every irot/imir combination pillow-heif writes reads back as the orientation libheif decodes."""
    import pillow_heif

    rng = np.random.default_rng(orientation)
    stored = (np.kron(rng.random((3, 4, 3)), np.ones((16, 16, 1))) * 255).astype(np.uint8)
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    pillow_heif.from_bytes("RGB", (64, 48), stored.tobytes()).save(buffer, format="HEIF", exif=exif.tobytes())
    header = imageheader.parse_header(buffer.getvalue())
    decoded = np.asarray(pillow_heif.open_heif(io.BytesIO(buffer.getvalue())))
    assert header.container_orientation == orientation
    assert np.abs(apply_orientation(stored, orientation).astype(float) - decoded).mean() < CODEC_ERROR


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_header_orientation_table_is_the_geometry_one(orientation):
    """imageheader's numpy-free orientation table does what likeness.geometry does."""
    grid = np.arange(6).reshape(2, 3)
    assert imageheader._EXIF_OPS[orientation](grid.tolist()) == apply_orientation(grid, orientation).tolist()


@pytest.mark.parametrize("kind", ["heic", "avif", "dng", "dng-raw"])
def test_damaged_originals_are_reasons_never_errors(tmp_path, kind):
    """Truncated and bit-flipped HEIC, AVIF and DNG files: each face gets a record, ok or with a reason."""
    from fixtures.formats import encode_original

    scene = np.full((48, 64, 3), 90, np.uint8)
    data = encode_original(kind, scene, 6)
    settings = validate_config({"person": PERSON, "source": {"url": "sqlite:///x.db"}}).crop
    rng = np.random.default_rng(len(data))
    damaged = [data[:cut] for cut in (12, 40, 200, len(data) // 2, len(data) - 10)]
    for _ in range(6):
        flipped = bytearray(data)
        for at in rng.integers(8, len(data), 8):
            flipped[at] ^= 0xFF
        damaged.append(bytes(flipped))
    for number, blob in enumerate(damaged):
        path = tmp_path / f"broken{number}{'.dng' if kind.startswith('dng') else '.heic'}"
        path.write_bytes(blob)
        imageheader.parse_header(blob, path.name)  # never raises
        spec = {"marker_uid": f"m{number}", "path": str(path), "x": 0.3, "y": 0.3, "w": 0.3, "h": 0.3,
                "file_width": 48, "file_height": 64, "file_orientation": 6, "manager": "immich"}  # fmt: skip
        record = crop_face(spec, settings, str(tmp_path / "c.jpg"), str(tmp_path / "c.json"))
        assert record["status"] in ("ok", "excluded")
        assert record["status"] == "ok" or record["reason"]
