"""Streaming a zip that ``ttalkkac.export`` prepared, as a download."""

from __future__ import annotations

from fastapi.responses import StreamingResponse

from ttalkkac.export import Export, stream_zip

ZIP_RESPONSE = {
    200: {"content": {"application/zip": {}}, "description": "A zip, streamed."},
    404: {"description": "Nothing to download."},
    413: {"description": "Larger than DOWNLOAD_MAX_BYTES."},
}


def zip_response(export: Export) -> StreamingResponse:
    # The length of a streamed zip is known only at its end: no Content-Length; the total of
    # the files inside is given instead, for a progress bar.
    return StreamingResponse(
        stream_zip(export.files),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{export.filename}"',
            "Cache-Control": "no-store",
            "X-Uncompressed-Bytes": str(export.size),
        },
    )
