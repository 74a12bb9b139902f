//! Owns one simulated pod: the first container of a rendered pod template run as a process in the
//! pod's network namespace, with a private mount namespace in which the image's binaries, the
//! per-pod volume (standing in for the PVC), Secrets, ConfigMaps and emptyDirs are bind-mounted
//! at the paths the container spec names, and the environment resolved as the kubelet would
//! (image ENV, envFrom, env with fieldRef/secretKeyRef/configMapKeyRef, `$(VAR)` expansion).
//! Must not rewrite the container's command, args or paths.
//! Invariant: the process is killed (whole process group) when the `Pod` drops.
//! See `cluster` for how pods, DNS names and the Service proxy fit together.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Container, PodTemplateSpec, Secret};

use crate::image::Image;
use crate::network::{Host, run};

/// The objects a pod can reference by name.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    pub config_maps: BTreeMap<String, ConfigMap>,
    pub secrets: BTreeMap<String, Secret>,
}

impl Objects {
    fn config_map_data(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let cm = self
            .config_maps
            .get(name)
            .with_context(|| format!("ConfigMap {name} does not exist"))?;
        Ok(cm.data.clone().unwrap_or_default())
    }

    fn secret_data(&self, name: &str) -> Result<BTreeMap<String, Vec<u8>>> {
        let s = self
            .secrets
            .get(name)
            .with_context(|| format!("Secret {name} does not exist"))?;
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.clone().unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        Ok(out)
    }
}

/// Everything needed to start one pod.
#[derive(Clone, Debug)]
pub struct PodSpecInput {
    pub pod_name: String,
    pub namespace: String,
    pub template: PodTemplateSpec,
    pub objects: Objects,
    pub image: Image,
    /// Local stand-ins for the image's `/usr/local/bin/*` files.
    pub binaries: Vec<(String, PathBuf)>,
    /// The per-pod directory standing in for each volume claim template, by claim name.
    pub claims: BTreeMap<String, PathBuf>,
}

/// A running (or stopped) simulated pod.
pub struct Pod {
    pub name: String,
    pub host: Host,
    input: PodSpecInput,
    scratch: tempfile::TempDir,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Pod {
    /// Prepares the pod's volumes and starts its container.
    pub fn start(input: PodSpecInput, host: Host, log_dir: &Path) -> Result<Pod> {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("{}-", input.pod_name))
            .tempdir()?;
        let mut pod = Pod {
            name: input.pod_name.clone(),
            host,
            log: log_dir.join(format!("{}.log", input.pod_name)),
            input,
            scratch,
            child: None,
        };
        pod.spawn()?;
        Ok(pod)
    }

    /// The container the simulation runs: the one named `ha`, else the first.
    pub fn container(template: &PodTemplateSpec) -> Result<&Container> {
        let spec = template
            .spec
            .as_ref()
            .context("pod template without spec")?;
        spec.containers
            .iter()
            .find(|c| c.name == "ha")
            .or_else(|| spec.containers.first())
            .context("pod template without containers")
    }

