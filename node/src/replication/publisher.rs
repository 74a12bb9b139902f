//! Owns publishing committed change sets to JetStream: the `db::sink::ChangeSink` the writer
//! calls before it commits, over a NATS connection of its own (`PublishConnection`).
//! Must not retry behind the writer's back: one attempt, bounded by `--replication-timeout`; an
//! error rolls the transaction back and the client is told.
//! Invariant: `publish` returns a sequence only after JetStream acknowledged every part.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use tokio::runtime::Handle;

use super::status::ReplStatus;
use crate::changeset::{self, ChangeSet, Seq};
use crate::db::sink::{ChangeSink, PublishAfterError, PublishError};
use crate::metrics::Metrics;

/// The writer's own connection to NATS, read and written by a thread of its own ("ha-publish",
/// a single-threaded runtime). The node's shared async threads serve every HTTP and pg request
/// and the consumer; through their connection a commit's publish and its acknowledgement queued
/// behind that work, and with every thread busy waited until the replication timeout.
pub struct PublishConnection {
    client: async_nats::Client,
    js: jetstream::Context,
    /// The thread's runtime: the writer waits on it for the acknowledgement.
    runtime: Handle,
    /// How long a publish may wait for its acknowledgements (`--replication-timeout`).
    timeout: Duration,
    /// Dropped with the sink: the thread then ends and the connection closes.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PublishConnection {
    /// Starts the thread and the connection with `opts` (which retry forever in the background,
    /// as the shared connection's do); acknowledgements are awaited up to `timeout`. The
    /// connection's state goes to `status.publish_connected`.
    pub async fn start(
        opts: async_nats::ConnectOptions,
        addrs: Vec<async_nats::ServerAddr>,
        timeout: Duration,
        status: Arc<ReplStatus>,
    ) -> Result<PublishConnection, String> {
        let opts = opts.event_callback(move |event| {
            let st = status.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        st.publish_connected.store(true, Ordering::Release);
                    }
                    async_nats::Event::Disconnected => {
                        st.publish_connected.store(false, Ordering::Release);
                        tracing::warn!("the publishing connection to NATS was lost; reconnecting");
                    }
                    other => tracing::debug!(event = %other, "NATS event (publishing connection)"),
                }
            }
        });
        let (started, start) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("ha-publish".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = started.send(Err(format!("no runtime for publishing: {e}")));
                        return;
                    }
                };
                let connected = rt.block_on(async move {
                    let client = opts.connect(addrs).await.map_err(|e| e.to_string())?;
                    let mut js = jetstream::new(client.clone());
                    js.set_timeout(timeout);
                    Ok::<_, String>((client, js))
                });
                let up = connected.is_ok();
                let _ = started.send(connected.map(|c| (c, rt.handle().clone())));
                if up {
                    rt.block_on(async move {
                        let _ = stopped.await;
                    });
                }
            })
            .map_err(|e| format!("no thread for publishing: {e}"))?;
        let ((client, js), runtime) = start
            .await
            .map_err(|_| "the publishing thread ended".to_string())??;
        Ok(PublishConnection {
            client,
            js,
            runtime,
            timeout,
            _stop: stop,
        })
    }
}

pub struct JetStreamSink {
    pub(crate) conn: PublishConnection,
    pub(crate) subject: String,
    pub(crate) metrics: Arc<Metrics>,
    /// The consumer's view of the stream: while it refuses the stream (not the one this
    /// node's data came from), nothing is published to it either.
    pub(crate) status: Arc<ReplStatus>,
}

impl JetStreamSink {
    /// The messages `cs` is published as (split to fit the server's `max_payload`), or why
    /// nothing may be published now: the node refuses the stream behind it (see `identity`; a
    /// commit there would be built on data the stream does not have), or the connection is not
    /// up.
    fn parts(&self, cs: &ChangeSet) -> Result<Vec<Vec<u8>>, PublishError> {
        if let Some(why) = self.status.identity() {
            return Err(PublishError(format!(
                "this node does not accept writes until it recovers: {why}"
            )));
        }
        let client = &self.conn.client;
        if client.connection_state() != async_nats::connection::State::Connected {
            return Err(PublishError("not connected to NATS".into()));
        }
        // Connected: the limit is the server's (a counter, where `server_info` copies the INFO).
        let max = client.max_payload().max(64 * 1024) - PAYLOAD_MARGIN;
        changeset::split(cs, max).map_err(|e| PublishError(e.to_string()))
    }
}

