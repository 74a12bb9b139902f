//! The writer's publishes against a real nats-server: a commit's publish must not wait for the
//! node's shared async threads, which serve every HTTP and pg request and the consumer.

use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use async_nats::jetstream::stream;
use ha::changeset::{Change, ChangeSet, Operation, Seq, Value};
use ha::config::Config;
use ha::db::sink::ChangeSink;
use ha::metrics::Metrics;
use ha::nats::server::{NatsServer, NatsServerConfig};

fn one_row(id: i64) -> ChangeSet {
    let mut cs = ChangeSet::new("n1", 1, "ha.db");
    let mut c = Change::new(Operation::Insert, "t");
    c.columns = vec!["id".into()];
    c.new_rowid = id;
    c.new_values = vec![Value::Integer(id)];
    cs.changes.push(c);
    cs
}

/// Unblocks the runtime's worker when the test ends, however it ends.
struct Release(Option<mpsc::Sender<()>>);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// Every shared async thread is busy (here: the only worker, blocked by a task): a commit's
/// publish still reaches JetStream and is acknowledged. The node's writer is a thread of its
/// own; its publish used to go through the shared NATS connection, whose reads and writes run on
/// those threads, so under a request load the publish queued behind it — and with every thread
/// taken it waited until the replication timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_commit_is_published_while_every_shared_async_thread_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let server = NatsServer::start(NatsServerConfig {
        bin: Some(ha_testkit::nats_server_bin()),
        host: "127.0.0.1".into(),
        port: 0,
        store_dir: Some(dir.path().join("js")),
        run_dir: Some(dir.path().join("run")),
        ready_timeout: Duration::from_secs(20),
        ..NatsServerConfig::new("publish-test")
    })
    .await
    .unwrap();
    let config = Config::for_test(dir.path());
    let connected =
        ha::replication::connect(&config, Some(&server), Arc::new(Metrics::new()), None)
            .await
            .unwrap();
    let (js, stream_name) = connected.handle.jetstream();
    js.create_stream(stream::Config {
        name: stream_name.to_string(),
        subjects: vec![connected.handle.subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let sink = connected.hooks.sink.clone();

    // Publishes from a thread of its own, as the writer does; answers within `within` or says it
    // did not.
    let publish = |sink: Arc<dyn ChangeSink>, id: i64, within: Duration| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(sink.publish(&one_row(id)));
        });
        rx.recv_timeout(within)
    };
    // The connections come up in the background: the first publish may find them still
    // connecting, the way a write right after a start would.
    let first = ha_testkit::eventually(Duration::from_secs(20), "a first publish", || {
        let r = publish(sink.clone(), 1, Duration::from_secs(20));
        async move { r.ok().and_then(|r| r.ok()) }
    })
    .await
    .unwrap();

    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let _release = Release(Some(release_tx));
    tokio::spawn(async move {
        started_tx.send(()).unwrap();
        // Blocks the runtime's only worker until the test releases it.
        let _ = release_rx.recv();
    });
    started_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the blocking task started");

    let second = publish(sink.clone(), 2, Duration::from_secs(10));
    match second {
        Ok(Ok(seq)) => assert_eq!(seq, Seq(first.0 + 1), "the next message of the stream"),
        Ok(Err(e)) => panic!("the publish failed while the shared threads were busy: {e}"),
        Err(_) => {
            panic!("the publish did not finish within 10 s while the shared threads were busy")
        }
    }
}
