//! Owns reading a config file (`-c FILE`) into `(flag name, value)` pairs.
//! Must not decide precedence or validate values: `config` feeds the pairs through the same
//! parser as the command line, so a file value is checked exactly like a flag.
//! Formats: YAML (`port: 8080`, keys = long flag names) and, for the original's files, the plain
//! format (`port 8080`, one per line, `#` comments).

use std::path::Path;

use super::ConfigError;

/// One setting from the file. `Flag(false)` means "leave the default".
#[derive(Debug, Clone, PartialEq)]
pub enum FileValue {
    Text(String),
    Flag(bool),
}

pub fn read(path: &Path) -> Result<Vec<(String, FileValue)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse(&text).map_err(|reason| ConfigError::File {
        path: path.display().to_string(),
        reason,
    })
}

pub fn parse(text: &str) -> Result<Vec<(String, FileValue)>, String> {
    match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(serde_yaml::Value::Mapping(map)) => map
            .into_iter()
            .map(|(k, v)| {
                let key = match k {
                    serde_yaml::Value::String(s) => s,
                    other => return Err(format!("key {other:?} is not a string")),
                };
                let value = yaml_value(&key, v)?;
                Ok((key, value))
            })
            .collect(),
        Ok(serde_yaml::Value::Null) => Ok(Vec::new()),
        // Not a YAML mapping: the original's plain `name value` lines, or an error.
        Ok(_) => parse_plain(text),
        Err(e) => parse_plain(text).map_err(|_| format!("not valid YAML: {e}")),
    }
}

fn yaml_value(key: &str, v: serde_yaml::Value) -> Result<FileValue, String> {
    use serde_yaml::Value as Y;
    Ok(match v {
        Y::Bool(b) => FileValue::Flag(b),
        Y::Number(n) => FileValue::Text(n.to_string()),
        Y::String(s) => FileValue::Text(s),
        Y::Sequence(items) => {
            let parts: Result<Vec<String>, String> = items
                .into_iter()
                .map(|i| match yaml_value(key, i)? {
                    FileValue::Text(s) => Ok(s),
                    FileValue::Flag(b) => Ok(b.to_string()),
                })
                .collect();
            FileValue::Text(parts?.join(","))
        }
        Y::Null => return Err(format!("{key}: no value")),
        _ => return Err(format!("{key}: expected a string, number, boolean or list")),
    })
}

fn parse_plain(text: &str) -> Result<Vec<(String, FileValue)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once(char::is_whitespace) {
            Some((k, v)) => (k, v.trim()),
            None => (line, ""),
        };
        if key.contains(':') {
            return Err(format!("line {}: cannot read {line:?}", n + 1));
        }
        let key = key.trim_start_matches('-').to_string();
        let value = match value {
            "" | "true" => FileValue::Flag(true),
            "false" => FileValue::Flag(false),
            v => FileValue::Text(v.to_string()),
        };
        out.push((key, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_keys_are_flag_names() {
        let v = parse("port: 9000\nmemory: true\nname: n1\nroutes: [a, b]\n").unwrap();
        assert_eq!(
            v,
            vec![
                ("port".into(), FileValue::Text("9000".into())),
                ("memory".into(), FileValue::Flag(true)),
                ("name".into(), FileValue::Text("n1".into())),
                ("routes".into(), FileValue::Text("a,b".into())),
            ]
        );
    }

    #[test]
    fn plain_format_of_the_original_is_read() {
        let v = parse("# comment\nport 9000\nmemory\nlog-level debug\n").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0], ("port".into(), FileValue::Text("9000".into())));
        assert_eq!(v[1], ("memory".into(), FileValue::Flag(true)));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse("port: [\n").is_err());
        assert!(parse("port:\n").is_err());
    }
}
