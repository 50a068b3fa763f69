"""Caption stage: preprocessing, stand-in tagger, caption rules, incremental runs, offline error."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import yaml
from fixtures import cap_reference
from fixtures.images import face_image
from fixtures.stage_inputs import write_dataset
from likeness.caption import model, standin_tagger, tagger
from likeness.caption.captions import caption_faces
from likeness.caption.model import TagTable
from likeness.caption.preprocess import decode_image, preprocess
from likeness.caption.rules import CaptionRules, caption_line, caption_tags, read_trait_tags
from likeness.config import Section, validate_config
from likeness.errors import ConfigError, LikenessError

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(**top) -> Section:
    """Settings as the workflow builds them: the schema's defaults filled in, validated, frozen."""
    return validate_config({"person": "p", "source": {"url": "sqlite:///p.db"}, **top})


def _caption(**values) -> Section:
    return _config(caption=values).caption


def _rules(**values) -> CaptionRules:
    return CaptionRules.from_settings(_caption(**values))


def _encode(image: np.ndarray, extension: str) -> bytes:
    ok, data = cv2.imencode(extension, image)
    assert ok
    return data.tobytes()


# ------------------------------------------------------------------------------ preprocessing

_RNG = np.random.default_rng(7)
PREPROCESS_CASES = {
    # name: (pixels as cv2 writes them, extension, the same pixels as RGB/RGBA/gray for the reference)
    "landscape_large": _RNG.integers(0, 256, (500, 903, 3), dtype=np.uint8),
    "portrait_small_odd_padding": _RNG.integers(0, 256, (121, 80, 3), dtype=np.uint8),
    "grayscale": _RNG.integers(0, 256, (300, 200), dtype=np.uint8),
    "with_alpha": _RNG.integers(0, 256, (640, 480, 4), dtype=np.uint8),
    "small_with_alpha": _RNG.integers(0, 256, (60, 90, 4), dtype=np.uint8),
    "exactly_input_size": _RNG.integers(0, 256, (448, 448, 3), dtype=np.uint8),
}


@pytest.mark.parametrize("name", sorted(PREPROCESS_CASES))
def test_preprocess_matches_independent_implementation(name: str) -> None:
    pixels = PREPROCESS_CASES[name]  # cv2 order: BGR / BGRA / gray
    data = _encode(pixels, ".png")  # lossless, so both sides see the same pixels
    if pixels.ndim == 2:
        as_pil_sees_it = pixels
    elif pixels.shape[2] == 4:
        as_pil_sees_it = pixels[:, :, [2, 1, 0, 3]]
    else:
        as_pil_sees_it = pixels[:, :, ::-1]
    ours = preprocess(decode_image(data), 448)
    expected = cap_reference.reference_tensor(as_pil_sees_it, 448)
    assert ours.shape == (448, 448, 3) and ours.dtype == np.float32
    assert float(np.abs(ours - expected).max()) <= 1.0
    assert float(np.abs(ours - expected).mean()) < 0.05


def test_preprocess_is_bgr_padded_white_and_unscaled() -> None:
    red_strip = np.zeros((100, 448, 3), dtype=np.uint8)
    red_strip[:, :, 2] = 255  # pure red in cv2's BGR
    tensor = preprocess(decode_image(_encode(red_strip, ".png")))
    assert tensor[224, 224].tolist() == [0.0, 0.0, 255.0]  # B, G, R: red in the last channel
    assert tensor[0, 0].tolist() == [255.0, 255.0, 255.0]  # white padding above
    assert tensor[447, 447].tolist() == [255.0, 255.0, 255.0]  # and below


def test_transparent_pixels_become_white() -> None:
    clear = np.zeros((50, 50, 4), dtype=np.uint8)
    tensor = preprocess(decode_image(_encode(clear, ".png")))
    assert np.all(tensor == 255.0)


def test_unreadable_bytes_decode_to_none() -> None:
    assert decode_image(b"not an image") is None
    assert decode_image(b"") is None


# ------------------------------------------------------------------------------ stand-in model


