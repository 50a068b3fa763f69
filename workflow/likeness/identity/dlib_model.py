"""dlib's ResNet face descriptor: the identity model's one implementation (likeness.identity).

128-d ``dlib_face_recognition_resnet_model_v1`` (same person below 0.6 Euclidean on LFW), with dlib's
HOG frontal detector and 68-point landmarks, from the PyPI packages ``dlib-bin`` and
``face-recognition-models`` (the model files are inside the package, so it runs offline).

Embedding a crop: the crop is shrunk so its longer side is ``DETECT_SIDE`` pixels (a face at crop factor
2.2 is then ~145 px, comfortably above the HOG detector's ~80 px minimum and above the 150 px chip the
descriptor reads), dlib's detector runs on it and the detection that overlaps the marker's box most is
used; when it finds none (a profile, a hat, an odd angle) the marker's box itself is used and the result
says so. The landmarks give the descriptor's aligned chip and the head pose (yaw, pitch).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np

from likeness.identity.embedding import Box, Embedding, IdentityModelMissing, box_iou

# The packages and versions pinned in pyproject.toml; named in the message when they are missing.
MODEL_PACKAGES = "dlib-bin==20.0.1.post1 face-recognition-models==0.3.0"
DLIB_THRESHOLD = 0.6  # dlib's published same-person distance (99.38 % on LFW)
DETECT_SIDE = 320  # crops are shrunk to this side for detection, landmarks and the descriptor
GENERATED_DETECT_SIDE = 512  # generated images: faces may be smaller within the frame
MIN_DETECTION_IOU = 0.3  # a detection must overlap the marker box this much to stand for it


def _model_folder() -> Path:
    """face_recognition_models' folder of .dat files, found without importing the package (its
    __init__ needs pkg_resources, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityModelMissing(f"the identity model is not installed (pip install {MODEL_PACKAGES})")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


# Head pose from landmarks, by proportions of an average head (frontal: nose tip midway between the
# outer eye corners; it sits NOSE_EYE_RATIO of the way from the eye line to the mouth line). The nose
# tip stands NOSE_DEPTH (in half eye-distances) in front of the eye corners, so turning the head by
# yaw moves it sideways by NOSE_DEPTH * tan(yaw) half eye-distances; tilting moves it up or down.
NOSE_DEPTH = 0.6
NOSE_EYE_RATIO = 0.53
NOSE_DEPTH_VERTICAL = 0.42  # nose depth in units of the eye-to-mouth distance


def head_pose(points: np.ndarray) -> tuple[float, float]:
    """(yaw, pitch) in degrees from dlib's 68 landmarks; positive yaw = nose towards image right,
    positive pitch = looking down. Symmetric by construction: a mirrored face gives -yaw."""
    eye_left, eye_right = points[36], points[45]
    mouth = (points[48] + points[54]) / 2
    nose = points[30]
    eyes = (eye_left + eye_right) / 2
    half_eye = max(np.linalg.norm(eye_right - eye_left) / 2, 1e-6)
    axis = (eye_right - eye_left) / (2 * half_eye)  # along the eye line (in-plane rotation removed)
    normal = np.array([-axis[1], axis[0]])  # towards the mouth
    sideways = float(np.dot(nose - eyes, axis)) / half_eye
    eye_to_mouth = max(float(np.dot(mouth - eyes, normal)), 1e-6)
    down = float(np.dot(nose - eyes, normal)) / eye_to_mouth - NOSE_EYE_RATIO
    yaw = math.degrees(math.atan(sideways / NOSE_DEPTH))
    pitch = math.degrees(math.atan(down / NOSE_DEPTH_VERTICAL))
    return round(yaw, 2), round(pitch, 2)


class DlibModel:
    """dlib's ResNet face descriptor with its HOG detector and 68-point landmarks."""

    name = "dlib ResNet face descriptor v1 (128-d)"
    threshold = DLIB_THRESHOLD
    dimension = 128

    def __init__(self) -> None:
        try:
            import dlib
        except ImportError as error:
            raise IdentityModelMissing(
                f"the identity model is not installed ({error}; pip install {MODEL_PACKAGES})"
            ) from None
        folder = _model_folder()
        files = {
            "descriptor": folder / "dlib_face_recognition_resnet_model_v1.dat",
            "landmarks": folder / "shape_predictor_68_face_landmarks.dat",
        }
        missing = [str(path) for path in files.values() if not path.is_file()]
        if missing:
            raise IdentityModelMissing(
                f"identity model files missing: {', '.join(missing)} (pip install {MODEL_PACKAGES})"
            )
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        self._landmarks = dlib.shape_predictor(str(files["landmarks"]))
        self._descriptor = dlib.face_recognition_model_v1(str(files["descriptor"]))
        versions = f"dlib-{dlib.__version__}_frm-{importlib.metadata.version('face_recognition_models')}"
        self.key = f"{versions}_side{DETECT_SIDE}_v1"

    @staticmethod
    def _shrunk(image_bgr: np.ndarray, side: int) -> tuple[np.ndarray, float]:
        height, width = image_bgr.shape[:2]
        scale = min(1.0, side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image_bgr = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA)
        if image_bgr.ndim == 2:
            image_bgr = cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
        return np.ascontiguousarray(cv2.cvtColor(image_bgr[:, :, :3], cv2.COLOR_BGR2RGB)), scale

    def _detections(self, rgb: np.ndarray) -> list[Box]:
        found = self._detector(rgb, 0)
        if len(found) == 0:
            found = self._detector(rgb, 1)  # one upsampling: 4x the pixels, only when nothing was found
        return [(r.left(), r.top(), r.right(), r.bottom()) for r in found]

    def _describe(self, rgb: np.ndarray, box: Box, scale: float, detected: bool) -> Embedding:
        rect = self._dlib.rectangle(*(int(v) for v in box))
        shape = self._landmarks(rgb, rect)
        vector = np.asarray(self._descriptor.compute_face_descriptor(rgb, shape), dtype=np.float32)
        points = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        yaw, pitch = head_pose(points)
        original = tuple(round(v / scale) for v in box)
        return Embedding(vector, original, detected, yaw, pitch)  # type: ignore[arg-type]

    def embed(self, image_bgr: np.ndarray, box: Box) -> Embedding:
        rgb, scale = self._shrunk(image_bgr, DETECT_SIDE)
        marker = tuple(round(v * scale) for v in box)
        best, best_iou = None, 0.0
        for found in self._detections(rgb):
            overlap = box_iou(found, marker)  # type: ignore[arg-type]
            if overlap > best_iou:
                best, best_iou = found, overlap
        if best is not None and best_iou >= MIN_DETECTION_IOU:
            return self._describe(rgb, best, scale, True)
        return self._describe(rgb, marker, scale, False)  # type: ignore[arg-type]

    def detect(self, image_bgr: np.ndarray) -> list[Embedding]:
        rgb, scale = self._shrunk(image_bgr, GENERATED_DETECT_SIDE)
        return [self._describe(rgb, found, scale, True) for found in self._detections(rgb)]
