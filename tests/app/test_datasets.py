"""``/datasets``: uploads validated and stored; anything unsafe or unusable refused, nothing kept."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.utils.training_data import chat_jsonl, tiny_gold_zip, write_tiny_gold, zip_dir


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    from app.main import create_app
    from ttalkkac.settings import Settings

    settings = Settings(
        data_dir=tmp_path / "data",
        serving_enabled=False,
        warmup=False,
        max_upload_bytes=200_000,
        max_dataset_files=50,
        max_dataset_unpacked_bytes=1_000_000,
    )
    with TestClient(create_app(settings)) as c:
        c.datasets_dir = settings.datasets_dir  # type: ignore[attr-defined]
        yield c


def leftovers(client: TestClient) -> list[Path]:
    return list(client.datasets_dir.iterdir())  # type: ignore[attr-defined]


def post(client: TestClient, data: bytes, filename: str = "upload.zip"):
    return client.post("/datasets", files={"file": (filename, data)})


def zip_bytes(entries: dict[str, bytes], *, symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_gold_zip_is_stored_with_loader_statistics(client: TestClient, tmp_path: Path) -> None:
    archive = tiny_gold_zip(tmp_path, n=5, score=6.0)
    response = post(client, archive.read_bytes(), "gold.zip")
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["kind"] == "gold" and body["records"] == 5 and body["name"] == "gold"
    loader = body["stats"]["loader"]
    assert loader["usable"] == 5 and loader["scores"] == {"6.0": 5}
    stored = client.datasets_dir / body["id"]  # type: ignore[attr-defined]
    assert (stored / body["stats"]["layout"]["results_dir"]).is_dir()
    assert client.get(f"/datasets/{body['id']}").json() == body
    listing = client.get("/datasets").json()
    assert listing["count"] == 1 and listing["data"][0]["id"] == body["id"]


def test_chat_jsonl_upload(client: TestClient, tmp_path: Path) -> None:
    path = chat_jsonl(tmp_path / "data.jsonl", n=4)
    response = post(client, path.read_bytes(), "data.jsonl")
    assert response.status_code == 201, response.text
    assert response.json()["kind"] == "chat_jsonl" and response.json()["records"] == 4


def test_unknown_dataset_is_404(client: TestClient) -> None:
    response = client.get("/datasets/ds_missing")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("entries", "symlink", "needle"),
    [
        ({"gold/../../evil.txt": b"x"}, None, "escapes"),
        ({"/etc/cron.d/evil": b"x"}, None, "absolute"),
        ({"C:/evil.txt": b"x"}, None, "absolute"),
        ({"gold\\..\\..\\evil.txt": b"x"}, None, "escapes"),
        ({"gold/a.txt": b"x"}, "gold/link", "symbolic link"),
    ],
)
def test_entries_escaping_the_folder_are_refused(
    client: TestClient, tmp_path: Path, entries: dict, symlink: str | None, needle: str
) -> None:
    response = post(client, zip_bytes(entries, symlink=symlink))
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]
    assert leftovers(client) == []
    assert not (tmp_path / "evil.txt").exists()


def test_zip_bombs_are_bounded(client: TestClient) -> None:
    many = zip_bytes({f"gold/f{i}.txt": b"x" for i in range(51)})
    response = post(client, many)
    assert response.status_code == 413 and "entries" in response.json()["error"]["message"]
    # 2 MB of zeros compresses to a few KB: refused on the declared size.
    big = zip_bytes({"gold/zeros.bin": b"\0" * 2_000_000})
    assert len(big) < 20_000
    response = post(client, big)
    assert response.status_code == 413 and "unpacks" in response.json()["error"]["message"]
    assert leftovers(client) == []


def test_zip_bomb_with_a_lying_header_stops_while_inflating(client: TestClient) -> None:
    data = bytearray(zip_bytes({"gold/zeros.bin": b"\0" * 2_000_000}))
    # Rewrite the declared uncompressed size (local header and central directory) to 10 bytes.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.find(signature)
        data[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
    response = post(client, bytes(data))
    # zipfile reads no more than the declared size, so the CRC check fails: corrupt, refused.
    assert response.status_code == 422, response.text
    assert "corrupt zip" in response.json()["error"]["message"]
    assert leftovers(client) == []


def test_upload_size_limit(client: TestClient) -> None:
    response = post(client, b"{" + b" " * 300_000, "big.jsonl")
    assert response.status_code == 413
    assert leftovers(client) == []


@pytest.mark.parametrize(
    ("data", "filename", "needle"),
    [
        (b"\x00\x01 not a dataset", "x.bin", "upload a .zip"),
        (zip_bytes({"readme.txt": b"hello"}), "x.zip", "results folder"),
        (b'{"messages": []}\n', "x.jsonl", "no usable lines"),
    ],
)
def test_unusable_uploads_are_422(
    client: TestClient, data: bytes, filename: str, needle: str
) -> None:
    response = post(client, data, filename)
    assert response.status_code == 422, response.text
    assert needle in response.json()["error"]["message"]
    assert leftovers(client) == []


def raw_zip(names: list[str], *, utf8_flag_on_bytes: bytes | None = None) -> bytes:
    """A zip with entries named exactly ``names`` (a trailing "/" makes a folder entry)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name in names:
            zf.writestr(zipfile.ZipInfo(name), b"" if name.endswith("/") else b"x")
    data = buffer.getvalue()
    if utf8_flag_on_bytes is not None:
        # Replace the (ASCII) name in both headers with bytes that are not UTF-8, flag kept on.
        placeholder = names[0].encode()
        assert len(placeholder) == len(utf8_flag_on_bytes)
        data = data.replace(placeholder, utf8_flag_on_bytes)
        for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            at = data.find(signature) + offset
            flags = int.from_bytes(data[at : at + 2], "little") | 0x800
            data = data[:at] + flags.to_bytes(2, "little") + data[at + 2 :]
    return data


