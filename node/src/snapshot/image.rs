//! Owns reading the live database as the content of a snapshot upload, without a copy on disk:
//! the pages of one read transaction (`Executor::read_image`), gathered into upload chunks and
//! hashed on the reader's thread while the upload publishes them.
//! Must not decide what is stored: `store` names the object from the image's head.
//! Invariant: the head's sequence and the pages come from the same read transaction, so the
//! object's `seq` header and its content agree, as for a copy.

use bytes::Bytes;

use super::upload::{Chunks, channel};
use super::{SnapError, io};
use crate::db::ImagePart;
use crate::exec::Executor;

/// The applied sequence and length of the image being read.
pub struct Head {
    pub seq: u64,
    pub bytes: u64,
}

/// Starts reading the database's image: its head, and its content for `upload` (drop the
/// content to stop the read). `Ok(None)`: the database is not in WAL mode, where holding a
/// read transaction for an upload's length would hold the writer back, or SQLite was built
/// without `sqlite_dbpage` (copy it instead).
pub async fn start(
    exec: &Executor,
    chunk_size: usize,
) -> Result<Option<(Head, Chunks)>, SnapError> {
    let (tx, rx) = channel();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel();
    let mut head_tx = Some(head_tx);
    let mut end_tx = Some(end_tx);
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut size = 0u64;
    let mut buf = Vec::with_capacity(chunk_size);
    let sink = move |part: ImagePart<'_>| match part {
        ImagePart::Head { seq, bytes } => head_tx
            .take()
            .is_some_and(|h| h.send(Head { seq, bytes }).is_ok()),
        ImagePart::Page(page) => {
            sha.update(page);
            size += page.len() as u64;
            buf.extend_from_slice(page);
            if buf.len() < chunk_size {
                return true;
            }
            let full = std::mem::replace(&mut buf, Vec::with_capacity(chunk_size));
            tx.blocking_send(Bytes::from(full)).is_ok()
        }
        ImagePart::End => {
            let last = std::mem::take(&mut buf);
            if !last.is_empty() && tx.blocking_send(Bytes::from(last)).is_err() {
                return false;
            }
            let sha =
                std::mem::replace(&mut sha, ring::digest::Context::new(&ring::digest::SHA256));
            end_tx
                .take()
                .is_some_and(|e| e.send((sha.finish(), size)).is_ok())
        }
    };
    let exec = exec.clone();
    let reading = tokio::spawn(async move { exec.read_image(sink).await });
    let Ok(head) = head_rx.await else {
        // No head: not in WAL mode, or the read failed before it.
        let streamed = reading
            .await
            .map_err(|e| io("reading the database")(std::io::Error::other(e)))??;
        if streamed {
            return Err(io("reading the database")(std::io::Error::other(
                "the image ended before its head",
            )));
        }
        return Ok(None);
    };
    let done = Box::pin(async move {
        let read = reading
            .await
            .map_err(|e| io("reading the database")(std::io::Error::other(e)))?;
        read?;
        end_rx.await.map_err(|_| {
            io("reading the database")(std::io::Error::other("the image read stopped early"))
        })
    });
    Ok(Some((
        head,
        Chunks {
            rx,
            done,
            chunk_size,
        },
    )))
}
