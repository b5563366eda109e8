"""Property tests of ``POST /datasets``: generated zip layouts and JSONL lines.

Whatever the upload, the answer is 201, 413 or 422 (never a 500), a refused upload leaves
nothing behind, and nothing is ever written outside the dataset's own folder. Examples are
bounded and derandomized so that CI runs the same ~50 per property in seconds.
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.utils.training_data import chat_jsonl, tiny_gold_zip

PROPERTY = hypothesis_settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ALLOWED = {201, 413, 422}
# The data folder sits this deep in the watched root, deeper than any generated name can climb
# with "..", so an escape would land inside the watched tree.
DEPTH = ("w1", "w2", "w3", "w4", "w5", "w6")


class Sandbox:
    """An app whose data folder is deep inside ``root``; every file under ``root`` is watched."""

    def __init__(self, root: Path) -> None:
        from app.main import create_app
        from ttalkkac.settings import Settings

        self.root = root
        self.settings = Settings(
            data_dir=root.joinpath(*DEPTH, "data"),
            serving_enabled=False,
            warmup=False,
            max_upload_bytes=200_000,
            max_dataset_files=20,  # the tiny gold layout has 14 entries: extras can pass it
            max_dataset_unpacked_bytes=400_000,
        )
        self.app = create_app(self.settings)

    def files(self) -> set[Path]:
        return {p for p in self.root.rglob("*") if not p.is_dir()}

    def check_upload(self, client: TestClient, data: bytes, filename: str) -> None:
        before = self.files()
        response = client.post("/datasets", files={"file": (filename, data)})
        assert response.status_code in ALLOWED, response.text
        event(f"status {response.status_code}")  # pytest --hypothesis-show-statistics
        assert "error" in response.json() or response.status_code == 201
        datasets = self.settings.datasets_dir
        assert not list(datasets.glob(".incoming-*")), "staging folder left behind"
        new = self.files() - before
        if response.status_code == 201:
            kept = datasets / response.json()["id"]
            stray = {p for p in new if not p.is_relative_to(kept) and not _is_store(p)}
        else:
            stray = {p for p in new if not _is_store(p)}
        assert not stray, f"written outside the dataset's folder: {sorted(stray)[:5]}"


def _is_store(path: Path) -> bool:
    return path.name.startswith("ttalkkac.db")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[tuple[Sandbox, TestClient]]:
    box = Sandbox(tmp_path / "watched")
    with TestClient(box.app) as client:
        yield box, client


# --- zip layouts -----------------------------------------------------------------------------

_COMMON_PART = st.sampled_from(
    [
        *("", ".", "..", "gold", "results", "meetings", "a", "b", "result.json"),
        *("train_001_result_M0", "05_final_result.json", "C:", "__MACOSX", "가나다"),
    ]
)
_PART = st.one_of(  # mostly short, ordinary parts, so that layouts collide
    _COMMON_PART,
    _COMMON_PART,
    st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="/\\\x00"),
        min_size=1,
        max_size=12,
    ),
)


@st.composite
def entry_names(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_PART, min_size=1, max_size=5))
    if draw(st.integers(0, 19)) == 0:  # rarely: near NAME_MAX (255 bytes), in 1-3 byte chars
        parts.append(draw(st.sampled_from(["x", "é", "가"])) * draw(st.integers(85, 260)))
    separator = draw(st.sampled_from(["/", "\\"]))
    name = separator.join(parts)
    prefix = draw(st.sampled_from(["", "", "", "/", "\\", "./", "gold/"]))
    suffix = draw(st.sampled_from(["", "", "/", "\\"]))
    return prefix + name + suffix


@st.composite
def zip_uploads(draw: st.DrawFn, gold: bytes) -> bytes:
    """A zip: maybe a real tiny gold layout, plus generated entries, links and damage."""
    buffer = io.BytesIO()
    base = draw(st.booleans())
    if base:
        buffer.write(gold)
    with zipfile.ZipFile(buffer, "a" if base else "w") as zf:
        for name in draw(st.lists(entry_names(), max_size=12)):
            info = zipfile.ZipInfo(name)
            if draw(st.integers(0, 9)) == 0:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, draw(st.binary(max_size=64)))
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "flip"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        at = draw(st.integers(0, len(data) - 1))
        data = data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    return data


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # duplicates are generated
def test_generated_zip_layouts_are_201_413_or_422_and_stay_inside(
    sandbox: tuple[Sandbox, TestClient], tmp_path: Path
) -> None:
    box, client = sandbox
    gold = tiny_gold_zip(tmp_path / "gold", n=3).read_bytes()

    @PROPERTY
    @given(data=zip_uploads(gold))
    def upload(data: bytes) -> None:
        box.check_upload(client, data, "upload.zip")

    upload()


# --- JSONL lines -----------------------------------------------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def jsonl_lines(draw: st.DrawFn, good: list[str]) -> str:
    kind = draw(
        st.sampled_from(["good", "json", "deep", "surrogate", "broken", "messages", "blank"])
    )
    if kind == "good":
        return draw(st.sampled_from(good))
    if kind == "json":
        return json.dumps(draw(_JSON))
    if kind == "deep":
        n = draw(st.integers(500, 60_000))
        return draw(st.sampled_from(["[", '{"a":'])) * n
    if kind == "surrogate":
        line = draw(st.sampled_from(good))
        escape = draw(st.sampled_from(["\\ud800", "\\udfff", "\\ud83d"]))
        at = line.index('"content": "') + len('"content": "')
        return line[:at] + escape + line[at:]
    if kind == "broken":
        return draw(st.text(max_size=40))
    if kind == "messages":
        role = st.sampled_from(["user", "assistant", "system", 3, None])
        message = st.fixed_dictionaries({"role": role, "content": _JSON})
        return json.dumps({"messages": draw(st.lists(message, max_size=4))})
    return ""


def test_generated_jsonl_uploads_are_201_413_or_422_and_stay_inside(
    sandbox: tuple[Sandbox, TestClient], tmp_path: Path
) -> None:
    box, client = sandbox
    good = chat_jsonl(tmp_path / "good.jsonl", n=3).read_text(encoding="utf-8").splitlines()

    @PROPERTY
    @given(
        lines=st.lists(jsonl_lines(good), min_size=1, max_size=8),
        tail=st.sampled_from([b"", b"\n", b"\xff\xfe not utf-8\n"]),
    )
    def upload(lines: list[str], tail: bytes) -> None:
        data = "\n".join(lines).encode("utf-8", "surrogatepass") + tail
        box.check_upload(client, data, "upload.jsonl")

    upload()