@pytest.mark.parametrize("dynamic", [True, False])
def test_standin_has_the_real_taggers_interface(tmp_path: Path, dynamic: bool) -> None:
    folder = standin_tagger.build(tmp_path, dynamic_batch=dynamic)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    model_input, model_output = session.get_inputs()[0], session.get_outputs()[0]
    table = model.read_tag_table(folder / "selected_tags.csv")
    assert model_input.name == "input" and model_input.type == "tensor(float)"
    assert model_input.shape[1:] == [448, 448, 3]
    assert isinstance(model_input.shape[0], str) == dynamic
    assert model_output.shape[1] == len(table)
    assert table.categories[:4] == (9, 9, 9, 9)
    assert table.names[:4] == ("general", "sensitive", "questionable", "explicit")
    assert {0, 4} <= set(table.categories)
    assert {"1girl", "brown_hair", "^_^", "beard"} <= set(table.names)


def test_standin_outputs_depend_on_the_image(tmp_path: Path) -> None:
    folder = standin_tagger.build(tmp_path)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = np.stack([preprocess(face_image(seed)) for seed in range(3)])
    probabilities = session.run(None, {"input": batch})[0]
    assert probabilities.shape == (3, len(model.read_tag_table(folder / "selected_tags.csv")))
    assert np.all((probabilities > 0) & (probabilities < 1))
    assert np.abs(probabilities[0] - probabilities[1]).max() > 0.2
    expected = standin_tagger.reference_probabilities(batch, probabilities.shape[1])
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)


def test_standin_build_keeps_unchanged_files(tmp_path: Path) -> None:
    folder = standin_tagger.build(tmp_path)
    before = (folder / "model.onnx").stat().st_mtime_ns
    os.utime(folder / "model.onnx", ns=(before - 10**9, before - 10**9))
    standin_tagger.build(tmp_path)
    assert (folder / "model.onnx").stat().st_mtime_ns == before - 10**9


# ------------------------------------------------------------------------------ caption rules

TABLE = TagTable(
    names=("general", "sensitive", "questionable", "explicit", "1girl", "brown_hair", "smile", "^_^",
           "long_hair", "beard", "looking_at_viewer", "hatsune_miku", "hakurei_reimu"),
    categories=(9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0, 4, 4),
)  # fmt: skip


def _probs(**by_name: float) -> np.ndarray:
    vector = np.zeros(len(TABLE), dtype=np.float32)
    for name, value in by_name.items():
        vector[TABLE.names.index(name.replace("CARET", "^_^"))] = value
    return vector


def test_thresholds_are_inclusive_and_per_category() -> None:
    rules = _rules(general_threshold=0.35, character_threshold=0.85)
    probs = _probs(smile=0.35, long_hair=0.3499, hatsune_miku=0.85, hakurei_reimu=0.84)
    assert caption_tags(probs, TABLE, rules) == ["smile", "hatsune miku"]


def test_character_tag_high_above_general_threshold_needs_its_own() -> None:
    rules = _rules(general_threshold=0.2, character_threshold=0.9)
    assert caption_tags(_probs(hakurei_reimu=0.5), TABLE, rules) == []


def test_tags_keep_the_taggers_order_not_probability_order() -> None:
    probs = _probs(looking_at_viewer=0.99, smile=0.4, **{"1girl": 0.6}, hatsune_miku=0.9)
    assert caption_tags(probs, TABLE, _rules()) == [
        "1girl",
        "smile",
        "looking at viewer",
        "hatsune miku",
    ]


def test_underscores_follow_remove_underscore() -> None:
    probs = _probs(long_hair=0.9, CARET=0.9)
    # tagger order: "^_^" comes before long_hair; short tags (kaomoji) keep their underscore
    assert caption_tags(probs, TABLE, _rules()) == ["^_^", "long hair"]
    assert caption_tags(probs, TABLE, _rules(remove_underscore=False)) == ["^_^", "long_hair"]


def test_exclusions_match_either_spelling_and_the_replacement() -> None:
    rules = _rules(
        exclude_tags=["Looking at viewer", "grin"], replace_tags={"smile": "grin", "1girl": "woman"}, prune_traits=False
    )
    probs = _probs(smile=0.9, looking_at_viewer=0.9, **{"1girl": 0.9})
    assert caption_tags(probs, TABLE, rules) == ["woman"]


