//! Owns the PostgreSQL wire front end: the listener, TLS, authentication, the connection limit
//! and each connection's message loop, on top of the `pgwire` crate.
//! Must not touch SQLite or decide transactions itself: statements go to `exec` (through an
//! `exec::Session` per connection) exactly as HTTP requests do.
//! Invariant: a bad or hostile client only ever ends its own connection; on shutdown every
//! client gets FATAL 57P01 and every open transaction is rolled back.
//! See `handler` for queries, `types` for values, `error` for SQLSTATEs, `catalog` for psql.

mod admission;
mod cancel;
mod catalog;
mod cork;
mod error;
mod handler;
mod seq;
mod sql;
mod types;

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::{FutureExt, Sink, SinkExt, StreamExt};
use pgwire::api::auth::cleartext::CleartextPasswordAuthStartupHandler;
use pgwire::api::auth::md5pass::{Md5PasswordAuthStartupHandler, hash_md5_password};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::{ClientInfo, NoopHandler, PgWireConnectionState};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{negotiate_tls, process_error, process_message};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Secret;
pub use crate::config::{AuthMethod, PgConfig};
use crate::exec::Executor;

pub use catalog::psql_pattern_matches;

/// The text half of the frontend message path, for property tests: what the connection does
/// with a query string before the executor sees it (splitting, transaction control, SET/SHOW,
/// catalog recognition, the pg-to-SQLite rewrite). Returns how many statements it found.
#[doc(hidden)]
pub fn plan_query_text(query: &str) -> usize {
    let statements = crate::exec::split_sql(query);
    let settings = std::collections::HashMap::new();
    let ctx = sql::RewriteContext {
        version: "15.0",
        database: "ha",
        user: "ha",
        settings: &settings,
        backend_pid: 1,
    };
    for text in &statements {
        let _ = crate::exec::TxControl::parse(text);
        let _ = sql::session_command(text);
        let _ = catalog::recognise(text);
        let _ = sql::rewrite(text, &ctx);
        let _ = sql::tokenize(text);
    }
    statements.len()
}
pub use error::sqlstate;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("cannot read TLS file {path}: {source}")]
    TlsFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running pg front end: where it listens and the task to await on shutdown.
