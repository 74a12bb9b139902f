//! Owns what the simulation knows about the node image: the runtime stage of `Dockerfile.node`
//! (ENV, ENTRYPOINT, CMD, WORKDIR and the binaries it installs), read from the file itself so the
//! simulated container starts the way the real one would.
//! Must not guess: an instruction it cannot parse is an error.
//! See `pod` for how a container's command, args and env are layered on top.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The runtime image of `Dockerfile.node`.
#[derive(Clone, Debug, Default)]
pub struct Image {
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: Option<String>,
    /// Absolute paths of files the image installs with COPY (e.g. `/usr/local/bin/ha`).
    pub files: Vec<String>,
    /// `USER` (`uid[:gid]`), the user the container runs as.
    pub user: Option<String>,
}

impl Image {
    /// Parses the last stage of a Dockerfile.
    pub fn from_dockerfile(path: &Path) -> Result<Image> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let joined = text.replace("\\\n", " ");
        let lines: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let start = lines
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .context("no FROM in Dockerfile")?;
        let mut image = Image::default();
        for line in &lines[start + 1..] {
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "ENV" => image.env.extend(parse_env(rest)?),
                "ENTRYPOINT" => image.entrypoint = parse_exec_form(rest)?,
                "CMD" => image.cmd = parse_exec_form(rest)?,
                "WORKDIR" => image.workdir = Some(rest.to_string()),
                "COPY" => {
                    let dest = rest
                        .split_whitespace()
                        .last()
                        .context("COPY without a destination")?;
                    image.files.push(dest.to_string());
                }
                "USER" => image.user = Some(rest.to_string()),
                "VOLUME" | "EXPOSE" | "LABEL" => {}
                other => bail!("unexpected instruction {other} in the runtime stage"),
            }
        }
        Ok(image)
    }

    /// The numeric user id of `USER`, if the image sets one.
    pub fn user_id(&self) -> Result<Option<i64>> {
        match &self.user {
            None => Ok(None),
            Some(u) => {
                let uid = u.split(':').next().unwrap_or(u);
                uid.parse()
                    .map(Some)
                    .with_context(|| format!("USER {u} is not numeric"))
            }
        }
    }

    /// Directories of the image that hold binaries, with the local file standing in for each.
    pub fn binaries(
        &self,
        local: &dyn Fn(&str) -> Option<PathBuf>,
    ) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for f in &self.files {
            if let Some(name) = f.strip_prefix("/usr/local/bin/") {
                let path = local(name).with_context(|| format!("no local binary for {f}"))?;
                out.push((f.clone(), path));
            }
        }
        Ok(out)
    }
}

fn parse_exec_form(s: &str) -> Result<Vec<String>> {
    serde_json::from_str(s).with_context(|| format!("not an exec-form JSON array: {s}"))
}

fn parse_env(s: &str) -> Result<Vec<(String, String)>> {
    s.split_whitespace()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .with_context(|| format!("ENV entry without '=': {kv}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_dockerfile_runtime_stage_is_understood() {
        let image = Image::from_dockerfile(&crate::repo_root().join("Dockerfile.node")).unwrap();
        assert_eq!(image.entrypoint, vec!["/usr/local/bin/ha"]);
        assert!(
            image
                .files
                .contains(&"/usr/local/bin/nats-server".to_string())
        );
        assert!(image.env.iter().any(|(k, _)| k == "HA_NATS_SERVER_BIN"));
        assert_eq!(image.workdir.as_deref(), Some("/data"));
        assert_eq!(image.user_id().unwrap(), Some(65532));
    }
}
