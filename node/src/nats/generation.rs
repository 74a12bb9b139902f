//! Owns the embedded server's name in a JetStream cluster across the life of its store: the node
//! name plus a generation suffix (`ha-2` → `ha-2-gmj0k3f2a`), made up when the JetStream store is
//! new and kept in the store directory, so that restarts keep the name and a node that comes back
//! on an empty volume joins as a new server.
//! Why: a server's JetStream (Raft) identity comes from its name, so a pod scaled away (its peer
//! removed) and added back on a blank volume under the same name would rejoin as the removed
//! peer with none of its state; a new generation is a new server, which the meta group adds
//! cleanly. (A server that returns with its old store under a removed name is kept out for a
//! while by nats-server; see tests/tests/peers.rs.)
//! Must not rename a server that already has a store: a store without the name file (made before
//! generations existed) keeps the plain node name, and the file is written to say so.
//! See `server` (which asks for the name before the first start) and docs/kubernetes.md
//! ("Scaling").

use std::io::Write;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// The file in the JetStream store directory that keeps the server name.
pub const NAME_FILE: &str = "ha-server-name";

/// The separator between a node name and its generation.
pub const SEPARATOR: &str = "-g";

/// The server name for node `node` whose JetStream store is `store_dir`: the one kept there,
/// or a new generation (written there) when the store is new or empty.
pub fn server_name(node: &str, store_dir: &Path) -> std::io::Result<String> {
    let file = store_dir.join(NAME_FILE);
    match std::fs::read_to_string(&file) {
        Ok(kept) if belongs_to(node, kept.trim()) => return Ok(kept.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let name = if has_store(store_dir)? {
        node.to_string()
    } else {
        format!("{node}{SEPARATOR}{}", generation())
    };
    std::fs::create_dir_all(store_dir)?;
    write_durably(store_dir, &file, &name)?;
    Ok(name)
}

/// `name` is `node` or one of its generations.
fn belongs_to(node: &str, name: &str) -> bool {
    name == node
        || name.strip_prefix(node).is_some_and(|rest| {
            rest.strip_prefix(SEPARATOR)
                .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric()))
        })
}

/// The directory holds anything but the name file (a JetStream store made without one).
fn has_store(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            for e in entries {
                if e?.file_name() != NAME_FILE {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The time in milliseconds, base 36: short, and later generations sort after earlier ones.
fn generation() -> String {
    let mut n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes `name` to `file` through a temporary file, synced, then renamed: a crash leaves
/// either no name (the store is still empty) or the whole name.
fn write_durably(dir: &Path, file: &Path, name: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{NAME_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(format!("{name}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_store_gets_a_new_generation_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("js");
        let first = server_name("ha-2", &store).unwrap();
        assert!(first.starts_with("ha-2-g"), "{first}");
        assert!(belongs_to("ha-2", &first));
        // A restart with the store in place keeps the name, whatever JetStream wrote since.
        std::fs::create_dir_all(store.join("jetstream")).unwrap();
        assert_eq!(server_name("ha-2", &store).unwrap(), first);
    }

    #[test]
    fn an_emptied_store_gets_a_later_generation() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("js");
        let first = server_name("ha-2", &store).unwrap();
        std::fs::remove_dir_all(&store).unwrap();
        // Milliseconds tell generations apart; make sure one passed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let second = loop {
            let n = server_name("ha-2", &store).unwrap();
            if n != first || std::time::Instant::now() > deadline {
                break n;
            }
            std::fs::remove_dir_all(&store).unwrap();
        };
        assert_ne!(second, first);
        assert!(second > first, "{second} sorts after {first}");
    }

    #[test]
    fn a_store_made_before_generations_keeps_the_plain_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("jetstream")).unwrap();
        assert_eq!(server_name("ha-2", dir.path()).unwrap(), "ha-2");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(NAME_FILE)).unwrap(),
            "ha-2\n"
        );
        assert_eq!(server_name("ha-2", dir.path()).unwrap(), "ha-2");
    }

    #[test]
    fn a_name_kept_for_another_node_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(NAME_FILE), "ha-20-gabc\n").unwrap();
        // Only the name file: the store is empty, so a new generation of this node's name.
        let n = server_name("ha-2", dir.path()).unwrap();
        assert!(n.starts_with("ha-2-g") && n != "ha-20-gabc", "{n}");
        assert!(!belongs_to("ha-2", "ha-2-g"));
        assert!(!belongs_to("ha-2", "ha-2-g a"));
        assert!(!belongs_to("ha-2", "ha-2x"));
    }
}
