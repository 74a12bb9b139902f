//! Backups in the status: failing ones (status, condition, Event) and ones that work again.

use super::{condition, reconcile_in};
use crate::backups::BACKUP_FAILING;
use crate::crd::HaCluster;
use crate::fixtures::{NodeBehaviour, NodeMock, Scenario, World};

#[tokio::test]
async fn failing_backups_are_reported_in_status_a_condition_and_an_event() {
    let node = NodeMock::start(NodeBehaviour {
        backup: serde_json::json!({
            "url": "s3://backups/db", "uploader": true,
            "last_upload_time": "2026-01-01T11:00:00Z", "last_snapshot_seq": 30,
            "archived_seq": 41, "archive_lag_seconds": 0.5,
            "last_error": "PUT s3://backups/db: 403 AccessDenied", "failing": true
        }),
        ..NodeBehaviour::default()
    })
    .await;
    let c = HaCluster::test()
        .with_backup()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    let world = World::running(3).with_events(&["BackupFailing"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let status = recorded.status();
    let b = status.backup.clone().expect("status.backup");
    assert_eq!(b.last_upload_time.as_deref(), Some("2026-01-01T11:00:00Z"));
    assert_eq!((b.last_snapshot_seq, b.archived_seq), (Some(30), Some(41)));
    assert!(
        b.last_error
            .as_deref()
            .unwrap()
            .contains("403 AccessDenied"),
        "{b:?}"
    );
    let failing = condition(&status, BACKUP_FAILING);
    assert_eq!(failing.status, "True");
    assert!(failing.message.contains("db-0: PUT"), "{failing:?}");
    // Backups failing is not the cluster failing.
    assert_eq!(status.phase.as_deref(), Some("Running"));
}

#[tokio::test]
async fn backups_that_work_again_are_said_once() {
    let node = NodeMock::start(NodeBehaviour {
        backup: serde_json::json!({
            "url": "s3://backups/db", "uploader": true,
            "last_upload_time": "2026-01-01T11:59:00Z", "last_snapshot_seq": 42,
            "archived_seq": 42, "archive_lag_seconds": 0.1, "last_error": null, "failing": false
        }),
        ..NodeBehaviour::default()
    })
    .await;
    let mut c = HaCluster::test()
        .with_backup()
        .http_port(node.port)
        .running_with_nodes(&["db-0", "db-1", "db-2"]);
    if let Some(s) = c.status.as_mut() {
        s.conditions.push(crate::status::condition(
            &[],
            BACKUP_FAILING,
            "True",
            "BackupFailing",
            "db-0: 403".into(),
            Some(1),
            crate::fixtures::now(),
        ));
    }
    let world = World::running(3).with_events(&["BackupRecovered"]);
    let (result, recorded, _) = reconcile_in(c.clone(), Scenario::Apply(c, Box::new(world))).await;
    result.unwrap();
    let status = recorded.status();
    assert_eq!(condition(&status, BACKUP_FAILING).status, "False");
    assert_eq!(status.backup.unwrap().last_snapshot_seq, Some(42));
}
