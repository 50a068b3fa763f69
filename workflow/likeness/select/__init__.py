"""Select: the good faces that really are the person, ranked and de-duplicated.

The select rule's job (:mod:`likeness.select.job`) reads the crop stage's JSON records (measurements
included), the export's ``markers.tsv`` (review flag, who named the face, detector score, taken_at) and
``neighbours.tsv`` (every valid face marker in the same files, to see other faces inside a crop), and
writes the paths its rule declares:

* the manifest: the selected faces in rank order with their measurements and score;
* the excluded table: every other face with the first reason that excluded it;
* identity.json: the identity model, its threshold and the person's reference;
* the dataset images folder: exactly the selected crops, ``<stem>.<ext>`` (likeness.names).

Every face gets the first reason of this fixed order (likeness.tables.REASON_ORDER; a face both blurred
and crowded is "crowded"):

1. ``unreadable``: the export or the crop stage could not use it, its crop record is missing or broken;
2. ``stale``: a crop record whose marker is no longer in markers.tsv;
3. ``awaiting review``: PhotoPrism's marker_review flag (unless ``select.keep_review``);
4. ``not named by hand``: with ``select.manual_only``, matched by clustering instead of by the user;
5. ``date window``: taken_at outside [taken_after, taken_before);
6. ``too small``: native crop side below ``select.min_crop_side``;
7. ``crowded``: other faces cover more than ``select.max_other_face_share`` of the crop;
8. ``blurred``: sharpness below ``select.min_sharpness``;
9. ``exposure``: face too dark, too bright or too clipped;
10. ``not the same person``: the identity model (likeness.identity) puts the face farther than
    ``select.max_identity_distance`` from the person's reference (``select.identity_reference``);
11. ``duplicate``: a better face of the same near-duplicate group (perceptual hash within
    ``select.duplicate_distance`` bits, or identity embeddings within ``select.duplicate_identity_distance``)
    was kept;
12. ``day cap``: ``select.max_per_day`` better faces of the same calendar day were kept;
13. ``below top_n``: not among the ``select.top_n`` kept (spread over years and head poses with
    ``select.diversity``; likeness.select.ranking).

Modules, in the order the job uses them: faces (one face and the inputs), crowding (other faces in a
crop), filters (reasons 1-9), identity_check (reason 10, with the identity model of likeness.identity
and the person's reference), ranking and duplicates (reasons 11-13 and the score),
outputs (the tables' bytes), dataset_images (the images folder), job (the entry point).
"""
