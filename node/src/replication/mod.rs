//! Owns the replication log: connecting to NATS, publishing committed change sets, consuming
//! the stream into the database, the stream's identity, gap detection and the `/replications`
//! API.
//! Must not touch SQLite; the writer reaches JetStream only through the sink it declares, and
//! the consumer applies through `exec::Executor`. The `nats-server` child lives in `nats`,
//! snapshots in `snapshot`.
//! Invariant: names and policies are exactly the original's (reference §2.1, §2.5), so Go nodes
//! and ha nodes can share one stream.
//! See `publisher` for the write path, `consumer` for the apply path.

pub mod consumer;
pub mod gap;
pub mod identity;
pub use crate::changeset::names;
pub mod publisher;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::{Value as Json, json};

use crate::config::{Config, redact};
use crate::db::sink::{Origin, ReplicationHooks};
use crate::metrics::Metrics;
use crate::nats::server as nats_server;
use crate::nats::{client_auth, peers};
use crate::snapshot;
use status::ReplStatus;

/// Timeout of the consumer's JetStream API requests (stream info, consumer create, …).
const CONSUMER_API_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    #[error(transparent)]
    Server(#[from] nats_server::NatsServerError),
    #[error("cannot connect to NATS at {urls}: {reason}")]
    Connect { urls: String, reason: String },
    #[error("{0}")]
    Api(String),
    #[error("no such replication consumer {0:?}")]
    NotFound(String),
}

/// Why `remove_peer` could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum RemovePeerError {
    #[error(
        "peer removal needs the embedded nats-server's system account; this node has no embedded server (or runs it with --nats-config)"
    )]
    NoSystemAccount,
    #[error(transparent)]
    Peer(#[from] peers::PeerError),
    #[error("the peer was handled but its durable consumer was not deleted: {0}")]
    Consumer(ReplError),
}

/// What the rest of the node holds of replication: status and the JetStream API for the
/// `/replications` routes.
#[derive(Clone)]
pub struct ReplicationHandle {
    js: jetstream::Context,
    stream: String,
    pub subject: String,
    pub durable: String,
    pub status: Arc<ReplStatus>,
    /// The snapshot bucket of this database (`POST`/`GET /snapshot`, recovery).
    pub snapshots: Arc<snapshot::Snapshots>,
    /// JetStream cluster membership through the embedded server's system account (`None`
    /// without an embedded server or with `--nats-config`).
    pub peers: Option<Arc<peers::PeerAdmin>>,
    /// The database file name (durable names are derived from it).
    db_file: String,
    nats_state: Option<tokio::sync::watch::Receiver<nats_server::NatsState>>,
    /// The `--interceptor` script, for its counters in `/status`.
    interceptor: Option<Arc<crate::interceptor::Interceptor>>,
}

/// A connected replication set-up, before the database is opened.
pub struct Connected {
    pub hooks: ReplicationHooks,
    pub handle: ReplicationHandle,
    client: async_nats::Client,
    consumer_config: consumer::ConsumerConfig,
}

/// The wait before connection attempt `attempt` (1 is the first after a start or a
/// disconnection): none for the first, so a starting node connects at once (its restore's
/// first request waited 100 ms for it), then 200 ms doubling up to 2 s.
fn reconnect_delay(attempt: usize) -> Duration {
    if attempt <= 1 {
        return Duration::ZERO;
    }
    Duration::from_millis((50u64 << attempt.min(6) as u64).min(2000))
}

/// The options of the node's connections to NATS, named `ha <name>`: retry forever, the first
/// attempt at once, credentials in the URL, else the flags (--nats-user/--nats-pass, token,
/// nkey, creds), and TLS.
fn connect_options(
    config: &Config,
    urls: &[String],
    name: String,
) -> Result<async_nats::ConnectOptions, ReplError> {
    let opts = async_nats::ConnectOptions::new()
        .name(format!("ha {name}"))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay);
    client_auth::apply(opts, &config.nats, urls).map_err(|reason| ReplError::Connect {
        urls: redact(urls),
        reason,
    })
}

