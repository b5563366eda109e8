"""Adapters: list them (which one is active), show one, make one the default of /generate,
delete one."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import from_thread
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from app.deps import AuthDep, DatabaseDep, SessionDep, SettingsDep
from app.downloads import ZIP_RESPONSE, zip_response
from app.errors import without_data_dir
from app.schemas import AdapterPublic, AdaptersPublic
from app.serving import GeneratorDep, notify_active_changed
from ttalkkac import retention
from ttalkkac.adapters import BASE, ref_from_row, same_base_model
from ttalkkac.errors import InvalidInput, NotFound
from ttalkkac.evaluation.commands import check_better_than_active
from ttalkkac.export import adapter_export
from ttalkkac.inference.service import PlanGenerator
from ttalkkac.settings import Settings
from ttalkkac.store import crud

router = APIRouter(prefix="/adapters", tags=["adapters"], dependencies=[AuthDep])


def _public(row: Any, generator: PlanGenerator, settings: Settings) -> AdapterPublic:
    adapter = AdapterPublic.of(row, settings.data_dir)
    adapter.compatible = same_base_model(row.base_model, generator.engine.base_model)
    adapter.loaded = row.name in generator.engine.loaded_adapters()
    adapter.evaluation = (row.metrics or {}).get("evaluation")
    return adapter


def _listing(session: Any, generator: PlanGenerator, settings: Settings) -> AdaptersPublic:
    rows = crud.list_adapters(session)
    active = next((row.name for row in rows if row.is_active), None)
    return AdaptersPublic(
        data=[_public(row, generator, settings) for row in rows],
        count=len(rows),
        active=active,
        base_model=without_data_dir(generator.engine.base_model, str(settings.data_dir)),
    )


@router.get("", response_model=AdaptersPublic, summary="List adapters (newest first)")
def list_adapters(
    session: SessionDep, settings: SettingsDep, generator: GeneratorDep
) -> AdaptersPublic:
    return _listing(session, generator, settings)


@router.get(
    "/{name}",
    response_model=AdapterPublic,
    responses={404: {"description": "Unknown adapter."}},
    summary="Show one adapter",
)
def get_adapter(
    name: str, session: SessionDep, settings: SettingsDep, generator: GeneratorDep
) -> AdapterPublic:
    row = crud.get_adapter(session, name=name)
    if row is None:
        raise NotFound(f"no adapter named {name!r}")
    return _public(row, generator, settings)


@router.get(
    "/{name}/download",
    response_class=StreamingResponse,
    responses=ZIP_RESPONSE,
    summary="Download an adapter (safetensors + config), or its merged model",
    description="The adapter's `adapter_model.safetensors`, `adapter_config.json` and README: "
    "load it with PEFT (`PeftModel.from_pretrained(base, folder)`) or vLLM's LoRA support. "
    "`merged=true`: the base model with this adapter merged in (safetensors, configs, "
    "tokenizer), if merged serving has built that copy from the adapter's current weights "
    "(404 otherwise).",
)
def download_adapter(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    merged: Annotated[
        bool, Query(description="The merged model copy instead of the adapter.")
    ] = False,
) -> StreamingResponse:
    row = crud.get_adapter(session, name=name)
    if row is None:
        raise NotFound(f"no adapter named {name!r}")
    return zip_response(adapter_export(row, settings, merged=merged))


@router.post(
    "/{name}/activate",
    response_model=AdapterPublic,
    responses={
        404: {"description": "Unknown adapter."},
        409: {
            "description": "The adapter was trained on another base model, or (with "
            "`require_better=true`) it scores below the active adapter on the same data."
        },
        422: {"description": "The adapter's files are unusable (missing, not safetensors)."},
    },
    summary="Make an adapter the default of /generate",
    description="The adapter serves default requests at once. In merged serving mode the engine "
    "then switches to weights with this adapter merged in, in the background: requests keep "
    "being answered (with this adapter) during the switch, and `GET /ready` shows "
    "`merged_adapter` equal to its name once the fast path serves it. With "
    "`require_better=true` the adapter is activated only if its latest evaluation's mean field "
    "chrF is at least that of the active adapter (the base model when none is active) "
    "evaluated on the same data; 409 with both scores otherwise.",
)
def activate_adapter(
    name: str,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    generator: GeneratorDep,
    require_better: Annotated[
        bool,
        Query(description="Refuse (409) unless it scores at least the active adapter."),
    ] = False,
) -> AdapterPublic:
    if name == BASE:
        raise InvalidInput(
            f"{BASE!r} is the base model, not an adapter: DELETE /adapters/active to serve "
            "the base model by default"
        )
    row = crud.get_adapter(session, name=name)
    if row is None:
        raise NotFound(f"no adapter named {name!r}")
    # Refuse now what every default request would otherwise fail on.
    ref = ref_from_row(row, settings, generator.engine.base_model)
    if require_better:
        check_better_than_active(session, name=name)
    public = _public(crud.activate_adapter(session, name=name), generator, settings)
    session.commit()  # before the engine switch starts: it reads the registry too
    from_thread.run_sync(notify_active_changed, request, ref)
    return public


@router.delete(
    "/active",
    response_model=AdaptersPublic,
    summary="Deactivate the active adapter: /generate then defaults to the base model",
)
def deactivate(
    request: Request, session: SessionDep, settings: SettingsDep, generator: GeneratorDep
) -> AdaptersPublic:
    crud.deactivate_adapters(session)
    session.commit()
    from_thread.run_sync(notify_active_changed, request, None)
    return _listing(session, generator, settings)


# Declared after DELETE /adapters/active, so that "active" keeps meaning the deactivation.
@router.delete(
    "/{name}",
    status_code=204,
    response_class=Response,
    responses={
        404: {"description": "Unknown adapter."},
        409: {
            "description": "It is the active adapter, or a queued or running evaluation scores it."
        },
    },
    summary="Delete an adapter and its files",
    description="Unregisters the adapter and removes its merged copy and its folder, unless the "
    "folder is its training job's (removed with `DELETE /train/{id}`, allowed once the adapter "
    "is gone). Evaluations of it are kept. Deactivate it or activate another first if it is "
    "the active one.",
)
def delete_adapter(name: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    retention.delete_adapter(db, settings, name=name)
    return Response(status_code=204)
