//! Owns `GET /`: a consistent copy of the database streamed as a file download.
//! Must not hold the copy in memory: it goes to a temporary file next to the database (or the
//! system temp dir for memory databases) that is unlinked as soon as it is open.
//! Invariant: at most `--max-concurrent-backups` downloads run at once (their temporary files
//! hold disk until the client has read them); more get 429 at once.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio_util::io::ReaderStream;

use super::{ApiError, AppState};

#[utoipa::path(
    get,
    path = "/",
    operation_id = "backup",
    tag = "backup",
    responses(
        (status = 200, description = "A consistent copy of the database (an SQLite file)", content_type = "application/octet-stream",
         headers(("Content-Disposition" = String, description = "attachment; filename=\"<UTC YYYY-MM-DD HH:MM:SS>_<db file name>\""))),
        (status = 401, description = "`--token` is set and the request lacks it (`unauthorized`)", body = super::schema::ErrorBody),
        (status = 429, description = "`--max-concurrent-backups` downloads run already (`too_many_backups`)", body = super::schema::ErrorBody),
        (status = 500, description = "The copy failed (`internal`)", body = super::schema::ErrorBody),
    ),
    security((), ("token" = [])),
)]
pub async fn download(State(state): State<AppState>) -> Result<Response, ApiError> {
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
