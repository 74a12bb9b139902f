//! Owns reading a docker compose file (`examples/compose/docker-compose.yml`) into what the
//! simulation runs: per service its host name, environment (`env_file`, then `environment`),
//! command, named volumes and health check, turned into a pod template that `pod::Pod` starts
//! the way it starts a StatefulSet's pods — so the compose file is proven without a Docker engine.
//! Must not guess: a compose feature the simulation does not model (build args aside) is an
//! error, not silently ignored.
//! See `tests/compose.rs` for the scenario.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, VolumeMount,
};
use serde_yaml::Value as Yaml;

/// One service of the compose file.
#[derive(Clone, Debug)]
pub struct Service {
    pub name: String,
    pub hostname: String,
    /// `env_file` values first, `environment` over them.
    pub env: Vec<(String, String)>,
    /// `command` (the image's CMD when absent).
    pub command: Option<Vec<String>>,
    /// (named volume, mount path).
    pub volumes: Vec<(String, String)>,
    /// The health check's `CMD` vector.
    pub healthcheck: Vec<String>,
}

/// The services of a compose file, in file order.
pub fn load(path: &Path) -> Result<Vec<Service>> {
    let dir = path.parent().context("compose file without a folder")?;
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut doc: Yaml = serde_yaml::from_str(&text)?;
    doc.apply_merge()?;
    let services = doc["services"]
        .as_mapping()
        .context("compose file without services")?;
    let mut out = Vec::new();
    for (name, s) in services {
        let name = name.as_str().context("service name")?.to_string();
        out.push(service(dir, &name, s).with_context(|| format!("service {name}"))?);
    }
    Ok(out)
}

fn service(dir: &Path, name: &str, s: &Yaml) -> Result<Service> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: String, v: String| {
        env.retain(|(key, _)| *key != k);
        env.push((k, v));
    };
    for file in strings(&s["env_file"])? {
        for (k, v) in env_file(&dir.join(file))? {
            set(k, v);
        }
    }
    match &s["environment"] {
        Yaml::Null => {}
        Yaml::Mapping(m) => {
            for (k, v) in m {
                set(scalar(k)?, scalar(v)?);
            }
        }
        Yaml::Sequence(items) => {
            for i in items {
                let kv = scalar(i)?;
                let (k, v) = kv
                    .split_once('=')
                    .context("environment entry without '='")?;
                set(k.into(), v.into());
            }
        }
        other => bail!("environment is neither a map nor a list: {other:?}"),
    }
    let command = match &s["command"] {
        Yaml::Null => None,
        c => Some(strings(c)?),
    };
    let mut volumes = Vec::new();
    for v in strings(&s["volumes"])? {
        let (source, target) = v.split_once(':').context("volume without ':'")?;
        if source.starts_with('.') || source.starts_with('/') {
            bail!("bind mount {v} is not simulated (use a named volume)");
        }
        volumes.push((source.to_string(), target.to_string()));
    }
    let test = strings(&s["healthcheck"]["test"])?;
    let healthcheck = match test.split_first() {
        Some((cmd, rest)) if cmd == "CMD" => rest.to_vec(),
        _ => bail!("healthcheck.test must be an exec-form [\"CMD\", …] (the image has no shell)"),
    };
    Ok(Service {
        name: name.to_string(),
        hostname: s["hostname"].as_str().unwrap_or(name).to_string(),
        env,
        command,
        volumes,
        healthcheck,
    })
}

/// A scalar or a list of scalars.
fn strings(v: &Yaml) -> Result<Vec<String>> {
    match v {
        Yaml::Null => Ok(Vec::new()),
        Yaml::Sequence(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn scalar(v: &Yaml) -> Result<String> {
    Ok(match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        Yaml::Null => String::new(),
        other => bail!("not a scalar: {other:?}"),
    })
}

/// `KEY=value` lines; blank lines and `#` comments skipped, as compose reads them.
pub fn env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .with_context(|| format!("{}: line without '=': {line}", path.display()))?;
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

impl Service {
    /// The pod template a container engine would run for this service, as the user `uid`.
    pub fn pod_template(&self, uid: Option<i64>) -> PodTemplateSpec {
        let container = Container {
            name: "ha".into(),
            args: self.command.clone(),
            env: Some(
                self.env
                    .iter()
                    .map(|(k, v)| EnvVar {
                        name: k.clone(),
                        value: Some(v.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            volume_mounts: Some(
                self.volumes
                    .iter()
                    .map(|(name, path)| VolumeMount {
                        name: name.clone(),
                        mount_path: path.clone(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![container],
                security_context: Some(PodSecurityContext {
                    run_as_user: uid,
                    run_as_group: uid,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    }

    /// A directory per named volume under `root`, owned by `uid`.
    pub fn volume_dirs(&self, root: &Path, uid: Option<i64>) -> Result<BTreeMap<String, PathBuf>> {
        let mut out = BTreeMap::new();
        for (name, _) in &self.volumes {
            let dir = root.join(name);
            std::fs::create_dir_all(&dir)?;
            if let Some(uid) = uid {
                crate::network::run(
                    std::process::Command::new("chown")
                        .arg(format!("{uid}:{uid}"))
                        .arg(&dir),
                )?;
            }
            out.insert(name.clone(), dir);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_compose_file_is_understood() {
        let dir = tempfile::tempdir().unwrap();
        let src = crate::repo_root().join("examples/compose");
        std::fs::copy(
            src.join("docker-compose.yml"),
            dir.path().join("docker-compose.yml"),
        )
        .unwrap();
        std::fs::copy(src.join("ha.env.example"), dir.path().join("ha.env")).unwrap();
        let services = load(&dir.path().join("docker-compose.yml")).unwrap();
        let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["ha1", "ha2", "ha3"]);
        let ha2 = &services[1];
        let get = |k: &str| {
            ha2.env
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
        };
        // The merged anchor keeps the cluster settings and overrides the name.
        assert_eq!(get("HA_NAME"), Some("ha2"));
        assert_eq!(get("HA_NATS_CLUSTER_PORT"), Some("6222"));
        assert_eq!(get("HA_NATS_USER"), Some("ha"));
        assert_eq!(ha2.volumes, [("ha2-data".to_string(), "/data".to_string())]);
        assert_eq!(ha2.healthcheck[0], "/usr/local/bin/ha");
    }
}
