//! etcd's `--config-file`: a YAML file of etcd's keys (`name`, `data-dir`,
//! `initial-cluster`, `client-transport-security: {cert-file, ...}`, ...) turned into
//! the `raftkv server` command line it stands for. As etcd: when a config file is
//! given, the other flags and the `ETCD_*` variables are ignored.
//!
//! Only the YAML etcd's sample uses is read (`key: value` lines, one level of nesting
//! for the two `*-transport-security` maps, comments, quoted scalars); a YAML parser
//! dependency for that is not worth it. Anything else is an error naming the line.

/// The nested maps etcd's file has, and the flag prefix of their keys.
const NESTED: [(&str, &str); 2] =
    [("client-transport-security", ""), ("peer-transport-security", "peer-")];

fn scalar(raw: &str) -> &str {
    let v = raw.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('\'') && v.ends_with('\'')) || (v.starts_with('"') && v.ends_with('"')));
    if quoted {
        &v[1..v.len() - 1]
    } else {
        v.split(" #").next().unwrap_or("").trim()
    }
}

/// The flags (`--name=value`, or `--flag` for `true`) a config file's text stands for;
/// `known` says whether `raftkv server` has a flag of that name.
pub fn flags(path: &str, text: &str, known: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut prefix: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        let at = |what: String| format!("--config-file {path}: line {}: {what}", n + 1);
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
            continue;
        }
        let nested = line.starts_with(' ') || line.starts_with('\t');
        let Some((key, value)) = trimmed.split_once(':') else {
            return Err(at(format!("{trimmed:?} is not `key: value`")));
        };
        let (key, value) = (key.trim(), scalar(value));
        if !nested {
            prefix = NESTED.iter().find(|(k, _)| *k == key).map(|(_, p)| *p);
            if prefix.is_some() {
                if !value.is_empty() {
                    return Err(at(format!("{key} is a map; put its keys on indented lines")));
                }
                continue;
            }
        } else if prefix.is_none() {
            return Err(at(format!(
                "indented key {key:?} outside client-/peer-transport-security"
            )));
        }
        let flag = format!("{}{key}", if nested { prefix.unwrap_or("") } else { "" });
        if !known(&flag) {
            return Err(at(format!("unknown key {key:?} (raftkv server has no --{flag} flag)")));
        }
        match value {
            "" | "null" | "~" | "false" => {}
            "true" => out.push(format!("--{flag}")),
            v => out.push(format!("--{flag}={v}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(flag: &str) -> bool {
        ["name", "data-dir", "initial-cluster", "cert-file", "client-cert-auth", "peer-key-file"]
            .contains(&flag)
    }

    #[test]
    fn etcds_keys_become_flags_with_transport_security_prefixed() {
        let text = "# etcd sample\nname: 'm1'\ndata-dir: /var/m1 # comment\n\
            initial-cluster: \"m1=https://127.0.0.1:2380\"\nclient-transport-security:\n  \
            cert-file: /c.crt\n  client-cert-auth: true\npeer-transport-security:\n  \
            key-file: null\n";
        let f = flags("f.yml", text, known).unwrap();
        assert_eq!(
            f,
            [
                "--name=m1",
                "--data-dir=/var/m1",
                "--initial-cluster=m1=https://127.0.0.1:2380",
                "--cert-file=/c.crt",
                "--client-cert-auth"
            ]
        );
    }

    #[test]
    fn unknown_keys_and_other_yaml_are_errors_naming_the_line() {
        let e = flags("f.yml", "name: a\nwal-dir: /w\n", known).unwrap_err();
        assert_eq!(e, "--config-file f.yml: line 2: unknown key \"wal-dir\" (raftkv server has no --wal-dir flag)");
        let e = flags("f.yml", "peer-transport-security:\n  cert-file: x\n", known).unwrap_err();
        assert!(e.contains("line 2") && e.contains("--peer-cert-file"), "{e}");
        let e = flags("f.yml", "- a\n", known).unwrap_err();
        assert!(e.contains("line 1") && e.contains("not `key: value`"), "{e}");
        let e = flags("f.yml", "  name: a\n", known).unwrap_err();
        assert!(e.contains("outside client-/peer-transport-security"), "{e}");
    }
}
