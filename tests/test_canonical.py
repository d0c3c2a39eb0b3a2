"""routecast's own outcomes format: round trips, atomic saves and every kind of broken file."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from routecast.data import canonical, detect_format, load_dataset, save_dataset
from routecast.data.dataset import OPTIONAL_ARRAYS, SPLITS, Dataset
from routecast.errors import DataError, DataFormatError

NUMERIC = ("quality", "cost_usd", *OPTIONAL_ARRAYS)


def _full() -> Dataset:
    """Every optional field present, with a null latency and a null response among them."""
    n, m = 5, 2
    cell = np.arange(n * m, dtype=np.float64).reshape(n, m)
    latency = cell * 0.37 + 0.1
    latency[2, 1] = np.nan
    responses = np.empty((n, m), dtype=object)
    for i in range(n):
        for j in range(m):
            responses[i, j] = f"réponse {i}\n« {j} »"
    responses[1, 0] = None
    return Dataset(
        name="full set",
        models=("tiny/one", "big-two"),
        ids=tuple(f"task.{i}" for i in range(n)),
        prompts=("What is 2+2?", "Línea\ncon salto", 'quote " and \\ slash', "", "日本語"),
        quality=np.array([[0.0, 1.0], [0.25, 0.5], [1 / 3, 2 / 3], [1.0, 0.0], [0.1, 0.9]]),
        cost_usd=cell * 1.234e-5,
        split=np.array(["train", "validation", "test", "train", "test"]),
        task=("math", "lang", "lang", "math", ""),
        latency_s=latency,
        tokens_in=cell + 12,
        tokens_out=cell * 3,
        confidence=cell / 11,
        responses=responses,
        meta={"source": "unit", "prices": {"tiny/one": [0.1, 0.2]}, "n": 3, "ok": True,
              "none": None},
    )


def _assert_same(back: Dataset, ds: Dataset) -> None:
    assert back.name == ds.name
    assert back.models == ds.models
    assert back.ids == ds.ids
    assert back.prompts == ds.prompts
    assert back.split.tolist() == ds.split.tolist()
    assert back.task == ds.task
    for name in NUMERIC:
        a, b = getattr(back, name), getattr(ds, name)
        if b is None:
            assert a is None, name
        else:
            assert a is not None, name
            np.testing.assert_array_equal(a, b, err_msg=name)  # NaN == NaN here
    if ds.responses is None:
        assert back.responses is None
    else:
        assert back.responses is not None
        assert back.responses.tolist() == ds.responses.tolist()
    assert back.meta == ds.meta


# -- round trips -----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_round_trip_keeps_everything(tmp_path: Path, suffix: str) -> None:
    ds = _full()
    path = canonical.save(ds, tmp_path / f"out{suffix}")
    assert path == tmp_path / f"out{suffix}"
    back = canonical.load(path)
    _assert_same(back, ds)
    assert back.responses is not None
    assert back.responses[1, 0] is None
    assert back.latency_s is not None
    assert np.isnan(back.latency_s[2, 1])


def test_gz_is_gzip_and_jsonl_is_plain_text(tmp_path: Path) -> None:
    ds = _full()
    plain = canonical.save(ds, tmp_path / "a.jsonl")
    packed = canonical.save(ds, tmp_path / "a.jsonl.gz")
    assert packed.read_bytes()[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed.read_bytes()).decode("utf-8") == plain.read_text("utf-8")
    lines = plain.read_text("utf-8").splitlines()
    assert len(lines) == 1 + ds.n_prompts
    header = json.loads(lines[0])
    assert header["format"] == "routecast-outcomes"
    assert header["version"] == 1
    assert header["models"] == list(ds.models)
    rec = json.loads(lines[3])
    assert rec["id"] == "task.2"
    assert rec["split"] == "test"
    assert rec["outcomes"]["big-two"]["latency_s"] is None  # NaN is written as null
    assert rec["outcomes"]["big-two"]["tokens_out"] == 15
    assert isinstance(rec["outcomes"]["big-two"]["tokens_out"], int)


def test_round_trip_without_optional_fields(tmp_path: Path) -> None:
    ds = Dataset(name="bare", models=("a", "b", "c"), ids=("x", "y"), prompts=("p", "q"),
                 quality=np.array([[0.0, 0.5, 1.0], [1.0, 1.0, 0.0]]),
                 cost_usd=np.array([[0.0, 1e-6, 2.5], [3.0, 0.125, 7e-9]]),
                 split=np.array(["test", "train"]))
    back = canonical.load(canonical.save(ds, tmp_path / "bare.jsonl"))
    _assert_same(back, ds)
    assert back.task is None
    assert back.responses is None
    for name in OPTIONAL_ARRAYS:
        assert getattr(back, name) is None


def test_auto_detection_reads_the_own_format(tmp_path: Path) -> None:
    path = save_dataset(_full(), tmp_path / "auto.jsonl.gz")
    assert detect_format(path) == "routecast"
    _assert_same(load_dataset(path), _full())


def test_save_overwrites_and_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    target.write_text("old contents\n")
    canonical.save(_full(), target)
    assert canonical.load(target).n_prompts == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def _unserialisable() -> Dataset:
    ds = _full()
    return Dataset(name=ds.name, models=ds.models, ids=ds.ids, prompts=ds.prompts,
                   quality=ds.quality, cost_usd=ds.cost_usd, split=ds.split,
                   meta={"when": object()})


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_failed_save_leaves_the_existing_file_whole(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / f"out{suffix}"
    canonical.save(_full(), target)
    before = target.read_bytes()
    with pytest.raises((TypeError, DataError)):
        canonical.save(_unserialisable(), target)
    assert target.read_bytes() == before
    _assert_same(canonical.load(target), _full())


def test_failed_save_cleans_up_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.jsonl"
    canonical.save(_full(), target)
    with pytest.raises((TypeError, DataError)):
        canonical.save(_unserialisable(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_fractional_token_counts_are_not_silently_changed(tmp_path: Path) -> None:
    tokens = np.array([[2.5, 3.0]])
    try:
        ds = Dataset(name="t", models=("a", "b"), ids=("1",), prompts=("p",),
                     quality=np.array([[0.5, 0.5]]), cost_usd=np.array([[0.1, 0.2]]),
                     split=np.array(["train"]), tokens_out=tokens)
    except DataError:
        return  # refusing non-integral counts up front would be fine too
    back = canonical.load(canonical.save(ds, tmp_path / "t.jsonl"))
    assert back.tokens_out is not None
    np.testing.assert_array_equal(back.tokens_out, tokens)


# -- property: random small datasets round-trip exactly ----------------------------------------

_text = st.text(max_size=12)
_finite = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                       st.floats(allow_nan=False, allow_infinity=False), _text)
_json = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)), max_leaves=8)


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    n = draw(st.integers(1, 4))
    m = draw(st.integers(1, 3))
    models = tuple(draw(st.lists(st.text(min_size=1, max_size=8), min_size=m, max_size=m,
                                 unique=True)))
    ids = tuple(draw(st.lists(_text, min_size=n, max_size=n, unique=True)))

    def matrix(values: st.SearchStrategy[float]) -> np.ndarray[Any, np.dtype[np.float64]]:
        rows = draw(st.lists(st.lists(values, min_size=m, max_size=m), min_size=n, max_size=n))
        return np.array(rows, dtype=np.float64).reshape(n, m)

    optional: dict[str, Any] = {}
    for name in OPTIONAL_ARRAYS:
        if draw(st.booleans()):
            if name.startswith("tokens"):
                values = st.integers(0, 10**7).map(float)
            else:
                values = st.one_of(_finite, st.just(float("nan")))
            optional[name] = matrix(values)
    responses = None
    if draw(st.booleans()):
        cells = draw(st.lists(st.one_of(st.none(), st.text(max_size=20)),
                              min_size=n * m, max_size=n * m))
        responses = np.empty((n, m), dtype=object)
        responses[:] = np.array(cells, dtype=object).reshape(n, m)
    task = None
    if draw(st.booleans()):
        task = tuple(draw(st.lists(_text, min_size=n, max_size=n)))
    return Dataset(
        name=draw(st.text(min_size=1, max_size=10)),
        models=models, ids=ids,
        prompts=tuple(draw(st.lists(st.text(max_size=30), min_size=n, max_size=n))),
        quality=matrix(st.floats(min_value=0.0, max_value=1.0)),
        cost_usd=matrix(_finite),
        split=np.array(draw(st.lists(st.sampled_from(SPLITS), min_size=n, max_size=n))),
        task=task, responses=responses,
        meta=draw(st.dictionaries(_text, _json, max_size=3)),
        **optional,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ds=datasets(), suffix=st.sampled_from([".jsonl", ".jsonl.gz"]))
def test_random_datasets_round_trip_exactly(ds: Dataset, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        back = canonical.load(canonical.save(ds, Path(tmp) / f"prop{suffix}"))
    _assert_same(back, ds)


# -- malformed files -------------------------------------------------------------------------

HEADER: dict[str, Any] = {"format": "routecast-outcomes", "version": 1, "name": "bad",
                          "models": ["a", "b"], "meta": {}}


def _rec(pid: str = "1", **changes: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {"id": pid, "prompt": "p", "split": "train",
                           "outcomes": {"a": {"quality": 0.5, "cost_usd": 0.1},
                                        "b": {"quality": 1.0, "cost_usd": 0.2}}}
    rec.update(changes)
    return rec


def _write(path: Path, *lines: dict[str, Any] | str) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _outcome(**b: Any) -> dict[str, Any]:
    return {"a": {"quality": 0.5, "cost_usd": 0.1}, "b": b}


MALFORMED: list[Any] = [
    pytest.param([_rec()], 1, "first line is not a routecast-outcomes header", id="no-header"),
    pytest.param([{**HEADER, "version": 2}, _rec()], 1, "unsupported version 2", id="version"),
    pytest.param([HEADER, _rec(), '{"id": "2", "prompt": '], 3, "invalid JSON",
                 id="invalid-json"),
    pytest.param([HEADER, _rec(outcomes={"a": {"quality": 0.5, "cost_usd": 0.1}})], 2,
                 r"missing \['b'\]", id="missing-outcome"),
    pytest.param([HEADER, _rec(), _rec("2", outcomes={**_outcome(quality=1.0, cost_usd=0.0),
                                                      "z": {"quality": 1, "cost_usd": 0}})],
                 3, r"unknown \['z'\]", id="unknown-model"),
    pytest.param([HEADER, _rec("1"), _rec("2"), _rec("1")], 4,
                 r"duplicate id '1' \(first on line 2\)", id="duplicate-id"),
    pytest.param([HEADER, _rec(outcomes=_outcome(quality=1.5, cost_usd=0.2))], 2,
                 r"'b' quality 1\.5 is outside \[0, 1\]", id="quality-1.5"),
    pytest.param([HEADER, _rec(outcomes=_outcome(quality="0.5", cost_usd=0.2))], 2,
                 r"'b' quality must be a number, got '0\.5'", id="quality-string"),
    pytest.param([HEADER, _rec(), '{"id": "2", "prompt": "p", "split": "test", "outcomes": '
                  '{"a": {"quality": 0, "cost_usd": NaN}, "b": {"quality": 0, "cost_usd": 0}}}'],
                 3, r"'a' cost_usd is nan", id="cost-nan"),
    pytest.param([HEADER, _rec(), _rec("2", split="dev")], 3, "split 'dev' is not one of",
                 id="split-dev"),
    pytest.param([HEADER,
                  _rec("1", outcomes={"a": {"quality": 0, "cost_usd": 0, "latency_s": 1.0},
                                      "b": {"quality": 0, "cost_usd": 0, "latency_s": 2.0}}),
                  _rec("2")], 3, "field 'latency_s' is missing here but present in earlier",
                 id="latency-dropped"),
    pytest.param([HEADER, _rec("1"),
                  _rec("2", outcomes={"a": {"quality": 0, "cost_usd": 0, "latency_s": 1.0},
                                      "b": {"quality": 0, "cost_usd": 0, "latency_s": 2.0}})],
                 3, "field 'latency_s' is present here but missing in earlier",
                 id="latency-added"),
    pytest.param([HEADER, _rec("1", task="x"), _rec("2")], 3, "field 'task' is missing",
                 id="task-dropped"),
    pytest.param([HEADER, _rec(prompt=7)], 2, "field 'prompt' is missing or not a str",
                 id="prompt-not-text"),
    pytest.param([HEADER, "[1, 2]"], 2, "not a JSON object", id="not-an-object"),
    pytest.param([{**HEADER, "models": ["a", "a"]}, _rec()], 1, "lists a model twice",
                 id="header-duplicate-model"),
]


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
@pytest.mark.parametrize(("lines", "lineno", "expected"), MALFORMED)
def test_malformed_file_names_path_and_line(tmp_path: Path, suffix: str,
                                            lines: list[dict[str, Any] | str], lineno: int,
                                            expected: str) -> None:
    path = _write(tmp_path / f"bad{suffix}", *lines)
    with pytest.raises(DataFormatError, match=expected) as err:
        canonical.load(path)
    assert f"{path}:{lineno}: " in str(err.value)


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    path = _write(tmp_path / "blank.jsonl", HEADER, "", _rec("1"), "   ",
                  _rec("2", split="dev"))
    with pytest.raises(DataFormatError, match="split 'dev'") as err:
        canonical.load(path)
    assert f"{path}:5: " in str(err.value)
    ok = _write(tmp_path / "ok.jsonl", HEADER, "", _rec("1"), "", _rec("2"))
    assert canonical.load(ok).ids == ("1", "2")


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(DataFormatError, match="is empty") as err:
        canonical.load(path)
    assert str(path) in str(err.value)
    assert "Fix:" in str(err.value)


def test_header_without_prompts(tmp_path: Path) -> None:
    path = _write(tmp_path / "head.jsonl", HEADER)
    with pytest.raises(DataFormatError, match="has a header but no prompts") as err:
        canonical.load(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file") as err:
        canonical.load(tmp_path / "nowhere.jsonl")
    assert "nowhere.jsonl" in str(err.value)


def _non_utf8(tmp_path: Path) -> Path:
    path = tmp_path / "latin.jsonl"
    good = (json.dumps(HEADER) + "\n" + json.dumps(_rec("1")) + "\n").encode("utf-8")
    bad = json.dumps(_rec("2", prompt="caf\u00e9"), ensure_ascii=False).encode("latin-1")
    assert b"\xe9" in bad  # a byte that is not valid UTF-8 here
    path.write_bytes(good + bad + b"\n")
    return path


def test_non_utf8_bytes_name_the_file(tmp_path: Path) -> None:
    path = _non_utf8(tmp_path)
    with pytest.raises(DataFormatError, match="is not UTF-8") as err:
        canonical.load(path)
    assert str(path) in str(err.value)
    assert "Fix:" in str(err.value)


def test_non_utf8_bytes_name_the_line(tmp_path: Path) -> None:
    path = _non_utf8(tmp_path)
    with pytest.raises(DataFormatError) as err:
        canonical.load(path)
    assert f"{path}:3" in str(err.value)


def _truncated(tmp_path: Path) -> Path:
    path = tmp_path / "cut.jsonl.gz"
    _write(path, HEADER, *[_rec(str(i), prompt=f"prompt {i} " * 20) for i in range(400)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = _truncated(tmp_path)
    with pytest.raises(DataFormatError, match="cannot be read") as err:
        canonical.load(path)
    assert str(path) in str(err.value)


def test_truncated_gzip_names_a_line(tmp_path: Path) -> None:
    path = _truncated(tmp_path)
    with pytest.raises(DataFormatError) as err:
        canonical.load(path)
    assert str(err.value).startswith(f"{path}:")
    assert str(err.value)[len(f"{path}:")].isdigit()


def test_gz_suffix_on_a_plain_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl.gz"
    path.write_text(json.dumps(HEADER) + "\n")
    with pytest.raises(DataFormatError, match="cannot be read") as err:
        canonical.load(path)
    assert str(path) in str(err.value)


# -- is_canonical ----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz"])
def test_is_canonical_true_for_saved_files(tmp_path: Path, suffix: str) -> None:
    assert canonical.is_canonical(canonical.save(_full(), tmp_path / f"x{suffix}"))
    # the header alone decides: a file with bad records is still in this format
    assert canonical.is_canonical(_write(tmp_path / f"y{suffix}", HEADER, "{broken"))


@pytest.mark.parametrize(("name", "content"), [
    ("empty.jsonl", b""),
    ("other.jsonl", b'{"format": "something-else", "version": 1}\n'),
    ("list.jsonl", b'["routecast-outcomes"]\n'),
    ("text.jsonl", b"hello world\n"),
    ("table.csv", b"sample_id,prompt\n1,hi\n"),
    ("latin.jsonl", b'{"format": "caf\xe9"}\n'),
    ("fake.jsonl.gz", b'{"format": "routecast-outcomes", "version": 1}\n'),
    ("junk.jsonl.gz", b"\x1f\x8b\x08\x00garbage"),
])
def test_is_canonical_false(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert not canonical.is_canonical(path)


def test_is_canonical_false_for_folders_and_missing_paths(tmp_path: Path) -> None:
    assert not canonical.is_canonical(tmp_path)
    assert not canonical.is_canonical(tmp_path / "missing.jsonl")