def test_replacement_keeps_the_tags_position() -> None:
    probs = _probs(smile=0.9, **{"1girl": 0.9})
    assert caption_tags(probs, TABLE, _rules(replace_tags={"1girl": "woman"})) == ["woman", "smile"]


def test_trait_pruning_uses_the_documented_list() -> None:
    probs = _probs(brown_hair=0.9, beard=0.9, long_hair=0.9, smile=0.9)
    pruned = _rules()
    kept = _rules(prune_traits=False)
    assert caption_tags(probs, TABLE, pruned) == ["smile", "long hair"]
    assert caption_tags(probs, TABLE, kept) == ["brown hair", "smile", "long hair", "beard"]


def test_trait_list_file_is_documented_and_holds_only_fixed_traits() -> None:
    path = REPO_ROOT / "resources" / "tagger" / "trait_tags.txt"
    text = path.read_text(encoding="utf-8")
    traits = read_trait_tags(path)
    assert text.startswith("#") and "prune_traits" in text
    assert {"brown hair", "blue eyes", "beard", "freckles"} <= traits
    assert not {"long hair", "smile", "glasses", "1girl"} & traits


def test_custom_trait_file(tmp_path: Path) -> None:
    custom = tmp_path / "traits.txt"
    custom.write_text("# only the beard\nbeard\n", encoding="utf-8")
    rules = _rules(trait_tags_file=str(custom))
    assert caption_tags(_probs(brown_hair=0.9, beard=0.9), TABLE, rules) == ["brown hair"]


def test_rating_is_off_by_default_and_last_when_on() -> None:
    probs = _probs(general=0.2, sensitive=0.7, smile=0.9)
    assert caption_tags(probs, TABLE, _rules()) == ["smile"]
    assert caption_tags(probs, TABLE, _rules(include_rating=True)) == ["smile", "sensitive"]


