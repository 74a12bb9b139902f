//! Owns a simulated HaCluster: renders it with the operator's own `render`, gives every pod of the
//! StatefulSet a network namespace, an address and DNS names, runs the client Service as a
//! readiness-aware forwarder, and offers a client namespace from which tests use psql and curl
//! through the Service's name — as a user inside the Kubernetes cluster would.
//! Must not build objects itself: what runs is what `ha_operator::render` returns.
//! Invariant: pods and the Service forwarder stop before the network is deleted (field order).
//! See `pod` for one pod and `network` for namespaces and partitions.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ha_operator::crd::HaCluster;
use ha_operator::render::{Credentials, Rendered, render};
use k8s_openapi::api::core::v1::{Container, PodTemplateSpec, Secret};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::image::Image;
use crate::network::{Host, Network};
use crate::pod::{Objects, Pod, PodSpecInput, exec};
use crate::{built_binary, repo_root};
use ha_testkit::until;

/// A running simulation. Field order matters: pods and the forwarder drop before the network.
pub struct SimCluster {
    pub pods: Vec<Pod>,
    service: Option<Child>,
    net: Network,
    pub client: Host,
    service_host: Host,
    pub namespace: String,
    pub cluster: HaCluster,
    pub rendered: Rendered,
    credentials: Credentials,
    extra_secrets: Vec<Secret>,
    image: Image,
    data_root: tempfile::TempDir,
    pub log_dir: PathBuf,
}

const POD_OCTET: u8 = 10;

impl SimCluster {
    /// Renders `cluster`, creates the network and starts every replica. `prefix` (≤ 5 chars)
    /// names the namespaces; `extra_secrets` are Secrets the user would have created (e.g. TLS).
    pub fn start(
        cluster: HaCluster,
        namespace: &str,
        credentials: Credentials,
        extra_secrets: Vec<Secret>,
        prefix: &str,
    ) -> Result<SimCluster> {
        let rendered = render(&cluster, namespace, &credentials)?;
        let mut net = Network::create(prefix)?;
        let client = net.add_host("cl", 200)?;
        let service_host = net.add_host("svc", 100)?;
        let data_root = tempfile::Builder::new().prefix("ha-e2e-").tempdir()?;
        let log_dir = data_root.path().join("logs");
        std::fs::create_dir_all(&log_dir)?;
        let image = Image::from_dockerfile(&repo_root().join("Dockerfile.node"))?;
        let mut sim = SimCluster {
            pods: Vec::new(),
            service: None,
            net,
            client,
            service_host,
            namespace: namespace.to_string(),
            cluster,
            rendered,
            credentials,
            extra_secrets,
            image,
            data_root,
            log_dir,
        };
        let replicas = sim.replicas();
        sim.scale_to(replicas)?;
        Ok(sim)
    }

    fn replicas(&self) -> usize {
        self.rendered
            .stateful_set
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(1)
            .max(0) as usize
    }

    fn sts_name(&self) -> String {
        self.rendered
            .stateful_set
            .metadata
            .name
            .clone()
            .unwrap_or_default()
    }

    /// Name of pod `i` (`<statefulset>-<i>`).
    pub fn pod_name(&self, i: usize) -> String {
        format!("{}-{i}", self.sts_name())
    }

    /// The fully qualified DNS name of pod `i` behind the headless Service.
    pub fn pod_dns(&self, i: usize) -> String {
        let headless = self
            .rendered
            .stateful_set
            .spec
            .as_ref()
            .and_then(|s| s.service_name.clone())
            .unwrap_or_default();
        format!(
            "{}.{headless}.{}.svc.cluster.local",
            self.pod_name(i),
            self.namespace
        )
    }

    /// The client Service's DNS name.
    pub fn service_dns(&self) -> String {
        format!(
            "{}.{}.svc.cluster.local",
            self.rendered
                .client_service
                .metadata
                .name
                .clone()
                .unwrap_or_default(),
            self.namespace
        )
    }

    fn objects(&self) -> Objects {
        let mut o = Objects::default();
        let cm = self.rendered.config_map.clone();
        o.config_maps
            .insert(cm.metadata.name.clone().unwrap_or_default(), cm);
        for s in std::iter::once(&self.rendered.secret).chain(&self.extra_secrets) {
            o.secrets
                .insert(s.metadata.name.clone().unwrap_or_default(), s.clone());
        }
        o
    }

    /// The rendered StatefulSet's pod template.
    fn template(&self) -> Result<&PodTemplateSpec> {
        Ok(&self
            .rendered
            .stateful_set
            .spec
            .as_ref()
            .context("StatefulSet without spec")?
            .template)
    }

    fn container(&self) -> Result<Container> {
        Ok(Pod::container(self.template()?)?.clone())
    }

