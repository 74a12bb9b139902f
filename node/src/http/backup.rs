//! Owns `GET /`: a consistent copy of the database streamed as a file download — after the
//! node has applied the request's `X-Ha-Min-Seq` / `min_seq`, when it names one.
//! Must not hold the copy in memory: it goes to a temporary file next to the database (or the
//! system temp dir for memory databases) that is unlinked as soon as it is open.
//! Invariant: at most `--max-concurrent-backups` downloads run at once (their temporary files
//! hold disk until the client has read them); more get 429 at once.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::{ApiError, AppState, consistency};

#[utoipa::path(
    get,
    path = "/",
    operation_id = "backup",
    tag = "backup",
    params(
        ("min_seq" = Option<u64>, Query, description = "Read-your-writes: first wait until this node has applied this stream sequence (as `X-Ha-Min-Seq`)"),
        ("min_seq_timeout" = Option<String>, Query, description = "How long to wait for `min_seq` (default 5s; as `X-Ha-Min-Seq-Timeout-Ms`)"),
        ("X-Ha-Min-Seq" = Option<u64>, Header, description = "Read-your-writes: the copy holds at least this stream sequence (a write's `X-Ha-Seq`, from any node)"),
        ("X-Ha-Min-Seq-Timeout-Ms" = Option<u64>, Header, description = "How long to wait for `X-Ha-Min-Seq`, in milliseconds (default 5000, at most `--query-timeout`)"),
    ),
    responses(
        (status = 200, description = "A consistent copy of the database (an SQLite file)", content_type = "application/octet-stream",
         headers(("Content-Disposition" = String, description = "attachment; filename=\"<UTC YYYY-MM-DD HH:MM:SS>_<db file name>\""))),
        (status = 400, description = "A malformed `min_seq` (`bad_request`)", body = super::schema::ErrorBody),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 429, description = "`--max-concurrent-backups` downloads run already (`too_many_backups`)", body = super::schema::ErrorBody),
        (status = 500, description = "The copy failed (`internal`)", body = super::schema::ErrorBody),
        (status = 504, description = "The node did not apply `min_seq` in time (`seq_not_reached`, the message names the sequence reached)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    // Waited for before taking a place: a waiting request holds no temporary file.
    let min_seq = consistency::min_seq(&headers, query.as_deref(), state.exec.query_timeout())
        .map_err(ApiError::bad_request)?;
    if let Some(m) = min_seq {
        state.exec.wait_applied(m.seq, m.wait).await?;
    }
    let Ok(permit) = state.backups.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "too_many_backups",
            "too many backup downloads at once (--max-concurrent-backups); try again later",
        ));
    };
    let target = state.exec.target();
    let dir = target.scratch_dir();
    let tmp = tempfile::Builder::new()
        .prefix(".ha-backup-")
        .suffix(".db")
        .tempfile_in(&dir)
        .map_err(|e| {
            internal(format!(
                "cannot create a temporary file in {}: {e}",
                dir.display()
            ))
        })?
        .into_temp_path();
    state.exec.backup_to(tmp.to_path_buf()).await?;
    let file = tokio::fs::File::open(&tmp)
        .await
        .map_err(|e| internal(format!("cannot read the backup: {e}")))?;
    let len = file
        .metadata()
        .await
        .map_err(|e| internal(format!("cannot read the backup: {e}")))?
        .len();
    // The open file handle keeps the data; the name can go now.
    drop(tmp);
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute]:[second]"
        ))
        .unwrap_or_default();
    let disposition = format!("attachment; filename=\"{stamp}_{}\"", target.file_name());
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        // The place is held until the whole file has been sent (or the client is gone).
        Body::from_stream(futures::StreamExt::map(
            ReaderStream::new(file),
            move |chunk| {
                let _held = &permit;
                chunk
            },
        )),
    )
        .into_response())
}

fn internal(message: String) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        message,
    )
}
