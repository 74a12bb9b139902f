//! Owns the work of one subscription thread: connect to NATS (then reconnect forever), create
//! the pull consumer where the database says to resume, decode messages with the node's codec,
//! put split change sets back together, and apply them through `local` in stream order.
//! Must not ack a message before what it carries is committed (or deliberately skipped), and
//! must not drop a change set that fails to apply: it is retried with back-off until it applies
//! or the subscription is stopped.
//! Invariant: the position lives in the database (`_ha_meta`, `applied_seq:<subject>`); every
//! (re)start of the consumer begins right after it, so restarts neither miss nor repeat.
//! Decode errors are logged and skipped (nothing to retry).

use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use ha_changeset::Seq;
use ha_follow::{Backoff, InOrder, Received, pull};
use tokio_util::sync::CancellationToken;

use crate::SyncError;
use crate::local::{self, Item, Local};
use crate::options::Options;
use crate::spec::{Spec, Status};

/// How long the parts of a split change set may wait for the rest (its origin gave up).
const PART_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest pause between two attempts to apply a failing change set.
const MAX_APPLY_BACKOFF: Duration = Duration::from_secs(30);

/// The thread's body: answers `started` once (NATS reachable and the stream there, or why
/// not), then follows until `stop`.
pub(crate) fn run(
    spec: &Spec,
    status: &Status,
    stop: &CancellationToken,
    started: SyncSender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = started.send(Err(format!("cannot start a runtime: {e}")));
            return;
        }
    };
    rt.block_on(follow(spec, status, stop, started));
}