@pytest.mark.parametrize(
    ("names", "needle"),
    [
        (["."], "no file name"),
        (["gold/a", "gold/a/b"], "conflict"),
        (["gold/a/b", "gold/a"], "conflict"),
        (["gold/a", "gold/a/"], "conflict"),
        (["gold\\", "gold"], "conflict"),  # a Windows folder entry, then a file of that name
        (["gold/" + "x" * 256], "over 255 bytes"),
        (["gold/" + "가" * 86], "over 255 bytes"),  # 258 bytes in UTF-8, 86 characters
        (["/".join(["d" * 200] * 6)], "over 1024 bytes"),
    ],
)
def test_zip_layouts_that_cannot_be_written_are_422(
    client: TestClient, names: list[str], needle: str
) -> None:
    response = post(client, raw_zip(names))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and needle in error["message"]
    assert leftovers(client) == []


def test_zip_name_flagged_utf8_that_is_not_is_422(client: TestClient) -> None:
    response = post(client, raw_zip(["gold/ab"], utf8_flag_on_bytes=b"gold/\xff\xfe"))
    assert response.status_code == 422, response.text
    assert "not a valid zip" in response.json()["error"]["message"]
    assert leftovers(client) == []


def test_folder_entries_and_dot_folders_still_unpack(client: TestClient, tmp_path: Path) -> None:
    archive = tiny_gold_zip(tmp_path, n=3)
    with zipfile.ZipFile(archive, "a") as zf:  # explicit folder entries, "./" and "gold/./"
        zf.writestr(zipfile.ZipInfo("./"), b"")
        zf.writestr(zipfile.ZipInfo("gold/"), b"")
        zf.writestr(zipfile.ZipInfo("gold/./extra/"), b"")
    response = post(client, archive.read_bytes(), "gold.zip")
    assert response.status_code == 201, response.text
    assert response.json()["records"] == 3


def test_jsonl_with_deep_and_non_unicode_lines_counts_them(
    client: TestClient, tmp_path: Path
) -> None:
    good = chat_jsonl(tmp_path / "good.jsonl", n=2).read_bytes()
    deep = b"[" * 50_000 + b"]" * 50_000  # far past the recursion limit, within the upload one
    surrogate = b'{"messages": [{"role": "user", "content": "\\ud800"}]}'
    response = post(client, deep + b"\n" + surrogate + b"\n" + good, "data.jsonl")
    assert response.status_code == 201, response.text
    loader = response.json()["stats"]["loader"]
    assert loader["records"] == 2
    assert loader["skipped"] == {"bad_json": 1, "invalid_unicode": 1}


def test_offset_past_sqlite_integers_is_422(client: TestClient) -> None:
    for offset in (2**63, 2**31):
        response = client.get("/datasets", params={"offset": offset})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["detail"][0]["field"] == "query.offset"
    assert client.get("/datasets", params={"offset": 2**31 - 1}).json()["data"] == []


def test_answers_hold_no_server_paths(client: TestClient, tmp_path: Path) -> None:
    server_root = str(client.datasets_dir.parent)  # type: ignore[attr-defined]
    response = post(client, tiny_gold_zip(tmp_path, n=3).read_bytes(), "gold.zip")
    assert response.status_code == 201, response.text
    assert server_root not in response.text
    stats = response.json()["stats"]
    assert stats["loader"]["results_dir"] == stats["layout"]["results_dir"]
    assert stats["loader"]["results_dir"].startswith("files/")
    for page in (f"/datasets/{response.json()['id']}", "/datasets"):
        assert server_root not in client.get(page).text

    # A gold zip whose every record is unusable: the 422's detail is the loader's stats.
    write_tiny_gold(tmp_path / "bad", 2)
    for result in (tmp_path / "bad").rglob("result.json"):
        result.write_text("{not json")
    response = post(client, zip_dir(tmp_path / "bad", tmp_path / "bad.zip").read_bytes())
    assert response.status_code == 422, response.text
    assert response.json()["error"]["detail"]["skipped"] == {"bad_json": 2}
    assert server_root not in response.text


def test_rows_stored_with_server_paths_are_answered_without(client: TestClient) -> None:
    from ttalkkac.store import crud
    from ttalkkac.store.db import Database

    settings = client.app.state.settings  # type: ignore[attr-defined]
    final = settings.datasets_dir / "ds_old"
    staging = settings.datasets_dir / ".incoming-ds_old"
    db = Database(settings.resolved_database_url)
    with db.session() as session:
        crud.create_dataset(
            session,
            id="ds_old",
            name="old",
            kind="gold",
            path=str(final),
            size_bytes=1,
            stats={"records": 1, "loader": {"results_dir": f"{staging}/files/gold/results"}},
        )
    db.dispose()
    body = client.get("/datasets/ds_old").json()
    assert body["stats"]["loader"]["results_dir"] == "files/gold/results"
