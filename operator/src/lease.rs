//! Owns leader election on a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! one reconciles: acquire a free or expired Lease, renew it while held, release it on shutdown.
//! Must not write a Lease it has not read: each write is a create or a replace with the
//! resourceVersion read, so two replicas racing cannot both win (one gets 409).
//! Invariant: a leader that cannot renew steps down after `renew_deadline` < lease duration.
//! See `main.rs` (`run` waits for leadership and exits when it is lost).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How the election runs.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's name (the pod name).
    pub identity: String,
    /// How long a holder's claim lasts without renewal.
    pub duration: Duration,
    /// A leader that has not renewed for this long steps down.
    pub renew_deadline: Duration,
    /// Time between two rounds.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What one round should do with the Lease it read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Free, expired or never held: claim it.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else's, valid for `remaining` more (by our clock).
    Follow { holder: String, remaining: Duration },
}

/// Pure: what to do with `spec` (the Lease's, if any), given how long this replica has seen its
/// holder and renewTime unchanged (`unchanged_for`, measured on the local clock, as client-go
/// does: another host's renewTime is never compared with our clock, so clock skew between
/// replicas can neither steal a valid Lease nor keep a dead one).
pub fn decide(spec: Option<&LeaseSpec>, identity: &str, unchanged_for: Duration) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
    match duration.checked_sub(unchanged_for) {
        Some(remaining) if !remaining.is_zero() => Decision::Follow {
            holder: holder.into(),
            remaining,
        },
        _ => Decision::Acquire,
    }
}

/// The part of a Lease whose change means its holder is alive (client-go's observed record).
fn record_of(spec: Option<&LeaseSpec>) -> String {
    let Some(s) = spec else {
        return String::new();
    };
    format!(
        "{}|{:?}|{:?}|{:?}",
        s.holder_identity.as_deref().unwrap_or(""),
        s.renew_time.as_ref().map(|t| t.0),
        s.acquire_time.as_ref().map(|t| t.0),
        s.lease_transitions
    )
}

/// When this replica last saw the Lease's record change (local monotonic clock).
#[derive(Debug, Default)]
pub struct Observed {
    record: String,
    since: Option<tokio::time::Instant>,
}

impl Observed {
    /// How long `spec`'s record has been unchanged as of `now`; a change restarts the count.
    pub fn unchanged_for(
        &mut self,
        spec: Option<&LeaseSpec>,
        now: tokio::time::Instant,
    ) -> Duration {
        let record = record_of(spec);
        match self.since {
            Some(since) if record == self.record => now.duration_since(since),
            _ => {
                self.record = record;
                self.since = Some(now);
                Duration::ZERO
            }
        }
    }
}

/// The spec a round writes for `decision`.
pub fn claim(
    previous: Option<&LeaseSpec>,
    decision: &Decision,
    cfg: &LeaseConfig,
    now: Timestamp,
) -> Option<LeaseSpec> {
    let transitions = previous.and_then(|s| s.lease_transitions).unwrap_or(0);
    let duration = i32::try_from(cfg.duration.as_secs()).unwrap_or(i32::MAX);
    match decision {
        Decision::Follow { .. } => None,
        Decision::Renew => Some(LeaseSpec {
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            ..previous.cloned().unwrap_or_default()
        }),
        Decision::Acquire => Some(LeaseSpec {
            holder_identity: Some(cfg.identity.clone()),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_duration_seconds: Some(duration),
            lease_transitions: Some(if previous.is_some() {
                transitions.saturating_add(1)
            } else {
                0
            }),
            ..LeaseSpec::default()
        }),
    }
}

/// One replica's side of the election.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    cfg: LeaseConfig,
    /// Shared by the clones (never held across an await).
    observed: std::sync::Arc<std::sync::Mutex<Observed>>,
}

