//! A local read replica in a Rust program (docs/read-replicas.md shows this file): loads the
//! ha-sync extension into rusqlite, follows the cluster into ./replica.db, waits until it has
//! caught up and prints the users. Run it next to libha_sync.so:
//! `cargo run -p ha-tests --example read_replica -- nats://localhost:4222`.

use std::time::Duration;

use rusqlite::{Connection, LoadExtensionGuard};

fn main() -> rusqlite::Result<()> {
    let servers = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://localhost:4222".to_string());
    let conn = Connection::open("replica.db")?;
    // SAFETY: libha_sync is a trusted extension; loading is switched off again right after.
    unsafe {
        let _guard = LoadExtensionGuard::new(&conn)?;
        conn.load_extension("./libha_sync", None::<&str>)?;
    }
    conn.execute_batch(&format!(
        "CREATE VIRTUAL TABLE temp.ha USING HA(servers='{servers}', timeout=5000)"
    ))?;
    conn.execute(
        "INSERT INTO temp.ha(subject, durable, policy) VALUES (?1, ?2, 'all')",
        ["ha_replication.ha_db", "replica_rs"],
    )?;
    // `pending`: messages not applied yet (NULL until the stream has answered).
    while conn.query_row("SELECT pending FROM temp.ha", [], |r| {
        r.get::<_, Option<i64>>(0)
    })? != Some(0)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let users: Vec<(i64, String)> = conn
        .prepare("SELECT id, name FROM users ORDER BY id")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    println!("{users:?}");
    Ok(())
}