pub struct PgServer {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

const SCRAM_ITERATIONS: usize = 4096;

/// Everything the accept loop hands to each connection.
struct ServerState {
    shared: Arc<handler::Shared>,
    config: PgConfig,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    /// PEM of the server certificate, for SCRAM channel binding.
    cert_pem: Option<Vec<u8>>,
    /// The SCRAM salt and salted password, computed once (PBKDF2 is slow on purpose).
    scram: (Vec<u8>, Vec<u8>),
    params: Arc<DefaultServerParameterProvider>,
    limit: Arc<Semaphore>,
    /// Name of each connection's thread: `ha-pg-<port>` (what `top -H` shows).
    thread_name: String,
    /// Sessions a CancelRequest can reach.
    cancels: Arc<cancel::Registry>,
    /// Connections not authenticated yet (see `admission`).
    pre_auth: Arc<admission::PreAuth>,
}

/// Binds nothing itself: serves `listener` until `shutdown`.
pub fn start(
    listener: TcpListener,
    exec: Executor,
    config: PgConfig,
    shutdown: CancellationToken,
) -> Result<PgServer, PgError> {
    let local_addr = listener.local_addr()?;
    let (tls, cert_pem) = match (&config.cert, &config.key) {
        (Some(c), Some(k)) => {
            let (acceptor, pem) = load_tls(c, k)?;
            (Some(acceptor), Some(pem))
        }
        (None, None) => (None, None),
        _ => return Err(PgError::Tls("--pg-cert and --pg-key go together".into())),
    };
    if config.require_tls && tls.is_none() {
        return Err(PgError::Tls(
            "--pg-require-tls needs --pg-cert and --pg-key".into(),
        ));
    }
    let salt = random_bytes(16);
    let salted = gen_salted_password(config.password.expose(), &salt, SCRAM_ITERATIONS);
    let mut params = DefaultServerParameterProvider::default();
    params.server_version = "15.0".into();
    params.time_zone = "UTC".into();
    let database = exec.target().file_name().to_string();
    let state = Arc::new(ServerState {
        shared: Arc::new(handler::Shared {
            exec,
            idle_timeout: config.idle_in_transaction_timeout,
            database,
            user: config.user.clone(),
            version: format!(
                "PostgreSQL 15.0 (ha {}, SQLite {})",
                env!("CARGO_PKG_VERSION"),
                rusqlite_version()
            ),
        }),
        limit: Arc::new(Semaphore::new(config.max_connections)),
        thread_name: format!("ha-pg-{}", local_addr.port()),
        cancels: Arc::default(),
        pre_auth: admission::PreAuth::new(
            config
                .max_connections
                .saturating_sub(config.reserved_connections),
        ),
        config,
        tls,
        cert_pem,
        scram: (salt, salted),
        params: Arc::new(params),
    });
    let task = tokio::spawn(accept_loop(listener, state, shutdown));
    Ok(PgServer { local_addr, task })
}

fn rusqlite_version() -> String {
    crate::exec::sqlite_version().to_string()
}

async fn accept_loop(listener: TcpListener, state: Arc<ServerState>, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (socket, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(error = %e, "pg accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Every place taken: if clients still authenticating hold some, the one that has waited
        // longest is closed and the newcomer takes its place (see `admission`).
        let permit = match state.limit.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) if state.pre_auth.evict_oldest() => tokio::time::timeout(
                Duration::from_millis(500),
                state.limit.clone().acquire_owned(),
            )
            .await
            .ok()
            .and_then(Result::ok),
            Err(_) => None,
        };
        let waiting = permit.as_ref().map(|_| state.pre_auth.admit());
        // Only admitted clients get a thread (at most `--pg-max-connections` of them); one
        // over the limit is refused from a task.
        let dedicated = permit.is_some().then(|| state.thread_name.clone());
        let state = state.clone();
        // A child token per connection: waiting on it touches this connection's own lock and
        // waiter list, not the ones every other connection's thread polls too.
        let shutdown = shutdown.child_token();
        let slot = Arc::new(crate::exec::CancelSlot::default());
        let serve = move |socket| async move {
            let over_limit = permit.is_none();
            if let Err(e) =
                serve_connection(socket, &state, over_limit, slot, waiting, shutdown).await
            {
                tracing::debug!(%peer, error = %e, "pg connection ended with an error");
            }
            drop(permit);
        };
        match socket.into_std() {
            Ok(socket) => spawn_connection(&tracker, socket, dedicated, serve),
            Err(e) => tracing::debug!(%peer, error = %e, "pg connection dropped"),
        }
    }
    drop(listener);
    // Reads in progress end now (57014), so that their sessions see the shutdown promptly.
    state.cancels.interrupt_all();
    tracker.close();
    tracker.wait().await;
}

/// Runs one connection on a thread of its own, as a PostgreSQL backend: the socket is
/// registered with that thread's own runtime and its reads run right there
/// (`exec::run_reads_on_this_thread`), instead of two thread hand-offs per statement to the blocking pool
/// and back, which cost more than a point read itself. Runs it as a task on the shared runtime
/// when `dedicated` (the thread's name) is None or no thread can be started (thread limits).
fn spawn_connection<S, F>(
    tracker: &TaskTracker,
    socket: std::net::TcpStream,
    dedicated: Option<String>,
    serve: S,
) where
    S: FnOnce(tokio::net::TcpStream) -> F + Send + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    // Shared with the thread so that the fallback can take it back if the thread never starts.
    let job = Arc::new(std::sync::Mutex::new(Some((socket, serve))));
    let take = |job: &std::sync::Mutex<Option<_>>| job.lock().ok().and_then(|mut j| j.take());
    if let Some(name) = dedicated {
        let (token, theirs) = (tracker.token(), job.clone());
        let started = std::thread::Builder::new().name(name).spawn(move || {
            let _token = token;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match (rt, take(&theirs)) {
                (Ok(rt), Some((socket, serve))) => {
                    crate::exec::run_reads_on_this_thread();
                    rt.block_on(serve_socket(socket, serve));
                }
                (Err(e), _) => tracing::warn!(error = %e, "pg connection runtime failed"),
                (Ok(_), None) => {}
            }
        });
        match started {
            Ok(_) => return,
            Err(e) => tracing::warn!(error = %e, "no thread for a pg connection; using a task"),
        }
    }
    if let Some((socket, serve)) = take(&job) {
        tracker.spawn(serve_socket(socket, serve));
    }
}