impl Elector {
    pub fn new(client: Client, cfg: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            observed: Default::default(),
        }
    }

    /// Reads the Lease and claims or renews it when it may. `Ok(true)`: we hold it now.
    pub async fn round(&self, now: Timestamp) -> Result<bool, kube::Error> {
        let current = self.api.get_opt(&self.cfg.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let unchanged_for = match self.observed.lock() {
            Ok(mut o) => o.unchanged_for(spec, tokio::time::Instant::now()),
            Err(_) => Duration::ZERO,
        };
        let decision = decide(spec, &self.cfg.identity, unchanged_for);
        let Some(new_spec) = claim(spec, &decision, &self.cfg, now) else {
            if let Decision::Follow { holder, remaining } = &decision {
                tracing::debug!(%holder, ?remaining, "another operator replica leads");
            }
            return Ok(false);
        };
        let written = match current {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.cfg.name.clone()),
                        namespace: Some(self.cfg.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(new_spec),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Some(mut lease) => {
                // Keeps metadata.resourceVersion: a concurrent writer makes this a 409.
                lease.spec = Some(new_spec);
                self.api
                    .replace(&self.cfg.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(_) => {
                if decision == Decision::Acquire {
                    tracing::info!(identity = %self.cfg.identity, lease = %self.cfg.name, "acquired the leader lease");
                }
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it, so another replica takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.cfg.name).await? else {
            return Ok(());
        };
        let ours = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.cfg.identity.as_str());
        if !ours {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
        }
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs rounds until `shutdown`, publishing whether we lead. Steps down (sends `false`) when
    /// renewals fail for `renew_deadline`; releases the Lease on shutdown.
    pub async fn run(self, leading: watch::Sender<bool>, shutdown: CancellationToken) {
        let mut last_renewal: Option<tokio::time::Instant> = None;
        loop {
            let held = match self.round(Timestamp::now()).await {
                Ok(held) => held,
                Err(e) => {
                    tracing::warn!(error = %e, "leader election round failed");
                    false
                }
            };
            let now = tokio::time::Instant::now();
            if held {
                last_renewal = Some(now);
            }
            let still_leading =
                last_renewal.is_some_and(|t| now.duration_since(t) < self.cfg.renew_deadline);
            if *leading.borrow() != still_leading {
                leading.send_replace(still_leading);
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
        if *leading.borrow()
            && let Err(e) = self.release().await
        {
            tracing::warn!(error = %e, "releasing the leader lease failed");
        }
        leading.send_replace(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ApiServerVerifier;
    use std::time::Duration;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(ts(renewed))),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn a_missing_or_empty_lease_is_acquired() {
        assert_eq!(decide(None, "me", S(0)), Decision::Acquire);
        assert_eq!(
            decide(Some(&LeaseSpec::default()), "me", S(0)),
            Decision::Acquire
        );
    }

    #[test]
    fn our_own_lease_is_renewed() {
        let spec = held_by("me", "2026-01-01T09:59:58Z");
        assert_eq!(decide(Some(&spec), "me", S(60)), Decision::Renew);
        let cfg = LeaseConfig::new("l", "ns", "me");
        let now = ts("2026-01-01T10:00:00Z");
        let renewed = claim(Some(&spec), &Decision::Renew, &cfg, now).unwrap();
        assert_eq!(renewed.renew_time, Some(MicroTime(now)));
        assert_eq!(
            renewed.lease_transitions,
            Some(3),
            "a renewal is no transition"
        );
    }

    #[test]
    fn another_replicas_valid_lease_is_followed_until_it_expires() {
        let spec = held_by("other", "2026-01-01T10:00:00Z");
        assert_eq!(
            decide(Some(&spec), "me", S(14)),
            Decision::Follow {
                holder: "other".into(),
                remaining: S(1)
            }
        );
        assert_eq!(decide(Some(&spec), "me", S(15)), Decision::Acquire);
    }

    #[test]
    fn expiry_is_measured_from_the_locally_observed_change_not_the_remote_clock() {
        // The holder's clock is an hour behind ours: its renewTime looks long expired, yet it
        // renews every 2 s. Comparing clocks would steal a valid Lease; client-go does not.
        let mut observed = Observed::default();
        let t0 = tokio::time::Instant::now();
        let mut spec = held_by("other", "2026-01-01T09:00:00Z");
        assert_eq!(observed.unchanged_for(Some(&spec), t0), S(0));
        assert!(matches!(
            decide(
                Some(&spec),
                "me",
                observed.unchanged_for(Some(&spec), t0 + S(10))
            ),
            Decision::Follow { .. }
        ));
        // A renewal (a new renewTime) restarts the count.
        spec.renew_time = Some(MicroTime(ts("2026-01-01T09:00:12Z")));
        assert_eq!(observed.unchanged_for(Some(&spec), t0 + S(12)), S(0));
        assert!(matches!(
            decide(
                Some(&spec),
                "me",
                observed.unchanged_for(Some(&spec), t0 + S(26))
            ),
            Decision::Follow { .. }
        ));
        // No renewal seen for the lease duration: taken over, whatever the timestamps say.
        let ahead = held_by("other", "2099-01-01T00:00:00Z");
        let mut o = Observed::default();
        o.unchanged_for(Some(&ahead), t0);
        assert_eq!(
            decide(
                Some(&ahead),
                "me",
                o.unchanged_for(Some(&ahead), t0 + S(15))
            ),
            Decision::Acquire
        );
    }

    #[test]
    fn taking_over_an_expired_lease_counts_a_transition() {
        let spec = held_by("other", "2026-01-01T10:00:00Z");
        let cfg = LeaseConfig::new("l", "ns", "me");
        let now = ts("2026-01-01T10:01:00Z");
        let c = claim(Some(&spec), &Decision::Acquire, &cfg, now).unwrap();
        assert_eq!(c.holder_identity.as_deref(), Some("me"));
        assert_eq!(c.lease_transitions, Some(4));
        assert_eq!(c.acquire_time, Some(MicroTime(now)));
    }

    #[test]
    fn the_renew_deadline_is_shorter_than_the_lease() {
        let cfg = LeaseConfig::new("l", "ns", "me");
        assert!(cfg.renew_deadline < cfg.duration);
    }

    #[tokio::test]
    async fn a_replica_creates_the_missing_lease_and_leads() {
        let (client, verifier) = ApiServerVerifier::new();
        let elector = Elector::new(client, LeaseConfig::new("ha-operator", "ops", "me"));
        let server = tokio::spawn(async move {
            let url = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
            verifier
                .expect(http::Method::GET, &format!("{url}/ha-operator"))
                .await
                .not_found()
                .expect(http::Method::POST, &format!("{url}?"))
                .await
                .check_body(|b| {
                    assert_eq!(b["spec"]["holderIdentity"], "me");
                    assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
                })
                .echo();
        });
        assert!(elector.round(Timestamp::now()).await.unwrap());
        crate::fixtures::timeout_after_1s(server).await;
    }

    #[tokio::test]
    async fn a_replica_follows_a_valid_lease_without_writing() {
        let (client, verifier) = ApiServerVerifier::new();
        let elector = Elector::new(client, LeaseConfig::new("ha-operator", "ops", "me"));
        let now = Timestamp::now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some("ha-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("other".into()),
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
        };
        let server = tokio::spawn(async move {
            verifier
                .expect(
                    http::Method::GET,
                    "/apis/coordination.k8s.io/v1/namespaces/ops/leases/ha-operator",
                )
                .await
                .respond(&lease);
        });
        assert!(!elector.round(now).await.unwrap());
        crate::fixtures::timeout_after_1s(server).await;
    }

    #[tokio::test(start_paused = true)]
    async fn losing_a_race_for_the_lease_is_following_not_an_error() {
        let (client, verifier) = ApiServerVerifier::new();
        let elector = Elector::new(client, LeaseConfig::new("ha-operator", "ops", "me"));
        let expired = Lease {
            metadata: ObjectMeta {
                name: Some("ha-operator".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            spec: Some(held_by("other", "2020-01-01T00:00:00Z")),
        };
        let server = tokio::spawn(async move {
            let url = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/ha-operator";
            // First seen: followed for a lease duration by our clock, whatever its renewTime.
            let verifier = verifier
                .expect(http::Method::GET, url)
                .await
                .respond(&expired);
            verifier
                .expect(http::Method::GET, url)
                .await
                .respond(&expired)
                .expect(http::Method::PUT, &format!("{url}?"))
                .await
                .check_body(|b| {
                    assert_eq!(b["metadata"]["resourceVersion"], "7");
                    assert_eq!(b["spec"]["holderIdentity"], "me");
                })
                .conflict();
        });
        assert!(!elector.round(Timestamp::now()).await.unwrap());
        tokio::time::advance(Duration::from_secs(16)).await;
        assert!(!elector.round(Timestamp::now()).await.unwrap());
        crate::fixtures::timeout_after_1s(server).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_steps_down_before_its_lease_expires() {
        let (client, verifier) = ApiServerVerifier::new();
        let cfg = LeaseConfig::new("ha-operator", "ops", "me");
        let deadline = cfg.renew_deadline;
        let elector = Elector::new(client, cfg);
        let url = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";
        // First round: no Lease, we create it. Every later round: the API server fails.
        let server = tokio::spawn(async move {
            let mut v = verifier
                .expect(http::Method::GET, &format!("{url}/ha-operator"))
                .await
                .not_found()
                .expect(http::Method::POST, &format!("{url}?"))
                .await
                .echo();
            loop {
                v = v
                    .expect(http::Method::GET, &format!("{url}/ha-operator"))
                    .await
                    .error(500, "InternalError");
            }
        });
        let (tx, mut leading) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(elector.run(tx, stop.clone()));

        leading.wait_for(|l| *l).await.unwrap();
        let led_at = tokio::time::Instant::now();
        leading.wait_for(|l| !*l).await.unwrap();
        let led_for = led_at.elapsed();
        assert!(led_for >= deadline, "stepped down after {led_for:?}");
        assert!(
            led_for < Duration::from_secs(15),
            "stepped down after {led_for:?}"
        );

        stop.cancel();
        task.await.unwrap();
        server.abort();
    }
}
