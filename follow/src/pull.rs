//! Owns the durable pull consumer a follower reads the stream through: where it starts (the
//! deliver policy), its settings, how it is (re)created, and how messages are taken in batches.
//! Must not decide where to resume: the caller reads its position from its database and asks
//! for `ByStartSequence(position + 1)`; the durable is only a cursor, recreated at every start.

use std::time::Duration;

use async_nats::jetstream::consumer::{self, PullConsumer};
use async_nats::jetstream::stream;
use futures::{FutureExt, Stream, StreamExt};
use ha_changeset::names::DeliverPolicy;

/// The most messages taken together from what has already arrived (they share one commit).
pub const MAX_BATCH: usize = 512;
/// Messages asked for in one pull request.
const PULL_BATCH: usize = 256;

/// The JetStream deliver policy of a `--replication-policy` (or `policy=`) value.
pub fn deliver_policy(policy: &DeliverPolicy) -> consumer::DeliverPolicy {
    match policy {
        DeliverPolicy::All => consumer::DeliverPolicy::All,
        DeliverPolicy::Last => consumer::DeliverPolicy::Last,
        DeliverPolicy::New => consumer::DeliverPolicy::New,
        DeliverPolicy::ByStartSequence(n) => {
            consumer::DeliverPolicy::ByStartSequence { start_sequence: *n }
        }
        DeliverPolicy::ByStartTime(t) => consumer::DeliverPolicy::ByStartTime { start_time: *t },
    }
}

/// Where to start: right after `position` when the database holds one, else `policy`.
pub fn start_at(position: u64, policy: &DeliverPolicy) -> consumer::DeliverPolicy {
    if position > 0 {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: position + 1,
        }
    } else {
        deliver_policy(policy)
    }
}

/// The consumer's settings: cumulative acks (`AckPolicy::All`: acknowledging a message
/// acknowledges everything before it, so a batch costs one ack, sent once what it carries is
/// committed — see `ack_batch`), 30 s to ack, at most 1024 in flight; one replica, in memory. The durable is
/// only a cursor that its follower recreates from its database at every start, so its state
/// needs no raft group and no disk. Replicated on disk like the stream, every ack was a raft
/// proposal synced on each server, three consumers per write: the nats-servers spent more on
/// acks than on the stream (docs/benchmarks.md). If the one server holding it goes away, the
/// follower's pull fails and it recreates the consumer on a live one.
pub fn config(
    durable: Option<String>,
    subject: &str,
    deliver: consumer::DeliverPolicy,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: durable,
        filter_subject: subject.to_string(),
        deliver_policy: deliver,
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1024,
        num_replicas: 1,
        memory_storage: true,
        ..Default::default()
    }
}

/// Deletes the durable of `config` (if any) and creates the consumer afresh.
pub async fn recreate(
    stream: &stream::Stream,
    config: consumer::pull::Config,
) -> Result<PullConsumer, stream::ConsumerError> {
    if let Some(d) = &config.durable_name {
        let _ = stream.delete_consumer(d).await;
    }
    stream.create_consumer(config).await
}

/// The consumer's message stream: pulls of 256, a heartbeat every 5 s, requests that expire
/// after 30 s.
pub async fn messages(
    consumer: &PullConsumer,
) -> Result<consumer::pull::Stream, consumer::StreamError> {
    consumer
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
}

/// Acknowledges a batch taken in stream order once what it carries is committed: one ack, of
/// its last message, which under `AckPolicy::All` covers the ones before it.
pub async fn ack_batch(batch: &[async_nats::jetstream::Message]) -> Result<(), async_nats::Error> {
    match batch.last() {
        Some(last) => last.ack().await,
        None => Ok(()),
    }
}

/// `first` and what else has already arrived, up to `MAX_BATCH` in all, without waiting.
pub fn with_arrived<S: Stream + Unpin>(first: S::Item, messages: &mut S) -> Vec<S::Item> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match messages.next().now_or_never() {
            Some(Some(m)) => batch.push(m),
            _ => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_position_wins_over_the_policy() {
        assert_eq!(
            start_at(41, &DeliverPolicy::New),
            consumer::DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        assert_eq!(
            start_at(0, &DeliverPolicy::Last),
            consumer::DeliverPolicy::Last
        );
        assert_eq!(
            start_at(0, &DeliverPolicy::ByStartSequence(7)),
            consumer::DeliverPolicy::ByStartSequence { start_sequence: 7 }
        );
    }

    #[tokio::test]
    async fn a_batch_takes_what_has_arrived_and_stops_at_the_cap() {
        let mut ready = futures::stream::iter(1..=600);
        let first = ready.next().await.unwrap();
        let batch = with_arrived(first, &mut ready);
        assert_eq!(batch.len(), MAX_BATCH);
        assert_eq!(batch[..3], [1, 2, 3]);
        let mut pending = futures::stream::iter([2, 3]).chain(futures::stream::pending());
        assert_eq!(with_arrived(1, &mut pending), [1, 2, 3]);
    }
}
