//! Owns the JetStream cluster's membership as the node sees it: listing the meta group's peers
//! and removing a departed server from it (`$JS.API.SERVER.REMOVE`), for scale-down.
//! Must not keep a connection open or log the system account's password: every call connects
//! to the node's own embedded server as the system user, asks, and closes.
//! Invariant: removal is refused for this node's own server and for a peer the meta leader
//! sees online (removing a live server shuts its JetStream down) unless forced; removing a
//! server that is not (or no longer) a member is an answer, not an error.
//! See `http::peers` for the routes and docs/http-api.md for the contract.

use std::time::Duration;

use serde_json::{Value as Json, json};

use super::server::NatsAuth;

/// How long one system request may take (a meta leader election answers within it).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `JSClusterServerNotMemberErr`.
const NOT_A_MEMBER: u64 = 10044;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{0:?} is not a server name")]
    BadName(String),
    #[error("{0:?} is this node's own server; remove it from another node")]
    IsSelf(String),
    #[error(
        "{0:?} is online (the JetStream meta leader hears from it); stop it first, or add ?force=true to shut its JetStream down"
    )]
    Online(String),
    #[error("cannot reach the JetStream cluster: {0}")]
    Unavailable(String),
    #[error("JetStream refused: {0}")]
    Refused(String),
}

/// One member of the meta group.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Peer {
    pub name: String,
    pub leader: bool,
    /// Up to date with the meta leader.
    pub current: bool,
    pub offline: bool,
    /// Since the leader last heard from it (0 for the leader itself).
    pub active_ms: u64,
    /// Meta-log entries it is behind.
    pub lag: u64,
}

/// The meta group as its leader sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Membership {
    /// `None`: a single server, no JetStream cluster.
    pub cluster: Option<String>,
    pub leader: String,
    pub peers: Vec<Peer>,
}

/// What a removal did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Removal {
    pub removed: bool,
    /// Why nothing was removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The node's handle on its embedded server's system account.
pub struct PeerAdmin {
    pub url: String,
    pub auth: NatsAuth,
    /// This node's server name.
    pub server_name: String,
}

impl PeerAdmin {
    async fn connect(&self) -> Result<async_nats::Client, PeerError> {
        async_nats::ConnectOptions::new()
            .name("ha peer admin")
            .user_and_password(
                self.auth.user.clone(),
                self.auth.password.expose().to_string(),
            )
            .connection_timeout(REQUEST_TIMEOUT)
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(self.url.as_str())
            .await
            .map_err(|e| PeerError::Unavailable(format!("system account connection: {e}")))
    }

    /// The meta group's members, from the meta leader's point of view.
    pub async fn list(&self) -> Result<Membership, PeerError> {
        let client = self.connect().await?;
        let r = membership(&client).await;
        let _ = client.drain().await;
        r
    }

    /// Removes server `name` from the meta group (see the module invariant).
    pub async fn remove(&self, name: &str, force: bool) -> Result<Removal, PeerError> {
        check_name(name)?;
        if name == self.server_name {
            return Err(PeerError::IsSelf(name.into()));
        }
        let client = self.connect().await?;
        let r = self.remove_with(&client, name, force).await;
        let _ = client.drain().await;
        r
    }

    async fn remove_with(
        &self,
        client: &async_nats::Client,
        name: &str,
        force: bool,
    ) -> Result<Removal, PeerError> {
        let m = membership(client).await?;
        if m.cluster.is_none() {
            return Ok(not_removed(
                "this node's nats-server is not in a JetStream cluster",
            ));
        }
        let Some(peer) = m.peers.iter().find(|p| p.name == name) else {
            return Ok(not_removed("not a member of the JetStream cluster"));
        };
        if (peer.leader || !peer.offline) && !force {
            return Err(PeerError::Online(name.into()));
        }
        let answer = request(
            client,
            "$JS.API.SERVER.REMOVE".into(),
            json!({ "peer": name }),
        )
        .await?;
        match answer.get("error") {
            None if answer["success"] == true => {
                tracing::warn!(peer = %name, forced = force, "removed a server from the JetStream cluster");
                Ok(Removal {
                    removed: true,
                    reason: None,
                })
            }
            Some(e) if e["err_code"].as_u64() == Some(NOT_A_MEMBER) => {
                Ok(not_removed("not a member of the JetStream cluster"))
            }
            _ => Err(PeerError::Refused(answer.to_string())),
        }
    }
}