    /// A container port by name or number.
    fn port(&self, p: &IntOrString) -> Result<u16> {
        match p {
            IntOrString::Int(n) => Ok(*n as u16),
            IntOrString::String(name) => self
                .container()?
                .ports
                .unwrap_or_default()
                .iter()
                .find(|cp| cp.name.as_deref() == Some(name))
                .map(|cp| cp.container_port as u16)
                .with_context(|| format!("no container port named {name}")),
        }
    }

    /// The readiness probe's (port, path).
    fn readiness(&self) -> Result<(u16, String)> {
        let probe = self
            .container()?
            .readiness_probe
            .and_then(|p| p.http_get)
            .context("container without an HTTP readiness probe")?;
        Ok((
            self.port(&probe.port)?,
            probe.path.unwrap_or_else(|| "/".into()),
        ))
    }

    /// Renders `cluster` again (e.g. more replicas) and starts the pods that do not exist yet;
    /// running pods keep going, as a StatefulSet scale leaves existing pods alone. Pods beyond
    /// the replicas stop, and their volumes go (`whenScaled: Delete`).
    pub fn apply(&mut self, cluster: HaCluster) -> Result<()> {
        self.rendered = render(&cluster, &self.namespace, &self.credentials)?;
        self.cluster = cluster;
        let replicas = self.replicas();
        while self.pods.len() > replicas {
            let mut pod = self.pods.pop().context("a pod")?;
            pod.stop(Duration::from_secs(30));
            for entry in std::fs::read_dir(self.data_root.path())? {
                let path = entry?.path();
                let named = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with(&format!("-{}", pod.name)));
                if named && path.is_dir() {
                    std::fs::remove_dir_all(&path)?;
                }
            }
        }
        self.scale_to(replicas)
    }

    /// Pods whose template differs from the rendered StatefulSet's (a pending rolling update).
    pub fn outdated(&self) -> Vec<usize> {
        let Some(spec) = self.rendered.stateful_set.spec.as_ref() else {
            return Vec::new();
        };
        (0..self.pods.len())
            .filter(|&i| self.pods[i].template() != &spec.template)
            .collect()
    }

    /// Rolls pod `i` to the rendered template (a StatefulSet replacing it).
    pub fn roll(&mut self, i: usize) -> Result<()> {
        let template = self.template()?.clone();
        let objects = self.objects();
        self.pods[i].stop(Duration::from_secs(30));
        self.pods[i].replace(template, objects)
    }

    fn scale_to(&mut self, replicas: usize) -> Result<()> {
        if self.pods.len() >= replicas {
            return self.start_service();
        }
        if replicas > 200 {
            bail!("{replicas} replicas is more than the simulated network has addresses for");
        }
        let mut new_hosts = Vec::new();
        for i in self.pods.len()..replicas {
            new_hosts.push((i, self.net.add_host(&format!("p{i}"), POD_OCTET + i as u8)?));
        }
        self.write_dns(replicas)?;
        let template = self.template()?.clone();
        let claims: Vec<String> = self
            .rendered
            .stateful_set
            .spec
            .as_ref()
            .and_then(|s| s.volume_claim_templates.clone())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let binaries = self.image.binaries(&crate::local_binary)?;
        for (i, host) in new_hosts {
            let pod_name = self.pod_name(i);
            let mut claim_dirs = BTreeMap::new();
            for c in &claims {
                // The PVC `<claim>-<pod>`: survives pod restarts, like a real claim.
                let dir = self.data_root.path().join(format!("{c}-{pod_name}"));
                std::fs::create_dir_all(&dir)?;
                chown_to_pod_user(&dir, &template)?;
                claim_dirs.insert(c.clone(), dir);
            }
            let input = PodSpecInput {
                pod_name,
                namespace: self.namespace.clone(),
                template: template.clone(),
                objects: self.objects(),
                image: self.image.clone(),
                binaries: binaries.clone(),
                claims: claim_dirs,
            };
            self.pods.push(Pod::start(input, host, &self.log_dir)?);
        }
        self.start_service()
    }

    /// Maps every pod's and Service's DNS names in every namespace's /etc/hosts.
    fn write_dns(&mut self, replicas: usize) -> Result<()> {
        let ns = self.namespace.clone();
        for i in 0..replicas {
            let addr = std::net::Ipv4Addr::new(198, 51, 100, POD_OCTET + i as u8);
            let fqdn = self.pod_dns(i);
            let short: Vec<&str> = fqdn.split('.').collect();
            // <pod>.<svc>.<ns>.svc.cluster.local, <pod>.<svc>.<ns>.svc, <pod>.<svc>.<ns>, <pod>.<svc>
            for n in [6, 4, 3, 2] {
                self.net.map_name(&short[..n].join("."), addr);
            }
            self.net.map_name(&self.pod_name(i), addr);
        }
        let svc = self.service_host.addr;
        let name = self
            .rendered
            .client_service
            .metadata
            .name
            .clone()
            .unwrap_or_default();
        for n in [
            format!("{name}.{ns}.svc.cluster.local"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}"),
            name.clone(),
        ] {
            self.net.map_name(&n, svc);
        }
        self.net.write_hosts()
    }

    /// (Re)starts the client Service's forwarder with the current pods as endpoints.
    fn start_service(&mut self) -> Result<()> {
        if let Some(mut old) = self.service.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        let (ready_port, ready_path) = self.readiness()?;
        let mut cmd = self
            .service_host
            .command(built_binary("ha-e2e-proxy").to_str().context("path")?);
        cmd.args(["--ready", &format!("{ready_port}:{ready_path}")]);
        for p in self
            .rendered
            .client_service
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default()
        {
            let target = match &p.target_port {
                Some(t) => self.port(t)?,
                None => p.port as u16,
            };
            cmd.args(["--map", &format!("{}:{target}", p.port)]);
        }
        for pod in &self.pods {
            cmd.arg(pod.host.addr.to_string());
        }
        let log = std::fs::File::create(self.log_dir.join("service.log"))?;
        cmd.stdout(Stdio::null()).stderr(log);
        self.service = Some(cmd.spawn().context("start the Service forwarder")?);
        Ok(())
    }

    /// Waits until pod `i` passes its readiness probe (probed from inside the pod, as the kubelet).
    pub fn wait_ready(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let (port, path) = self.readiness()?;
        let host = self.pods[i].host.clone();
        let url = format!("http://{}:{port}{path}", host.addr);
        let name = self.pods[i].name.clone();
        let res = until(timeout, &format!("{name} ready"), || {
            if !self.pods[i].running() {
                bail!("{name} exited");
            }
            Ok(exec(&host, "curl", &["-fsS", "-m", "2", &url])
                .ok()
                .map(|_| ()))
        });
        res.with_context(|| format!("log of {name}:\n{}", tail(&self.pods[i].log_text())))
    }

    /// The bearer token the nodes require: the generated one, unless the spec names its own
    /// Secret (not simulated) or turns it off.
    pub fn token(&self) -> Option<String> {
        let http = &self.cluster.spec.http;
        (http.token_secret.is_none() && !http.disable_token)
            .then(|| self.credentials.http_token.clone())
    }

    /// HTTP from the client namespace: `curl` with the cluster's token if any; returns the body.
    pub fn curl(&self, url: &str, body: Option<&str>) -> Result<String> {
        let auth = self.token().map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-sS", "-m", "10", "-f", url];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        if let Some(b) = body {
            args.extend(["-H", "content-type: application/json", "--data-binary", b]);
        }
        exec(&self.client, "curl", &args)
    }

    /// `curl -X METHOD` from the client namespace with the cluster's token; returns the body.
    pub fn curl_method(&self, method: &str, url: &str) -> Result<String> {
        let auth = self.token().map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["-sS", "-m", "10", "-f", "-X", method, url];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        exec(&self.client, "curl", &args)
    }

    /// `psql` from the client namespace against `host` with the generated credentials.
    pub fn psql(&self, host: &str, sql: &str) -> Result<String> {
        let port = self.cluster.spec.postgres.port.to_string();
        let out = crate::network::run(
            self.client
                .command("psql")
                .args(["-h", host, "-p", &port, "-U", &self.credentials.pg_user])
                .args(["-d", "ha", "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
                .env("PGPASSWORD", &self.credentials.pg_password)
                .env("PGCONNECT_TIMEOUT", "5")
                .env("PGSSLMODE", "prefer"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Isolates pod `i` from every other host.
    pub fn partition(&self, i: usize) -> Result<()> {
        self.net.partition(&self.pods[i].host)
    }

    /// Ends the partition of pod `i`.
    pub fn heal(&self, i: usize) -> Result<()> {
        self.net.heal(&self.pods[i].host)
    }

    /// The last lines of every pod's log, for failure messages.
    pub fn logs(&self) -> String {
        self.pods
            .iter()
            .map(|p| format!("----- {} -----\n{}", p.name, tail(&p.log_text())))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for SimCluster {
    fn drop(&mut self) {
        if let Some(mut service) = self.service.take() {
            let _ = service.kill();
            let _ = service.wait();
        }
        for pod in &mut self.pods {
            pod.kill();
        }
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Gives the volume to the pod's user (`runAsUser`/`fsGroup`), as a volume with fsGroup would be.
fn chown_to_pod_user(dir: &std::path::Path, template: &PodTemplateSpec) -> Result<()> {
    let sc = template
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone());
    let uid = sc.as_ref().and_then(|s| s.run_as_user);
    let gid = sc.as_ref().and_then(|s| s.fs_group.or(s.run_as_group));
    if uid.is_some() || gid.is_some() {
        let spec = format!(
            "{}:{}",
            uid.map(|u| u.to_string()).unwrap_or_default(),
            gid.map(|g| g.to_string()).unwrap_or_default()
        );
        crate::network::run(
            Command::new("chown")
                .arg(spec.trim_end_matches(':'))
                .arg(dir),
        )?;
    }
    Ok(())
}
