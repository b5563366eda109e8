"""``/datasets``: upload (zip of the gold layout or chat JSONL), list, read, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request, Response, UploadFile

from app.deps import AuthDep, DatabaseDep, OffsetQuery, SessionDep, SettingsDep
from app.heavy import run_heavy
from app.schemas import DatasetPublic, DatasetsPublic
from ttalkkac import datasets, retention
from ttalkkac.errors import NotFound
from ttalkkac.store import crud

router = APIRouter(prefix="/datasets", tags=["datasets"], dependencies=[AuthDep])


@router.post("", status_code=201, response_model=DatasetPublic)
async def upload_dataset(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    file: UploadFile,
    name: Annotated[str | None, Form(max_length=200)] = None,
) -> DatasetPublic:
    """Upload a zip (results folder + meetings folder) or a chat-message ``.jsonl``.

    Checked before it is kept: size limits (the whole body by app.guard before it is read,
    the file again while it is copied), zip entries that escape the folder, and the data
    loader's validation. Answered with the loader's statistics.
    """
    dataset = await run_heavy(
        request,
        datasets.ingest_upload,
        settings,
        session,
        stream=file.file,
        filename=file.filename or "upload",
        name=name,
    )
    return DatasetPublic.from_row(dataset)


@router.get("", response_model=DatasetsPublic)
def list_datasets(
    session: SessionDep,
    offset: OffsetQuery = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> DatasetsPublic:
    """Newest first."""
    rows, count = crud.list_datasets(session, offset=offset, limit=limit)
    return DatasetsPublic(data=[DatasetPublic.from_row(r) for r in rows], count=count)


@router.get("/{dataset_id}", response_model=DatasetPublic)
def get_dataset(dataset_id: str, session: SessionDep) -> DatasetPublic:
    row = crud.get_dataset(session, id=dataset_id)
    if row is None:
        raise NotFound(f"no dataset with id {dataset_id!r}")
    return DatasetPublic.from_row(row)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"description": "Unknown dataset."},
        409: {"description": "A queued or running training job or evaluation uses it."},
    },
)
def delete_dataset(dataset_id: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Delete the dataset and its files. Ended jobs and evaluations that used it are kept (their
    `dataset_id` then names a deleted dataset)."""
    retention.delete_dataset(db, settings, id=dataset_id)
    return Response(status_code=204)