    fn spawn(&mut self) -> Result<()> {
        let container = Self::container(&self.input.template)?.clone();
        let env = self.environment(&container)?;
        let expand = |s: &String| expand_vars(s, &env);
        let (command, args) = match (&container.command, &container.args) {
            (Some(c), Some(a)) => (
                c.iter().map(expand).collect(),
                a.iter().map(expand).collect(),
            ),
            (Some(c), None) => (c.iter().map(expand).collect(), Vec::new()),
            (None, Some(a)) => (
                self.input.image.entrypoint.clone(),
                a.iter().map(expand).collect(),
            ),
            (None, None) => (
                self.input.image.entrypoint.clone(),
                self.input.image.cmd.clone(),
            ),
        };
        if command.is_empty() {
            bail!(
                "container {} has no command and the image no ENTRYPOINT",
                container.name
            );
        }
        let mounts = self.mounts(&container)?;
        let workdir = container
            .working_dir
            .clone()
            .or_else(|| self.input.image.workdir.clone())
            .unwrap_or_else(|| "/".into());
        // Inside a private mount namespace: bind every volume, then exec the container's command.
        let mut script = String::from("set -e\n");
        for (source, target) in &mounts {
            script.push_str(&format!(
                "/bin/mount --bind '{}' '{}'\n",
                source.display(),
                target
            ));
        }
        script.push_str(&format!("cd '{workdir}'\n"));
        // Drop to the pod's runAsUser/runAsGroup after mounting, as the container runtime would.
        let sc = self
            .input
            .template
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone());
        let csc = container.security_context.clone();
        let uid = csc
            .as_ref()
            .and_then(|c| c.run_as_user)
            .or(sc.as_ref().and_then(|s| s.run_as_user));
        let gid = csc
            .as_ref()
            .and_then(|c| c.run_as_group)
            .or(sc.as_ref().and_then(|s| s.run_as_group));
        match uid {
            Some(uid) => script.push_str(&format!(
                "exec /usr/bin/setpriv --reuid={uid} --regid={} --clear-groups -- \"$@\"\n",
                gid.unwrap_or(uid)
            )),
            None => script.push_str("exec \"$@\"\n"),
        }
        let log = File::create(&self.log)?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host.netns])
            .args(["unshare", "--mount", "--propagation", "private", "--"])
            .args(["/bin/sh", "-c", &script, "sh"])
            .args(&command)
            .args(&args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        self.child = Some(cmd.spawn().context("start pod process")?);
        Ok(())
    }

    /// The container's environment, layered as the kubelet does.
    fn environment(&self, c: &Container) -> Result<Vec<(String, String)>> {
        let mut env: Vec<(String, String)> = vec![(
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        )];
        let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
            env.retain(|(key, _)| *key != k);
            env.push((k, v));
        };
        for (k, v) in &self.input.image.env {
            set(&mut env, k.clone(), v.clone());
        }
        set(&mut env, "HOSTNAME".into(), self.input.pod_name.clone());
        for from in c.env_from.clone().unwrap_or_default() {
            let prefix = from.prefix.unwrap_or_default();
            if let Some(r) = from.config_map_ref {
                for (k, v) in self.input.objects.config_map_data(&r.name)? {
                    set(&mut env, format!("{prefix}{k}"), v);
                }
            }
            if let Some(r) = from.secret_ref {
                for (k, v) in self.input.objects.secret_data(&r.name)? {
                    set(&mut env, format!("{prefix}{k}"), String::from_utf8(v)?);
                }
            }
        }
        for var in c.env.clone().unwrap_or_default() {
            let value = if let Some(v) = var.value {
                expand_vars(&v, &env)
            } else if let Some(from) = var.value_from {
                if let Some(f) = from.field_ref {
                    match f.field_path.as_str() {
                        "metadata.name" | "spec.hostname" => self.input.pod_name.clone(),
                        "metadata.namespace" => self.input.namespace.clone(),
                        "status.podIP" | "status.hostIP" => self.host.addr.to_string(),
                        "spec.nodeName" => "sim-node".into(),
                        other => bail!("fieldRef {other} is not simulated"),
                    }
                } else if let Some(s) = from.secret_key_ref {
                    let data = self.input.objects.secret_data(&s.name)?;
                    match data.get(&s.key) {
                        Some(v) => String::from_utf8(v.clone())?,
                        None if s.optional == Some(true) => continue,
                        None => bail!("Secret {} has no key {}", s.name, s.key),
                    }
                } else if let Some(m) = from.config_map_key_ref {
                    let data = self.input.objects.config_map_data(&m.name)?;
                    match data.get(&m.key) {
                        Some(v) => v.clone(),
                        None if m.optional == Some(true) => continue,
                        None => bail!("ConfigMap {} has no key {}", m.name, m.key),
                    }
                } else if from.resource_field_ref.is_some() {
                    "0".into()
                } else {
                    bail!("env {} has an unsupported valueFrom", var.name);
                }
            } else {
                String::new()
            };
            set(&mut env, var.name, value);
        }
        Ok(env)
    }

    /// (host source, container path) pairs to bind-mount, image binaries first.
    fn mounts(&self, c: &Container) -> Result<Vec<(PathBuf, String)>> {
        let mut out = Vec::new();
        // The image's /usr/local/bin: a directory of hard links to (or copies of) the locally
        // built binaries. Not symlinks: their targets may lie under a path the pod's own mounts
        // hide (a checkout under /tmp, which the pod's emptyDir covers).
        let bin = self.scratch.path().join("image-bin");
        std::fs::create_dir_all(&bin)?;
        // Readable by the pod's non-root user, as image files and Secret volumes (0644) are.
        std::fs::set_permissions(self.scratch.path(), std::fs::Permissions::from_mode(0o755))?;
        for (image_path, local) in &self.input.binaries {
            let name = Path::new(image_path).file_name().context("binary name")?;
            let link = bin.join(name);
            if !link.exists() {
                std::fs::hard_link(local, &link)
                    .or_else(|_| std::fs::copy(local, &link).map(|_| ()))?;
            }
        }
        if !self.input.binaries.is_empty() {
            out.push((bin, "/usr/local/bin".to_string()));
        }
        let spec = self
            .input
            .template
            .spec
            .as_ref()
            .context("pod template without spec")?;
        let volumes = spec.volumes.clone().unwrap_or_default();
        for m in c.volume_mounts.clone().unwrap_or_default() {
            let source = if let Some(claim) = self.input.claims.get(&m.name) {
                claim.clone()
            } else {
                let v = volumes
                    .iter()
                    .find(|v| v.name == m.name)
                    .with_context(|| format!("volumeMount {} has no volume", m.name))?;
                let dir = self.scratch.path().join("volumes").join(&v.name);
                if !dir.exists() {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::set_permissions(
                        self.scratch.path().join("volumes"),
                        std::fs::Permissions::from_mode(0o755),
                    )?;
                    // emptyDir is writable by the pod; Secret/ConfigMap files are read-only 0644.
                    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777))?;
                    if let Some(s) = &v.secret {
                        let name = s
                            .secret_name
                            .clone()
                            .context("secret volume without name")?;
                        for (k, data) in self.input.objects.secret_data(&name)? {
                            std::fs::write(dir.join(k), data)?;
                        }
                    } else if let Some(cm) = &v.config_map {
                        for (k, data) in self.input.objects.config_map_data(&cm.name)? {
                            std::fs::write(dir.join(k), data)?;
                        }
                    } else if v.empty_dir.is_none() && v.persistent_volume_claim.is_none() {
                        bail!(
                            "volume {} has a kind the simulation does not support",
                            v.name
                        );
                    }
                }
                dir
            };
            let source = match &m.sub_path {
                Some(sub) if !sub.is_empty() => source.join(sub),
                _ => source,
            };
            ensure_mount_point(&m.mount_path, source.is_dir())?;
            out.push((source, m.mount_path.clone()));
        }
        Ok(out)
    }

    /// SIGKILL of the whole pod (the container and its nats-server child).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's process group; failure (already gone) is fine.
            unsafe {
                libc::kill(-(child.id() as i32), libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Stops the pod as the kubelet does: SIGTERM to the container (its nats-server leaves the
    /// cluster gracefully), SIGKILL after `grace`.
    pub fn stop(&mut self, grace: std::time::Duration) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // SAFETY: kill(2) on our own child's process group.
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGTERM);
        }
        let _ = ha_testkit::until(grace, "the pod to stop", || {
            Ok(matches!(child.try_wait(), Ok(Some(_))).then_some(()))
        });
        self.kill();
    }

    /// The pod template it runs.
    pub fn template(&self) -> &PodTemplateSpec {
        &self.input.template
    }

    /// Replaces the pod by one of a new template (a StatefulSet rolling it to a new revision),
    /// on the same volumes.
    pub fn replace(&mut self, template: PodTemplateSpec, objects: Objects) -> Result<()> {
        self.kill();
        self.input.template = template;
        self.input.objects = objects;
        self.spawn()
    }

    /// Starts the container again on the same volumes (a pod restarted on its PVC).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// True while the container process runs.
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The container's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates a missing mount point on the host (an empty directory or file); existing ones are used
/// as they are. Mounts happen in the pod's private mount namespace, so the host never sees them.
fn ensure_mount_point(path: &str, dir: bool) -> Result<()> {
    let p = Path::new(path);
    if p.exists() {
        return Ok(());
    }
    if dir {
        std::fs::create_dir_all(p)?;
    } else {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        File::create(p)?;
    }
    Ok(())
}

/// Kubernetes `$(VAR)` expansion: known variables are replaced, `$$(VAR)` escapes, unknown ones
/// stay as written.
pub fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('(') {
            match tail.find(')') {
                Some(end) => {
                    let name = &tail[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &tail[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = tail;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Runs a command inside `host`'s namespace and returns its stdout.
pub fn exec(host: &Host, program: &str, args: &[&str]) -> Result<String> {
    let out = run(host.command(program).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::expand_vars;

    #[test]
    fn dependent_variables_expand_like_the_kubelet() {
        let env = vec![("A".to_string(), "x".to_string()), ("B".into(), "y".into())];
        assert_eq!(expand_vars("$(A)-$(B)", &env), "x-y");
        assert_eq!(expand_vars("$$(A)", &env), "$(A)");
        assert_eq!(expand_vars("$(C)", &env), "$(C)");
        assert_eq!(expand_vars("a$b", &env), "a$b");
    }
}