/// Registers `socket` with the runtime this runs on and serves it.
async fn serve_socket<S, F>(socket: std::net::TcpStream, serve: S)
where
    S: FnOnce(tokio::net::TcpStream) -> F,
    F: std::future::Future<Output = ()>,
{
    match tokio::net::TcpStream::from_std(socket) {
        Ok(socket) => serve(socket).await,
        Err(e) => tracing::debug!(error = %e, "pg connection dropped"),
    }
}

/// What a client may send before it is authenticated: a startup message (at most 10 KB by the
/// protocol's own cap) and a few authentication messages.
const PRE_AUTH_BYTES: usize = 16 * 1024;

/// One connection from TLS negotiation to its end. The message loop is pgwire's own
/// (`process_socket`), plus the shutdown signal and a clean end on undecodable bytes.
async fn serve_connection(
    socket: tokio::net::TcpStream,
    state: &ServerState,
    over_limit: bool,
    cancel_slot: Arc<crate::exec::CancelSlot>,
    waiting: Option<admission::Waiting>,
    shutdown: CancellationToken,
) -> Result<(), std::io::Error> {
    let auth_deadline = tokio::time::Instant::now() + state.config.auth_timeout;
    let negotiated = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        _ = evicted(&waiting) => return Ok(()),
        _ = tokio::time::sleep_until(auth_deadline) => return Ok(()),
        s = negotiate_tls::<Arc<handler::Prepared>>(socket, state.tls.clone()) => s?,
    };
    let Some(socket) = negotiated else {
        return Ok(());
    };
    // Replies go through `Corked`, so an extended-protocol exchange leaves in one write.
    let parts = socket.into_parts();
    let mut corked = tokio_util::codec::FramedParts::new(cork::Corked::new(parts.io), parts.codec);
    corked.read_buf = parts.read_buf;
    corked.io.read_budget = Some(PRE_AUTH_BYTES);
    corked.write_buf = parts.write_buf;
    let mut socket = tokio_util::codec::Framed::from_parts(corked);
    let conn = Arc::new(handler::ConnState::new(
        state.shared.clone(),
        cancel_slot.clone(),
    ));
    let query = Arc::new(handler::Handler::new(conn.clone()));
    let startup = Arc::new(Auth::new(state, over_limit, socket.is_secure()));
    let (simple, extended) = (query.clone(), query);
    let copy = Arc::new(NoopHandler);
    let cancel = Arc::new(cancel::Canceller(state.cancels.clone()));
    let mut registered = None;
    let startup_deadline = tokio::time::sleep_until(auth_deadline);
    tokio::pin!(startup_deadline);
    let mut waiting = waiting;
    // Registered once, polled at every wait (not a new waiter per message).
    let stopping = shutdown.cancelled();
    tokio::pin!(stopping);
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        socket.get_mut().corked = false;
        // A message already received (Execute and Sync arrive with Bind) is taken without
        // setting up the wait below; shutdown is still checked before each one.
        let ready = if starting || shutdown.is_cancelled() {
            None
        } else {
            socket.next().now_or_never()
        };
        let msg = if let Some(m) = ready {
            m
        } else {
            tokio::select! {
                biased;
                _ = &mut stopping => {
                    let info = error::fatal("57P01", "terminating connection due to administrator command");
                    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                    break;
                }
                _ = &mut startup_deadline, if starting => {
                    let info = error::fatal("08006", "authentication timed out");
                    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                    break;
                }
                _ = evicted(&waiting), if starting => {
                    let info = error::fatal("53300", "too many clients waiting to authenticate");
                    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
                    break;
                }
                m = socket.next() => m,
            }
        };
        let msg = match msg {
            Some(Ok(m)) => m,
            // Closed, or bytes that are not the protocol: this connection ends, no other.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "pg protocol error");
                let info = error::fatal("08P01", format!("invalid message: {e}"));
                let _ = socket
                    .send(PgWireBackendMessage::ErrorResponse(info.into()))
                    .await;
                break;
            }
            None => break,
        };
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            break;
        }
        let is_extended = match socket.state() {
            PgWireConnectionState::CopyInProgress(e) => e,
            _ => msg.is_extended_query(),
        };
        let is_cancel = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        // Replies to these wait for Sync or Flush, as in PostgreSQL; everything else is sent
        // as soon as it is processed.
        let hold = matches!(
            msg,
            PgWireFrontendMessage::Parse(_)
                | PgWireFrontendMessage::Bind(_)
                | PgWireFrontendMessage::Describe(_)
                | PgWireFrontendMessage::Execute(_)
                | PgWireFrontendMessage::Close(_)
        );
        socket.get_mut().corked = true;
        if let Err(e) = process_message(
            msg,
            &mut socket,
            startup.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await
        {
            let fatal = e.is_fatal();
            if fatal {
                socket.get_mut().corked = false;
            }
            process_error(&mut socket, e, is_extended).await?;
            if fatal {
                break;
            }
        }
        if registered.is_none() && matches!(socket.state(), PgWireConnectionState::ReadyForQuery) {
            // Authenticated: the key pgwire sent in BackendKeyData now reaches this session.
            let (pid, secret) = socket.pid_and_secret_key();
            conn.set_backend_pid(pid);
            registered = Some(state.cancels.register(pid, &secret, cancel_slot.clone()));
            // Authenticated: no longer capped, no longer in the waiting queue.
            socket.get_mut().read_budget = None;
            waiting = None;
        }
        if !hold {
            socket.get_mut().corked = false;
            socket.flush().await?;
        }
        if is_cancel {
            break;
        }
    }
    socket.get_mut().corked = false;
    let _ = socket.flush().await;
    Ok(())
}