def test_caption_line_puts_trigger_and_class_word_first_without_duplicates() -> None:
    assert caption_line("ohwx", "man", ["man", "smile", "smile"]) == "ohwx, man, smile"
    assert caption_line("ohwx", "", ["smile"]) == "ohwx, smile"


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"general_threshold": 1.5}, "caption.general_threshold"),
        ({"character_threshold": "high"}, "caption.character_threshold"),
        ({"batch_size": 0}, "caption.batch_size"),
        ({"exclude_tags": "smile"}, "caption.exclude_tags"),
        ({"replace_tags": {"smile": ""}}, "caption.replace_tags"),
        ({"provider": "tpu"}, "caption.provider"),
        ({"standin": "maybe"}, "caption.standin"),
        ({"class_word": "a, b"}, "caption.class_word"),
        ({"treshold": 0.3}, "caption.treshold"),
    ],
)
def test_bad_config_names_the_key(section: dict, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _caption(**section)
    assert caught.value.key == key or caught.value.key.startswith(f"{key}.")  # replace_tags.smile
    assert "\n" not in str(caught.value)


def test_a_replacement_is_one_line_of_text() -> None:
    with pytest.raises(ConfigError) as caught:
        _caption(replace_tags={"smile": "grin\nsolo"})
    assert caught.value.key == "caption.replace_tags.smile" and "\n" not in str(caught.value)


def test_every_caption_key_is_documented_and_typos_are_refused() -> None:
    schema = yaml.safe_load((REPO_ROOT / "workflow" / "schemas" / "caption.schema.yaml").read_text())
    assert schema["additionalProperties"] is False
    for name, spec in schema["properties"].items():
        assert spec.get("description") and "default" in spec, name
    assert set(_caption().as_dict()) == set(schema["properties"])


# ------------------------------------------------------------------------------ the stage


def _text_dir(root: Path) -> Path:
    return root / "results" / "captions" / "text"


def _run(root: Path, manifest: Path, images: Path, section: dict, log: list[str] | None = None) -> dict:
    lines = log if log is not None else []
    settings = _caption(**{"standin": True, "cache_dir": str(root / "cache"), **section})
    summary = caption_faces(
        manifest, images, settings, "ohwx", _text_dir(root),
        root / "results" / "captions" / "captions.tsv", root / "results" / "captions" / "stats.json",
        log=lines.append,
    )  # fmt: skip
    stats = json.loads((root / "results" / "captions" / "stats.json").read_text())
    stats["summary"] = summary
    return stats


def test_captions_are_written_and_incremental(tmp_path: Path) -> None:
    manifest, images = write_dataset(tmp_path, ["a1", "b2", "c3"])
    text = _text_dir(tmp_path)
    log: list[str] = []
    first = _run(tmp_path, manifest, images, {"batch_size": 2}, log)
    assert first["model_runs"] == 3 and "model ran on 3 images" in first["summary"]
    assert any("provider CPUExecutionProvider" in line for line in log)
    assert any("tagged 3/3 images" in line and "ETA" in line for line in log)
    for uid in ("a1", "b2", "c3"):
        assert (text / f"{uid}.txt").read_text(encoding="utf-8").startswith("ohwx, person, ")
    table = (tmp_path / "results" / "captions" / "captions.tsv").read_text(encoding="utf-8").splitlines()
    assert table[0] == "marker_uid\tcaption" and [row.split("\t")[0] for row in table[1:]] == [
        "a1",
        "b2",
        "c3",
    ]
    assert len(list((tmp_path / "cache").glob("wd14-*/*.npy"))) == 3

    # Two more faces: the model runs on those two only; unchanged captions keep their mtime.
    old_stamp = (text / "a1.txt").stat().st_mtime_ns
    manifest, images = write_dataset(tmp_path, ["a1", "b2", "c3", "d4", "e5"])
    second = _run(tmp_path, manifest, images, {})
    assert second["model_runs"] == 2 and second["from_cache"] == 3
    assert (text / "a1.txt").stat().st_mtime_ns == old_stamp

    # A run whose captions come out the same leaves the table's mtime alone: the training sees nothing new.
    table_path = tmp_path / "results" / "captions" / "captions.tsv"
    table_stamp = table_path.stat().st_mtime_ns
    os.utime(table_path, ns=(table_stamp - 10**9, table_stamp - 10**9))
    same = _run(tmp_path, manifest, images, {"batch_size": 3})
    assert same["model_runs"] == 0 and same["captions_changed"] == 0
    assert table_path.stat().st_mtime_ns == table_stamp - 10**9

    # A different threshold rewrites captions from the stored probabilities: no model run.
    before = (text / "a1.txt").read_text(encoding="utf-8")
    third = _run(tmp_path, manifest, images, {"general_threshold": 0.9})
    assert third["model_runs"] == 0 and "model ran on 0 images" in third["summary"]
    after = (text / "a1.txt").read_text(encoding="utf-8")
    assert after != before and len(after.split(", ")) < len(before.split(", "))


def test_captions_equal_rules_applied_to_the_stored_probabilities(tmp_path: Path) -> None:
    manifest, images = write_dataset(tmp_path, ["a1", "b2"])
    text = _text_dir(tmp_path)
    section = {"general_threshold": 0.5, "exclude_tags": ["solo"]}
    stats = _run(tmp_path, manifest, images, section)
    folder = tmp_path / "cache" / model.STANDIN_DIR
    table = model.read_tag_table(folder / "selected_tags.csv")
    rules = _rules(standin=True, **section)
    for uid in ("a1", "b2"):
        data = (images / f"{uid}.jpg").read_bytes()
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        probs = session.run(None, {"input": preprocess(decode_image(data))[None]})[0][0]
        expected = caption_line("ohwx", "person", caption_tags(probs, table, rules))
        assert (text / f"{uid}.txt").read_text(encoding="utf-8") == expected + "\n"
    assert stats["captioned"] == 2


def test_model_loads_once_and_runs_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, images = write_dataset(tmp_path, [f"f{i}" for i in range(5)])
    loads: list[Path] = []
    batches: list[int] = []
    real_load = tagger.load_tagger

    def counting_load(path: Path, preference: str, log) -> tagger.LoadedTagger:
        loads.append(path)
        loaded = real_load(path, preference, log)
        real_predict = loaded.predict
        loaded.predict = lambda batch: (batches.append(batch.shape[0]), real_predict(batch))[1]  # type: ignore[method-assign]
        return loaded

    monkeypatch.setattr(tagger, "load_tagger", counting_load)
    _run(tmp_path, manifest, images, {"batch_size": 2})
    assert len(loads) == 1 and batches == [2, 2, 1]
    _run(tmp_path, manifest, images, {"character_threshold": 0.5})
    assert len(loads) == 1  # everything stored: the model is not even loaded


def test_fixed_batch_model_runs_one_image_at_a_time(tmp_path: Path) -> None:
    fixed = standin_tagger.build(tmp_path / "fixed", dynamic_batch=False)
    loaded = tagger.load_tagger(fixed / "model.onnx", "cpu", lambda line: None)
    batch = np.stack([preprocess(face_image(seed)) for seed in range(3)])
    assert loaded.fixed_batch == 1
    dynamic = tagger.load_tagger(standin_tagger.build(tmp_path / "dyn") / "model.onnx", "cpu", lambda line: None)
    assert dynamic.fixed_batch is None
    np.testing.assert_allclose(loaded.predict(batch), dynamic.predict(batch), atol=1e-5)


def test_model_dir_is_used_and_keys_the_cache(tmp_path: Path) -> None:
    manifest, images = write_dataset(tmp_path, ["a1"])
    model_dir = standin_tagger.build(tmp_path / "my-model", dynamic_batch=False)
    stats = _run(tmp_path, manifest, images, {"standin": False, "model_dir": str(model_dir)})
    assert stats["model"] == f"folder {model_dir}" and stats["model_runs"] == 1
    standin_stats = _run(tmp_path, manifest, images, {})
    assert standin_stats["model_key"] != stats["model_key"] and standin_stats["model_runs"] == 1


def test_model_dir_without_files_is_a_config_error(tmp_path: Path) -> None:
    manifest, images = write_dataset(tmp_path, ["a1"])
    with pytest.raises(ConfigError) as caught:
        _run(tmp_path, manifest, images, {"standin": False, "model_dir": str(tmp_path / "empty")})
    assert caught.value.key == "caption.model_dir"


def test_deselected_faces_lose_their_caption_but_nothing_else_is_removed(tmp_path: Path) -> None:
    manifest, images = write_dataset(tmp_path, ["a1", "b2", "c3"])
    text = _text_dir(tmp_path)
    _run(tmp_path, manifest, images, {})
    (text / "notes.md").write_text("keep me", encoding="utf-8")
    manifest, images = write_dataset(tmp_path, ["a1", "c3"])
    stats = _run(tmp_path, manifest, images, {})
    assert not (text / "b2.txt").exists() and stats["sidecars_removed"] == 1
    assert (images / "b2.jpg").exists() and (text / "notes.md").exists()
    assert (text / "a1.txt").exists() and (text / "c3.txt").exists()


def test_unreadable_and_missing_images_are_skipped_with_a_reason(tmp_path: Path) -> None:
    manifest, images = write_dataset(tmp_path, ["a1", "b2"])
    text = _text_dir(tmp_path)
    (images / "b2.jpg").write_bytes(b"truncated")
    with manifest.open("a", encoding="utf-8") as handle:
        handle.write("gone\tresults/crops/gone.jpg\tdeadbeef\t0.5\n")
    log: list[str] = []
    stats = _run(tmp_path, manifest, images, {}, log)
    reasons = {item["marker_uid"]: item["reason"] for item in stats["skipped"]}
    assert set(reasons) == {"b2", "gone"} and "not a readable image" in reasons["b2"]
    assert stats["captioned"] == 1 and stats["model_runs"] == 1 and (text / "a1.txt").exists()
    assert any(line.startswith("caption: skipped face gone") for line in log)


def test_trigger_must_be_a_single_caption_word() -> None:
    with pytest.raises(ConfigError) as caught:
        _config(trigger="ohwx, person")
    assert caught.value.key == "trigger"


def _hub_cache_with(cache: Path, repo_id: str, revision: str, files: dict[str, bytes]) -> None:
    """Lay out ``cache`` as huggingface_hub does after downloading ``files`` of ``repo_id`` at ``revision``."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    for name, content in files.items():
        blob = hashlib.sha256(content).hexdigest()
        (repo / "blobs" / blob).write_bytes(content)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob)


def test_a_cached_hub_model_is_used_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # found in the cache: the network is not needed
    built = standin_tagger.build(tmp_path / "built")
    settings = _caption(hub_cache=str(tmp_path / "hub"))
    files = {name: (built / name).read_bytes() for name in (model.MODEL_FILE, model.TAGS_FILE)}
    _hub_cache_with(tmp_path / "hub", settings.model, settings.revision, files)
    manifest, images = write_dataset(tmp_path, ["a1"])
    stats = _run(tmp_path, manifest, images, {"standin": False, "hub_cache": str(tmp_path / "hub")})
    assert stats["model"] == f"{settings.model}@{settings.revision[:10]}" and stats["model_runs"] == 1
    assert (_text_dir(tmp_path) / "a1.txt").read_text(encoding="utf-8").startswith("ohwx, person")


def test_offline_without_cached_model_is_one_line_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no network in tests, on any machine
    manifest, images = write_dataset(tmp_path, ["a1"])
    text = _text_dir(tmp_path)
    with pytest.raises(LikenessError) as caught:
        _run(tmp_path, manifest, images, {"standin": False, "hub_cache": str(tmp_path / "hub")})
    message = str(caught.value)
    assert "\n" not in message
    assert "SmilingWolf/wd-vit-tagger-v3" in message and "'caption.model_dir'" in message
    assert not (text / "a1.txt").exists()


def test_provider_choice() -> None:
    assert tagger.choose_providers("auto", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"
    ]  # fmt: skip
    assert tagger.choose_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert tagger.choose_providers("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(ConfigError):
        tagger.choose_providers("cuda", ["CPUExecutionProvider"])


# ------------------------------------------------------------------------------ masked faces (select.crowded: mask)

GROUP_TABLE = TagTable(
    names=("general", "sensitive", "questionable", "explicit", "1girl", "2girls", "multiple_girls", "smile",
           "hug", "group", "looking_at_viewer"),
    categories=(9, 9, 9, 9, 0, 0, 0, 0, 0, 0, 0),
)  # fmt: skip


def test_a_masked_faces_caption_drops_the_group_tags_of_the_documented_list() -> None:
    probs = np.full(len(GROUP_TABLE), 0.9, dtype=np.float32)
    probs[:4] = 0.0
    rules = _rules(remove_underscore=False)
    assert caption_tags(probs, GROUP_TABLE, rules) == [
        "1girl", "2girls", "multiple_girls", "smile", "hug", "group", "looking_at_viewer"
    ]  # fmt: skip
    assert caption_tags(probs, GROUP_TABLE, rules, masked=True) == ["1girl", "smile", "looking_at_viewer"]
    listed = read_trait_tags(REPO_ROOT / "resources" / "tagger" / "group_tags.txt")
    assert {"2girls", "multiple girls", "2boys", "multiple boys", "group"} <= listed
    assert not {"1girl", "1boy", "solo", "smile"} & listed  # the person's own tags stay


def test_the_tagger_sees_a_masked_face_with_the_masked_heads_filled_white(tmp_path: Path) -> None:
    from likeness.select import masks

    manifest, images = write_dataset(tmp_path, ["a1", "b2"])
    jpeg = images / "b2.jpg"
    side = cv2.imread(str(jpeg)).shape[0]
    alpha = masks.alpha_channel(masks.loss_weights(side, (0, 0, 1, 1), [(side * 0.6, side * 0.1, side, side * 0.5)]))
    (images / "b2.png").write_bytes(masks.masked_png(str(jpeg), alpha))
    jpeg.unlink()
    text = _text_dir(tmp_path)
    _run(tmp_path, manifest, images, {"general_threshold": 0.2})
    folder = tmp_path / "cache" / model.STANDIN_DIR
    table = model.read_tag_table(folder / "selected_tags.csv")
    rules = _rules(standin=True, general_threshold=0.2)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    tensor = preprocess(decode_image((images / "b2.png").read_bytes()))
    # Where the mask is 0 the tagger's input is white: the other head is not tagged.
    scale = 448 / side
    y, x = int(side * 0.3 * scale), int(side * 0.8 * scale)
    assert tensor[y, x].tolist() == [255.0, 255.0, 255.0]
    probs = session.run(None, {"input": tensor[None]})[0][0]
    expected = caption_line("ohwx", "person", caption_tags(probs, table, rules, masked=True))
    assert (text / "b2.txt").read_text(encoding="utf-8") == expected + "\n"