/// Connects to NATS (the embedded server's URL, or `--replication-url`) and prepares the sink:
/// two connections, one for the writer's publishes (`publisher::PublishConnection`) and one for
/// everything else. Both retry forever in the background; until they are up, writes fail fast.
pub async fn connect(
    config: &Config,
    embedded: Option<&nats_server::NatsServer>,
    metrics: Arc<Metrics>,
    interceptor: Option<Arc<crate::interceptor::Interceptor>>,
) -> Result<Connected, ReplError> {
    let r = &config.replication;
    let urls: Vec<String> = if !r.urls.is_empty() {
        r.urls.clone()
    } else if let Some(s) = embedded {
        vec![s.client_url().to_string()]
    } else {
        return Err(ReplError::Connect {
            urls: String::new(),
            reason: "no NATS: set --nats-port for an embedded server or --replication-url".into(),
        });
    };
    let status = Arc::new(ReplStatus::default());
    let st = status.clone();
    let m = metrics.clone();
    let opts = connect_options(config, &urls, config.name.clone())?.event_callback(move |event| {
        let st = st.clone();
        let m = m.clone();
        async move {
            match event {
                async_nats::Event::Connected => {
                    st.connected.store(true, Ordering::Release);
                    tracing::info!("connected to NATS");
                }
                async_nats::Event::Disconnected => {
                    st.connected.store(false, Ordering::Release);
                    st.reconnects.fetch_add(1, Ordering::Relaxed);
                    m.nats_reconnects.inc();
                    tracing::warn!("disconnected from NATS; reconnecting");
                }
                other => tracing::debug!(event = %other, "NATS event"),
            }
        }
    });
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e: std::io::Error| ReplError::Connect {
            urls: urls.join(","),
            reason: e.to_string(),
        })?;
    let publishing = publisher::PublishConnection::start(
        connect_options(config, &urls, format!("{} publish", config.name))?,
        addrs.clone(),
        r.timeout,
        status.clone(),
    )
    .await
    .map_err(|reason| ReplError::Connect {
        urls: redact(&urls),
        reason,
    })?;
    let client = opts.connect(addrs).await.map_err(|e| ReplError::Connect {
        urls: redact(&urls),
        reason: e.to_string(),
    })?;
    if client.connection_state() == async_nats::connection::State::Connected {
        status.connected.store(true, Ordering::Release);
    }
    let mut js = jetstream::new(client.clone());
    js.set_timeout(r.timeout);
    let file = config.db.file_name();
    let subject = names::subject(&r.stream, &file);
    let durable = names::durable_name(&file, &config.name);
    let snapshots = Arc::new(snapshot::Snapshots::new(
        js.clone(),
        &r.stream,
        &file,
        r.replicas,
        config.snapshots.retain,
        config.snapshots.orphan_age,
        config.db.scratch_dir(),
    ));
    let sink = publisher::JetStreamSink {
        conn: publishing,
        subject: subject.clone(),
        metrics: metrics.clone(),
        status: status.clone(),
    };
    let hooks = ReplicationHooks {
        sink: Arc::new(sink),
        origin: Origin {
            node: config.name.clone(),
            process_id: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
            filename: file.clone(),
        },
        ddl_sync: r.ddl_sync,
        // The stream forgets messages after max-age; remember their identities as long.
        dedupe_window: ha_follow::group::dedupe_window(r.max_age),
        subject: subject.clone(),
        interceptor: interceptor.clone(),
    };
    let consumer_config = consumer::ConsumerConfig {
        stream: r.stream.clone(),
        subject: subject.clone(),
        durable: durable.clone(),
        replicas: r.replicas,
        max_age: r.max_age,
        policy: r.policy,
        part_timeout: r.timeout * 2,
    };
    tracing::info!(urls = %redact(&urls), %subject, %durable, "replication configured");
    Ok(Connected {
        hooks,
        handle: ReplicationHandle {
            js,
            stream: r.stream.clone(),
            subject,
            durable,
            status,
            snapshots,
            peers: embedded.and_then(|s| {
                s.system_auth().map(|auth| {
                    Arc::new(peers::PeerAdmin {
                        url: s.client_url().to_string(),
                        auth: auth.clone(),
                        server_name: s.server_name().to_string(),
                    })
                })
            }),
            db_file: file.clone(),
            nats_state: embedded.map(|s| s.state()),
            interceptor,
        },
        client,
        consumer_config,
    })
}

impl Connected {
    /// Starts consuming the stream into `exec`; runs until `shutdown`.
    pub fn spawn_consumer(
        self,
        exec: crate::exec::Executor,
        metrics: Arc<Metrics>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (
        ReplicationHandle,
        tokio::task::JoinHandle<()>,
        async_nats::Client,
    ) {
        // The consumer's JetStream API calls get a short timeout of their own: while a
        // JetStream cluster elects its leader a request can hang, and the consumer would rather
        // retry soon than wait out --replication-timeout (meant for publishes) twice.
        let mut api = jetstream::new(self.client.clone());
        api.set_timeout(CONSUMER_API_TIMEOUT);
        let c = consumer::Consumer {
            config: self.consumer_config,
            js: api,
            exec,
            status: self.handle.status.clone(),
            metrics,
            snapshots: Some(self.handle.snapshots.clone()),
            gaps: gap::GapWatch::default(),
            gap_while_running: Default::default(),
        };
        let task = tokio::spawn(c.run(shutdown));
        (self.handle, task, self.client)
    }
}

impl ReplicationHandle {
    /// The JetStream context and the replication stream's name (`GET /cluster/streams`; the
    /// backup archiver reads the stream itself).
    pub fn jetstream(&self) -> (&jetstream::Context, &str) {
        (&self.js, &self.stream)
    }