/// Whether a conditional publish was refused because another message came first. JetStream
/// says so with error code 10071 (which async-nats names `WrongLastSequence`), 10164 (the same
/// refusal, newer servers) or 10163 (the subject's last sequence is not known yet on a new
/// leader): nothing was stored, and the publish may be tried again.
fn lost_the_race(e: &jetstream::context::PublishError) -> bool {
    use jetstream::ErrorCode;
    e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|j| {
                matches!(
                    j.error_code(),
                    ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                        | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
                        | ErrorCode::STREAM_EXPECTED_LAST_SEQ_PER_SUBJECT_NOT_READY
                )
            })
}

/// Room left in a message for the subject, headers and protocol framing.
const PAYLOAD_MARGIN: usize = 4096;

impl ChangeSink for JetStreamSink {
    fn publish(&self, cs: &ChangeSet) -> Result<Seq, PublishError> {
        let parts = self.parts(cs)?;
        let start = Instant::now();
        let deadline = start + self.conn.timeout;
        let result = self.conn.runtime.block_on(async {
            let mut acks = Vec::with_capacity(parts.len());
            for part in parts {
                let left = deadline.saturating_duration_since(Instant::now());
                let ack = tokio::time::timeout(
                    left,
                    self.conn.js.publish(self.subject.clone(), part.into()),
                )
                .await
                .map_err(|_| {
                    PublishError(format!("publish timed out after {:?}", self.conn.timeout))
                })?
                .map_err(|e| PublishError(format!("publish failed: {e}")))?;
                acks.push(ack);
            }
            let mut last = 0;
            for ack in acks {
                let left = deadline.saturating_duration_since(Instant::now());
                let a = tokio::time::timeout(left, ack)
                    .await
                    .map_err(|_| {
                        PublishError(format!("no acknowledgement within {:?}", self.conn.timeout))
                    })?
                    .map_err(|e| PublishError(format!("not acknowledged: {e}")))?;
                last = a.sequence;
            }
            Ok(Seq(last))
        });
        self.metrics
            .publish_duration
            .observe(start.elapsed().as_secs_f64());
        if result.is_err() {
            self.metrics.publish_failures.inc();
        }
        result
    }

    /// Each part is published only after the previous one was acknowledged, with JetStream's
    /// `Nats-Expected-Last-Subject-Sequence` set to it (the first to `after`): any other
    /// message in between refuses the publish.
    fn publish_after(&self, cs: &ChangeSet, after: Seq) -> Result<Seq, PublishAfterError> {
        let other = |m: String| PublishAfterError::Other(PublishError(m));
        let parts = self.parts(cs).map_err(PublishAfterError::Other)?;
        let start = Instant::now();
        let deadline = start + self.conn.timeout;
        let result = self.conn.runtime.block_on(async {
            let mut last = after.0;
            for part in parts {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    last.to_string().as_str(),
                );
                let left = deadline.saturating_duration_since(Instant::now());
                let sent = async {
                    self.conn
                        .js
                        .publish_with_headers(self.subject.clone(), headers, part.into())
                        .await?
                        .await
                };
                let ack = tokio::time::timeout(left, sent).await.map_err(|_| {
                    other(format!("publish timed out after {:?}", self.conn.timeout))
                })?;
                match ack {
                    Ok(a) => last = a.sequence,
                    Err(e) if lost_the_race(&e) => {
                        return Err(PublishAfterError::Race(format!(
                            "the subject's last sequence is no longer {last}: {e}"
                        )));
                    }
                    Err(e) => return Err(other(format!("publish failed: {e}"))),
                }
            }
            Ok(Seq(last))
        });
        self.metrics
            .publish_duration
            .observe(start.elapsed().as_secs_f64());
        if matches!(result, Err(PublishAfterError::Other(_))) {
            self.metrics.publish_failures.inc();
        }
        result
    }
}
