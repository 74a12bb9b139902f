//! Owns the questions tests ask one node over HTTP and the waits built on them: taking a
//! snapshot, waiting for rows, for `/readyz` to refuse with a reason, for the stream to be
//! applied. Shared so that each test file does not grow its own copy.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value as Json, json};

use crate::cluster::{TestCluster, status};
use crate::{TestNode, eventually};

/// What `POST /snapshot` answered.
#[derive(Debug)]
pub struct SnapshotTaken {
    pub status: u16,
    /// The `X-Sequence` header (`u64::MAX` when absent).
    pub header_seq: u64,
    pub body: Json,
}

impl SnapshotTaken {
    /// The snapshot's sequence from the body; panics with the answer unless it is a 200 with one.
    pub fn seq(&self) -> u64 {
        assert_eq!(self.status, 200, "POST /snapshot: {}", self.body);
        self.body["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("no seq in {} ({})", self.body, self.status))
    }
}

impl SnapshotTaken {
    /// (status, `X-Sequence`, body).
    pub fn parts(self) -> (u16, u64, Json) {
        (self.status, self.header_seq, self.body)
    }
}

impl TestNode {
    /// `POST /snapshot`.
    pub async fn take_snapshot(&self) -> Result<SnapshotTaken> {
        let r = self.client.post(self.url("/snapshot")).send().await?;
        let status = r.status().as_u16();
        let header_seq = r
            .headers()
            .get("x-sequence")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(u64::MAX);
        let body = r.json().await.unwrap_or(Json::Null);
        Ok(SnapshotTaken {
            status,
            header_seq,
            body,
        })
    }

    /// Waits until `sql` returns exactly `want` (as JSON rows).
    pub async fn wait_rows(&self, sql: &str, want: &Json, timeout: Duration) -> Result<()> {
        let r = eventually(timeout, &format!("{sql} to return {want}"), || async {
            let rows = self.rows(sql).await.ok()?;
            (&json!(rows) == want).then_some(())
        })
        .await;
        if let Err(e) = r {
            bail!("{e}: last {:?}", self.rows(sql).await);
        }
        Ok(())
    }

    /// Waits until `/readyz` is 503 with a reason containing `what`; returns the body.
    pub async fn wait_unready(&self, what: &str, timeout: Duration) -> Result<String> {
        let url = self.url("/readyz");
        let r = eventually(timeout, &format!("/readyz 503 saying {what:?}"), || async {
            let r = self.client.get(&url).send().await.ok()?;
            let code = r.status().as_u16();
            let body = r.text().await.ok()?;
            (code == 503 && body.contains(what)).then_some(body)
        })
        .await;
        match r {
            Ok(body) => Ok(body),
            Err(e) => bail!("{e}\n{}", self.log_text()),
        }
    }
}

impl TestCluster {
    /// Waits until `n` has applied everything the stream holds (and it holds something);
    /// returns the applied sequence. Unlike `wait_caught_up`, the head is asked again each
    /// time, so writes that race the wait are waited for too.
    pub async fn settle(&self, n: &TestNode, timeout: Duration) -> Result<u64> {
        let js = self.jetstream().await?;
        eventually(timeout, "the node to apply the stream", || {
            let js = js.clone();
            async move {
                let mut s = js.get_stream("ha_replication").await.ok()?;
                let head = s.info().await.ok()?.state.last_sequence;
                let applied = status(n).await.ok()?["replication"]["applied_seq"].as_u64()?;
                (applied >= head && head > 0).then_some(applied)
            }
        })
        .await
    }
}
