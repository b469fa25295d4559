"""Face detection with MTCNN (the ``mtcnn`` package ships its weights, so it works offline).

:class:`FaceDetector` returns every face with its box, confidence and five landmarks;
:func:`crop_face` cuts a square around a box with a margin, kept inside the image. With no
face, callers report "no face detected" rather than score a picture the detector was never
meant for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Face:
    """One detected face: box ``(x, y, width, height)`` in pixels, confidence, landmarks."""

    box: tuple[int, int, int, int]
    confidence: float
    keypoints: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def area(self) -> int:
        return int(self.box[2] * self.box[3])


class FaceDetector:
    """MTCNN, loaded on first use; faces below ``min_confidence`` or ``min_size`` pixels are ignored."""

    def __init__(self, min_confidence: float = 0.9, min_size: int = 20) -> None:
        self.min_confidence, self.min_size = min_confidence, min_size
        self._mtcnn = None

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image, most confident and largest first."""
        if image.shape[0] < self.min_size or image.shape[1] < self.min_size:
            return []
        if self._mtcnn is None:
            from mtcnn import MTCNN

            self._mtcnn = MTCNN()
        found = []
        for item in self._mtcnn.detect_faces(np.ascontiguousarray(image)):
            x, y, w, h = (int(v) for v in item["box"])
            if item["confidence"] >= self.min_confidence and min(w, h) >= self.min_size:
                keypoints = {k: (int(v[0]), int(v[1])) for k, v in item.get("keypoints", {}).items()}
                found.append(Face((max(x, 0), max(y, 0), w, h), float(item["confidence"]), keypoints))
        return sorted(found, key=lambda f: (round(f.confidence, 2), f.area), reverse=True)


def crop_face(image: np.ndarray, face: Face, margin: float = 0.4) -> np.ndarray:
    """A square crop around the face box with ``margin`` of the box size added on each side.

    The square is shifted (and, if needed, shrunk) to stay inside the image, so no made-up
    pixels enter the crop; a face at the border is simply off-centre.
    """
    x, y, w, h = face.box
    height, width = image.shape[:2]
    side = min(int(round(max(w, h) * (1 + 2 * margin))), height, width)
    left = int(np.clip(round(x + w / 2 - side / 2), 0, width - side))
    top = int(np.clip(round(y + h / 2 - side / 2), 0, height - side))
    return image[top:top + side, left:left + side].copy()