/// Resolves when the waiting connection is closed for a newcomer (never once authenticated).
async fn evicted(waiting: &Option<admission::Waiting>) {
    match waiting {
        Some(w) => w.evicted.cancelled().await,
        None => futures::future::pending().await,
    }
}

/// The configured user and password, as pgwire's auth mechanisms ask for them.
#[derive(Debug, Clone)]
struct Credentials {
    user: String,
    method: AuthMethod,
    password: Secret,
    scram: Arc<(Vec<u8>, Vec<u8>)>,
}

#[async_trait]
impl AuthSource for Credentials {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        if user != self.user {
            tracing::info!(user, "pg login refused: unknown user");
            return Err(PgWireError::InvalidPassword(user.to_string()));
        }
        Ok(match self.method {
            AuthMethod::ScramSha256 => {
                Password::new(Some(self.scram.0.clone()), self.scram.1.clone())
            }
            AuthMethod::Md5 => {
                let salt = random_bytes(4);
                let hash = hash_md5_password(user, self.password.expose(), &salt);
                Password::new(Some(salt), hash.into_bytes())
            }
            AuthMethod::Password => Password::new(None, self.password.expose().as_bytes().to_vec()),
        })
    }
}

type Params = Arc<DefaultServerParameterProvider>;

/// The startup handler: the configured mechanism, after the checks that refuse a client before
/// it authenticates (connection limit, TLS required).
struct Auth {
    inner: AuthInner,
    over_limit: bool,
    refuse_plain: bool,
}