async fn follow(
    spec: &Spec,
    status: &Status,
    stop: &CancellationToken,
    started: SyncSender<Result<(), String>>,
) {
    let client = match connect(&spec.options).await {
        Ok(c) => c,
        Err(e) => {
            let _ = started.send(Err(e.to_string()));
            return;
        }
    };
    let mut js = jetstream::new(client.clone());
    js.set_timeout(spec.options.timeout);
    if let Err(e) = js.get_stream(&spec.stream).await {
        let _ = started.send(Err(format!(
            "stream {:?} (the subject up to its first '.'): {e}",
            spec.stream
        )));
        return;
    }
    let _ = started.send(Ok(()));

    let mut local: Option<Local> = None;
    let mut backoff = Backoff::restart();
    while !stop.is_cancelled() {
        let began = Instant::now();
        match consume(spec, &js, &mut local, status, stop).await {
            Ok(()) => break,
            Err(e) => {
                status.following.store(false, Ordering::Release);
                let pause = backoff.after_life(began.elapsed());
                tracing::warn!(subject = %spec.subject, error = %e, retry_in = ?pause, "following stopped; restarting");
                status.set_error(Some(e.to_string()));
                if matches!(e, SyncError::Local(_) | SyncError::Sqlite(_)) {
                    local = None;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
    status.following.store(false, Ordering::Release);
    if status.delete_durable.load(Ordering::Acquire)
        && let Some(durable) = &spec.durable
    {
        match js.delete_consumer_from_stream(durable, &spec.stream).await {
            Ok(_) => {
                tracing::info!(subject = %spec.subject, durable, "deleted the durable consumer")
            }
            Err(e) => {
                tracing::warn!(subject = %spec.subject, durable, error = %e, "cannot delete the durable consumer")
            }
        }
    }
    drop(js);
    let _ = client.drain().await;
    tracing::info!(subject = %spec.subject, "stopped following");
}

async fn connect(o: &Options) -> Result<async_nats::Client, SyncError> {
    let mut c = async_nats::ConnectOptions::new()
        .name(o.client_name.as_deref().unwrap_or("ha-sync"))
        .connection_timeout(o.timeout)
        .request_timeout(Some(o.timeout))
        // Reconnect forever: a NATS restart must not end the subscription.
        .max_reconnects(None)
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let Some(user) = &o.username {
        c = c.user_and_password(user.clone(), o.password.clone().unwrap_or_default());
    }
    if let Some(token) = &o.token {
        c = c.token(token.clone());
    }
    if let Some(ca) = &o.ca_file {
        c = c.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&o.cert_file, &o.cert_key_file) {
        c = c.add_client_certificate(cert.clone(), key.clone());
    }
    if o.wants_tls() {
        c = c.require_tls(true);
    }
    let servers = o
        .servers
        .split(',')
        .map(|s| s.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| SyncError::Options(format!("servers={:?}: {e}", o.servers)))?;
    c.connect(servers)
        .await
        .map_err(|e| SyncError::Nats(format!("cannot connect to {}: {e}", o.servers)))
}

fn nats<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> SyncError + '_ {
    move |e| SyncError::Nats(format!("{what}: {e}"))
}

/// One life of the consumer: from the stored position until `stop` (Ok) or a failure (Err,
/// the caller starts a new life after a pause).
async fn consume(
    spec: &Spec,
    js: &jetstream::Context,
    local: &mut Option<Local>,
    status: &Status,
    stop: &CancellationToken,
) -> Result<(), SyncError> {
    let db = match local {
        Some(db) => db,
        None => local.insert(Local::open(&spec.db_path, &spec.subject)?),
    };
    let mut position = db.position()?;
    status.applied_seq.store(position, Ordering::Release);

    let mut stream = js
        .get_stream(&spec.stream)
        .await
        .map_err(nats("open stream"))?;
    let info = stream.info().await.map_err(nats("stream info"))?.clone();
    db.set_dedupe_window(info.config.max_age);
    let first = info.state.first_sequence;
    if position > 0 && first > position + 1 {
        tracing::error!(
            subject = %spec.subject,
            position,
            first,
            "gap in the replication stream: the database holds changes up to {position} but the stream starts at {first}; \
             the changes in between are gone (older than the stream's max age) — start again from a copy of a node's database"
        );
    }
    // The durable is only a cursor: recreate it where the database says we are.
    let deliver = pull::start_at(position, &spec.policy);
    let config = pull::config(spec.durable.clone(), &spec.subject, deliver);
    let consumer = pull::recreate(&stream, config)
        .await
        .map_err(nats("create consumer"))?;
    let mut messages = pull::messages(&consumer).await.map_err(nats("pull"))?;
    status.set_pending(consumer.cached_info().num_pending);
    status.following.store(true, Ordering::Release);
    status.set_error(None);
    tracing::info!(subject = %spec.subject, durable = spec.durable.as_deref().unwrap_or(""), from = position + 1, "following");

    // Nothing after the first part of a split change set still incomplete is applied before it.
    let mut received = InOrder::new(PART_TIMEOUT);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {
                if let Some(all) = received.expired()
                    && !apply_all(db, items(spec, all), &mut position, status, stop).await
                {
                    return Ok(());
                }
                continue;
            }
            m = messages.next() => m,
        };
        let Some(msg) = msg else {
            return Err(SyncError::Nats("the message stream ended".into()));
        };
        // Take what else is already here: applied together, they share one commit.
        let batch = pull::with_arrived(msg, &mut messages)
            .into_iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(nats("receive"))?;
        // Messages after the last one of the batch (JetStream says with each message).
        let mut after = 0;
        for msg in &batch {
            let info = msg.info().map_err(nats("message metadata"))?;
            let seq = info.stream_sequence;
            after = info.pending;
            if seq <= position || received.holds(Seq(seq)) {
                continue;
            }
            received.receive(Seq(seq), &msg.payload);
        }
        let writing = Instant::now();
        if !apply_all(
            db,
            items(spec, received.ready()),
            &mut position,
            status,
            stop,
        )
        .await
        {
            return Ok(());
        }
        received.not_counting(writing.elapsed());
        status.set_pending(after + received.held() as u64);
        pull::ack_batch(&batch).await.map_err(nats("ack"))?;
    }
}

/// What `local` applies of what was received: a message that is not a change set only moves
/// the position past it (nothing to retry).
fn items(spec: &Spec, received: Vec<(Seq, Received)>) -> Vec<Item> {
    received
        .into_iter()
        .map(|(seq, r)| match r {
            Received::Change(cs, _) => Item::Apply { seq: seq.0, cs: *cs },
            Received::Undecodable(e, _) => {
                tracing::warn!(subject = %spec.subject, seq = seq.0, error = %e, "skipping a message that is not a change set");
                Item::Skip { seq: seq.0 }
            }
        })
        .collect()
}

/// Applies `items` in order, retrying a failing one with back-off until it applies; returns
/// false when stopped first.
async fn apply_all(
    db: &mut Local,
    mut items: Vec<Item>,
    position: &mut u64,
    status: &Status,
    stop: &CancellationToken,
) -> bool {
    let mut wait = Backoff::new(Duration::from_millis(100), MAX_APPLY_BACKOFF);
    let mut attempt = 0u32;
    while !items.is_empty() {
        let out = db.apply(&items);
        if out.done > 0 {
            *position = items[out.done - 1].seq();
            status.applied_seq.store(*position, Ordering::Release);
            items.drain(..out.done);
        }
        let Some(e) = out.error else {
            if attempt > 0 {
                tracing::info!(position = *position, "applying again");
                status.set_error(None);
            }
            continue;
        };
        attempt += 1;
        let seq = items.first().map_or(0, Item::seq);
        let pause = wait.next_pause();
        if local::is_busy(&e) {
            tracing::debug!(seq, attempt, error = %e, "database busy; retrying");
        } else {
            tracing::error!(seq, attempt, error = %e, retry_in = ?pause, "cannot apply change set; retrying (it is not acknowledged)");
        }
        status.set_error(Some(format!("message {seq}: {e}")));
        tokio::select! {
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    true
}
