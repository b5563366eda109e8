"""Streamed zips of managed folders: the files chosen, nothing outside, bounded, valid zips."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from ttalkkac.errors import InvalidInput, NotFound, PayloadTooLarge
from ttalkkac.export import adapter_export, collect, stream_zip, tensorboard_export
from ttalkkac.settings import Settings


def unzip(files) -> zipfile.ZipFile:
    return zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(files))))


def adapter_folder(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_model.safetensors").write_bytes(b"\x00weights" * 1000)
    (root / "adapter_config.json").write_text(json.dumps({"r": 8, "peft_type": "LORA"}))
    (root / "README.md").write_text("card")
    (root / "adapter_model.bin").write_bytes(b"pickle")
    (root / "optimizer.pt").write_bytes(b"pickle")
    return root


def row(name: str, path: Path) -> SimpleNamespace:
    return SimpleNamespace(name=name, path=str(path), base_model="/models/base", rank=8)


def test_adapter_zip_holds_weights_config_and_readme_only(settings: Settings) -> None:
    folder = adapter_folder(settings.data_dir / "jobs" / "job_1")
    (folder / "link.json").symlink_to("/etc/hostname")
    export = adapter_export(row("ad/1", folder), settings)
    assert export.filename == "ad-1.zip"
    archive = unzip(export.files)
    assert sorted(archive.namelist()) == [
        "README.md",
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    assert archive.testzip() is None
    assert archive.read("adapter_model.safetensors") == b"\x00weights" * 1000
    info = archive.getinfo("adapter_model.safetensors")
    assert info.compress_type == zipfile.ZIP_STORED
    assert export.size == sum(f.size for f in export.files)


def test_adapter_outside_the_data_folder_or_incomplete_is_refused(
    settings: Settings, tmp_path: Path
) -> None:
    outside = adapter_folder(tmp_path / "elsewhere")
    with pytest.raises(InvalidInput, match="outside the managed data folder"):
        adapter_export(row("x", outside), settings)
    inside = settings.data_dir / "jobs" / "job_2"
    inside.mkdir(parents=True)
    (inside / "adapter_config.json").write_text("{}")
    with pytest.raises(InvalidInput, match=r"adapter_model\.safetensors"):
        adapter_export(row("x", inside), settings)


def test_a_symlinked_folder_into_elsewhere_is_refused(settings: Settings, tmp_path: Path) -> None:
    outside = adapter_folder(tmp_path / "elsewhere")
    link = settings.data_dir / "jobs" / "job_3"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)
    with pytest.raises(InvalidInput, match="outside"):
        adapter_export(row("x", link), settings)


def test_merged_download_needs_a_current_merged_copy(settings: Settings) -> None:
    folder = adapter_folder(settings.data_dir / "jobs" / "job_4")
    with pytest.raises(NotFound, match="no merged copy"):
        adapter_export(row("x", folder), settings, merged=True)
    merged = folder.with_name("job_4.merged")
    merged.mkdir()
    (merged / "ttalkkac-merge.json").write_text(json.dumps({"adapter_sha256": "0" * 64}))
    with pytest.raises(NotFound, match="older weights"):
        adapter_export(row("x", folder), settings, merged=True)


def test_the_limit_is_checked_before_anything_is_sent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", download_max_bytes=4096)
    folder = adapter_folder(settings.data_dir / "jobs" / "job_5")  # 8,000 bytes of weights
    with pytest.raises(PayloadTooLarge, match="DOWNLOAD_MAX_BYTES"):
        adapter_export(row("x", folder), settings)


def test_tensorboard_zip_takes_event_files_of_every_subfolder(settings: Settings) -> None:
    job = settings.jobs_dir / "job_6"
    with pytest.raises(NotFound, match="report_to"):
        tensorboard_export("job_6", job, settings)
    (job / "tensorboard" / "run2").mkdir(parents=True)
    (job / "tensorboard" / "events.out.tfevents.1.host").write_bytes(b"a" * 10)
    (job / "tensorboard" / "run2" / "events.out.tfevents.2.host").write_bytes(b"b" * 10)
    (job / "tensorboard" / "other.txt").write_text("no")
    export = tensorboard_export("job_6", job, settings)
    assert export.filename == "job_6-tensorboard.zip"
    assert sorted(unzip(export.files).namelist()) == [
        "events.out.tfevents.1.host",
        "run2/events.out.tfevents.2.host",
    ]


def test_a_file_that_grows_while_zipped_is_sent_at_its_measured_size(settings: Settings) -> None:
    folder = settings.data_dir / "grow"
    folder.mkdir()
    (folder / "events.out.tfevents.1").write_bytes(b"x" * 100)
    files = collect(folder, settings=settings, allowed=lambda p: True)
    (folder / "events.out.tfevents.1").write_bytes(b"x" * 5000)
    assert unzip(files).read("events.out.tfevents.1") == b"x" * 100


def test_large_files_stream_in_blocks(settings: Settings) -> None:
    folder = settings.data_dir / "big"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x01" * (3 * (1 << 20) + 7))
    files = collect(folder, settings=settings, allowed=lambda p: True)
    blocks = [b for b in stream_zip(files) if b]
    assert len(blocks) >= 3 and max(len(b) for b in blocks) <= (1 << 20) + 1024
    archive = zipfile.ZipFile(io.BytesIO(b"".join(blocks)))
    assert archive.read("model.safetensors") == b"\x01" * (3 * (1 << 20) + 7)