fn not_removed(reason: &str) -> Removal {
    Removal {
        removed: false,
        reason: Some(reason.into()),
    }
}

/// Server names as nats-server and ha accept them: printable, no spaces, not too long.
fn check_name(name: &str) -> Result<(), PeerError> {
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(PeerError::BadName(name.into()));
    }
    Ok(())
}

/// A system request with a JSON answer.
async fn request(
    client: &async_nats::Client,
    subject: String,
    body: Json,
) -> Result<Json, PeerError> {
    let msg = client
        .request(subject.clone(), body.to_string().into())
        .await
        .map_err(|e| PeerError::Unavailable(format!("{subject}: {e}")))?;
    serde_json::from_slice(&msg.payload)
        .map_err(|e| PeerError::Refused(format!("{subject}: unreadable answer: {e}")))
}

/// Asks this server whether it is clustered and who leads, then the leader for the peers.
async fn membership(client: &async_nats::Client) -> Result<Membership, PeerError> {
    let own_id = client.server_info().server_id;
    let own = request(client, format!("$SYS.REQ.SERVER.{own_id}.JSZ"), json!({})).await?;
    let Some(meta) = own["data"].get("meta_cluster").filter(|m| !m.is_null()) else {
        let name = own["server"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        return Ok(Membership {
            cluster: None,
            leader: name.clone(),
            peers: vec![Peer {
                name,
                leader: true,
                current: true,
                offline: false,
                active_ms: 0,
                lag: 0,
            }],
        });
    };
    let view = if meta["leader"] == own["server"]["name"] {
        own
    } else {
        request(
            client,
            "$SYS.REQ.SERVER.PING.JSZ".into(),
            json!({ "leader_only": true }),
        )
        .await?
    };
    parse_view(&view).ok_or_else(|| PeerError::Unavailable("no JetStream meta leader".into()))
}

/// A meta leader's JSZ answer as a membership list (the leader first).
fn parse_view(view: &Json) -> Option<Membership> {
    let meta = view["data"].get("meta_cluster")?;
    let leader = meta["leader"]
        .as_str()
        .filter(|l| !l.is_empty())?
        .to_string();
    let mut peers = vec![Peer {
        name: leader.clone(),
        leader: true,
        current: true,
        offline: false,
        active_ms: 0,
        lag: 0,
    }];
    for r in meta["replicas"].as_array().into_iter().flatten() {
        peers.push(Peer {
            name: r["name"].as_str().unwrap_or_default().to_string(),
            leader: false,
            current: r["current"].as_bool().unwrap_or(false),
            offline: r["offline"].as_bool().unwrap_or(false),
            active_ms: r["active"].as_u64().unwrap_or(0) / 1_000_000,
            lag: r["lag"].as_u64().unwrap_or(0),
        });
    }
    Some(Membership {
        cluster: meta["name"].as_str().map(str::to_string),
        leader,
        peers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_view_lists_the_leader_first_and_marks_offline_peers() {
        let view = json!({
            "server": {"name": "s1"},
            "data": {"meta_cluster": {
                "name": "c", "leader": "s1",
                "replicas": [
                    {"name": "s2", "current": true, "active": 409369954u64},
                    {"name": "s3", "current": false, "offline": true, "active": 0, "lag": 5}
                ]
            }}
        });
        let m = parse_view(&view).unwrap();
        assert_eq!(m.cluster.as_deref(), Some("c"));
        assert_eq!(m.leader, "s1");
        let names: Vec<_> = m.peers.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2", "s3"]);
        assert!(m.peers[0].leader && !m.peers[1].leader);
        assert_eq!(m.peers[1].active_ms, 409);
        assert!(m.peers[2].offline && !m.peers[2].current);
        assert_eq!(m.peers[2].lag, 5);
    }

    #[test]
    fn no_leader_is_no_view() {
        assert!(parse_view(&json!({"data": {"meta_cluster": {"leader": ""}}})).is_none());
        assert!(parse_view(&json!({"data": {}})).is_none());
    }

    #[test]
    fn names_with_spaces_or_controls_are_refused() {
        assert!(check_name("n3").is_ok());
        assert!(check_name("ha-2.ha.default.svc").is_ok());
        for bad in ["", "a b", "a\nb", &"x".repeat(256)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
