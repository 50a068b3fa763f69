"""Fake photo libraries for the demo, the tests and the benchmarks (not part of the likeness package).

- ``synthlib.drawing``: faces drawn with OpenCV, backgrounds, pasted portraits, JPEGs with an EXIF orientation;
- ``synthlib.photoprism``: PhotoPrism's database (its own DDL from ``resources/``) with rows shaped as
  PhotoPrism writes them, and the photo files;
- ``synthlib.portraits``: a library whose named person shows two real people (the demo's portraits).

Import it with ``resources/`` (and ``workflow/``, for ``likeness.geometry``) on ``sys.path``.
"""