    /// `/status` → `replication`.
    pub fn status_json(&self) -> Json {
        let mut j = self.status.to_json();
        j["stream"] = json!(self.stream);
        j["subject"] = json!(self.subject);
        j["durable"] = json!(self.durable);
        j["snapshots"] = json!({
            "bucket": self.snapshots.bucket(),
            "taken": self.snapshots.taken.load(Ordering::Relaxed),
            "failed": self.snapshots.failed.load(Ordering::Relaxed),
            "orphans_deleted": self.snapshots.orphans_deleted.load(Ordering::Relaxed),
        });
        if let Some(s) = &self.nats_state {
            j["embedded_nats"] = json!(s.borrow().as_str());
        }
        if let Some(i) = &self.interceptor {
            j["interceptor"] = i.status_json();
        }
        j
    }

    /// Every consumer of the stream, as the JetStream API reports them.
    pub async fn list_consumers(&self) -> Result<Json, ReplError> {
        let mut all = Vec::new();
        let mut offset = 0usize;
        loop {
            let page: Json = self
                .js
                .request(
                    format!("CONSUMER.LIST.{}", self.stream),
                    &json!({ "offset": offset }),
                )
                .await
                .map_err(|e| ReplError::Api(format!("failed to get replication info: {e}")))?;
            if let Some(err) = page.get("error") {
                return Err(ReplError::Api(format!(
                    "failed to get replication info: {err}"
                )));
            }
            let batch = page["consumers"].as_array().cloned().unwrap_or_default();
            let total = page["total"].as_u64().unwrap_or(0) as usize;
            offset += batch.len();
            all.extend(batch);
            if offset >= total || all.is_empty() {
                break;
            }
        }
        Ok(json!({ "replications": all }))
    }

    pub async fn consumer_info(&self, name: &str) -> Result<Json, ReplError> {
        check_name(name)?;
        let info: Json = self
            .js
            .request(format!("CONSUMER.INFO.{}.{name}", self.stream), &json!({}))
            .await
            .map_err(|e| ReplError::Api(format!("failed to get replication info: {e}")))?;
        if let Some(err) = info.get("error") {
            if err["code"].as_u64() == Some(404) {
                return Err(ReplError::NotFound(name.into()));
            }
            return Err(ReplError::Api(format!(
                "failed to get replication info: {err}"
            )));
        }
        Ok(json!({ "replications": info }))
    }

    /// Scale-down: removes server `name` from the JetStream cluster and deletes the durable
    /// consumer of the node of that name; both steps are idempotent.
    pub async fn remove_peer(&self, name: &str, force: bool) -> Result<Json, RemovePeerError> {
        let admin = self
            .peers
            .as_ref()
            .ok_or(RemovePeerError::NoSystemAccount)?;
        let removal = admin.remove(name, force).await?;
        let durable = names::durable_name(&self.db_file, name);
        let consumer_deleted = match self.delete_consumer(&durable).await {
            Ok(()) => true,
            Err(ReplError::NotFound(_)) => false,
            Err(e) => return Err(RemovePeerError::Consumer(e)),
        };
        if consumer_deleted {
            tracing::info!(%durable, "deleted the durable consumer of a removed peer");
        }
        Ok(json!({
            "peer": name,
            "removed": removal.removed,
            "reason": removal.reason,
            "durable": durable,
            "consumer_deleted": consumer_deleted,
        }))
    }

    pub async fn delete_consumer(&self, name: &str) -> Result<(), ReplError> {
        check_name(name)?;
        let r: Json = self
            .js
            .request(
                format!("CONSUMER.DELETE.{}.{name}", self.stream),
                &json!({}),
            )
            .await
            .map_err(|e| ReplError::Api(format!("failed to remove consumer: {e}")))?;
        if let Some(err) = r.get("error") {
            if err["code"].as_u64() == Some(404) {
                return Err(ReplError::NotFound(name.into()));
            }
            return Err(ReplError::Api(format!("failed to remove consumer: {err}")));
        }
        Ok(())
    }
}

/// A consumer name must not smuggle subject tokens into the API subject.
fn check_name(name: &str) -> Result<(), ReplError> {
    if name.is_empty() || name.contains(['.', '*', '>', ' ', '\t', '\n']) {
        return Err(ReplError::NotFound(name.into()));
    }
    Ok(())
}