enum AuthInner {
    Scram(SASLAuthStartupHandler<DefaultServerParameterProvider>),
    Md5(Md5PasswordAuthStartupHandler<Credentials, DefaultServerParameterProvider>),
    Password(CleartextPasswordAuthStartupHandler<Credentials, Params>),
}

impl Auth {
    fn new(state: &ServerState, over_limit: bool, secure: bool) -> Auth {
        let creds = Credentials {
            user: state.config.user.clone(),
            method: state.config.auth,
            password: state.config.password.clone(),
            scram: Arc::new(state.scram.clone()),
        };
        let inner = match state.config.auth {
            AuthMethod::ScramSha256 => {
                let mut scram = ScramAuth::new(Arc::new(creds));
                scram.set_iterations(SCRAM_ITERATIONS);
                if secure && let Some(pem) = &state.cert_pem {
                    // Channel binding (SCRAM-SHA-256-PLUS) where the certificate allows it.
                    if let Err(e) = scram.configure_certificate(pem) {
                        tracing::debug!(error = %e, "SCRAM channel binding unavailable");
                    }
                }
                AuthInner::Scram(
                    SASLAuthStartupHandler::new(state.params.clone()).with_scram(scram),
                )
            }
            AuthMethod::Md5 => AuthInner::Md5(Md5PasswordAuthStartupHandler::new(
                Arc::new(creds),
                state.params.clone(),
            )),
            AuthMethod::Password => AuthInner::Password(CleartextPasswordAuthStartupHandler::new(
                creds,
                state.params.clone(),
            )),
        };
        Auth {
            inner,
            over_limit,
            refuse_plain: state.config.require_tls && !secure,
        }
    }
}

#[async_trait]
impl StartupHandler for Auth {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if matches!(message, PgWireFrontendMessage::Startup(_)) {
            if self.over_limit {
                return Err(PgWireError::UserError(Box::new(error::fatal(
                    "53300",
                    "sorry, too many clients already",
                ))));
            }
            if self.refuse_plain {
                return Err(PgWireError::UserError(Box::new(error::fatal(
                    "28000",
                    "this server requires TLS (sslmode=require or stronger)",
                ))));
            }
        }
        let result = match &self.inner {
            AuthInner::Scram(h) => h.on_startup(client, message).await,
            AuthInner::Md5(h) => h.on_startup(client, message).await,
            AuthInner::Password(h) => h.on_startup(client, message).await,
        };
        match result {
            // PostgreSQL's words, naming the user of the startup message (SCRAM's own message
            // carries an empty user name).
            Err(PgWireError::InvalidPassword(_)) => {
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                tracing::info!(user, "pg login refused: wrong password");
                Err(PgWireError::UserError(Box::new(error::fatal(
                    "28P01",
                    format!("password authentication failed for user \"{user}\""),
                ))))
            }
            other => other,
        }
    }
}

/// Bytes for salts (SCRAM and md5), from the operating system's CSPRNG: an md5 salt that an
/// attacker can predict lets a recorded exchange be replayed.
fn random_bytes(n: usize) -> Vec<u8> {
    use ring::rand::SecureRandom;
    let mut out = vec![0u8; n];
    if ring::rand::SystemRandom::new().fill(&mut out).is_err() {
        // The OS refused randomness (no /dev/urandom, no getrandom): nothing safe to fall back
        // to, and a fixed salt would be worse than stopping.
        panic!("the operating system's random number generator failed");
    }
    out
}

fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<(pgwire::tokio::TlsAcceptor, Vec<u8>), PgError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|source| PgError::TlsFile {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PgError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(PgError::Tls(format!("{}: no certificate", cert.display())));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| PgError::Tls(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| PgError::Tls(e.to_string()))?;
    let mut config = config;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok((pgwire::tokio::TlsAcceptor::from(Arc::new(config)), cert_pem))
}
