//! etcd's `--config-file`: a YAML file of etcd's keys (`name`, `data-dir`,
//! `initial-cluster`, `client-transport-security: {cert-file, ...}`, ...) turned into
//! the `raftkv server` command line it stands for. As etcd: when a config file is
//! given, the other flags and the `ETCD_*` variables are ignored.
//!
//! Only the YAML etcd's sample uses is read (`key: value` lines, one level of nesting
//! for the two `*-transport-security` maps, comments, quoted scalars, flow lists such as
//! `log-outputs: [stderr]`); a YAML parser dependency for that is not worth it. Anything
//! else is an error naming the line, and every line is checked: all errors at once.
//! etcd's sample file lists keys raftkv has no flag for (`wal-dir`, `proxy`...): at
//! etcd's default (or empty) they are accepted and ignored, at another value refused.

/// The nested maps etcd's file has, and the flag prefix of their keys.
const NESTED: [(&str, &str); 2] =
    [("client-transport-security", ""), ("peer-transport-security", "peer-")];

/// etcd keys raftkv has no flag for, accepted at these values only (what etcd's sample
/// file sets them to: features off, or etcd's default).
const ETCD_DEFAULTS: &[(&str, &[&str])] = &[
    ("wal-dir", &[]),
    ("max-snapshots", &["5"]),
    ("max-wals", &["5"]),
    ("discovery", &[]),
    ("discovery-fallback", &["proxy"]),
    ("discovery-proxy", &[]),
    ("discovery-srv", &[]),
    ("proxy", &["off"]),
    ("proxy-failure-wait", &["5000"]),
    ("proxy-refresh-interval", &["30000"]),
    ("proxy-dial-timeout", &["1000"]),
    ("proxy-write-timeout", &["5000"]),
    ("proxy-read-timeout", &["0"]),
    ("debug", &["false"]),
    ("force-new-cluster", &["false"]),
    ("auto-tls", &["false"]),
    ("peer-auto-tls", &["false"]),
    ("enable-grpc-gateway", &["true"]),
];

/// A flow list (`[a, b]`) as a flag's comma-separated value; other values unchanged.
fn list(value: &str) -> String {
    match value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
        Some(items) => items.split(',').map(scalar).collect::<Vec<_>>().join(","),
        None => value.to_string(),
    }
}

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

/// The flags (`--name=value`) a config file's text stands for; `known` says whether
/// `raftkv server` has a flag of that name. An error lists every bad line, one a line.
pub fn flags(path: &str, text: &str, known: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    let mut prefix: Option<&str> = None;
    for (n, line) in text.lines().enumerate() {
        match line_flag(line, &mut prefix, &known) {
            Ok(Some(flag)) => out.push(flag),
            Ok(None) => {}
            Err(what) => errors.push(format!("--config-file {path}: line {}: {what}", n + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors.join("\n"))
    }
}

/// The flag one line stands for, if any; `prefix` is the map the line is in.
fn line_flag(
    line: &str,
    prefix: &mut Option<&'static str>,
    known: impl Fn(&str) -> bool,
) -> Result<Option<String>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
        return Ok(None);
    }
    let nested = line.starts_with(' ') || line.starts_with('\t');
    let Some((key, value)) = trimmed.split_once(':') else {
        return Err(format!("{trimmed:?} is not `key: value`"));
    };
    let (key, value) = (key.trim(), scalar(value));
    if !nested {
        *prefix = NESTED.iter().find(|(k, _)| *k == key).map(|(_, p)| *p);
        if prefix.is_some() {
            if !value.is_empty() {
                return Err(format!("{key} is a map; put its keys on indented lines"));
            }
            return Ok(None);
        }
    } else if prefix.is_none() {
        return Err(format!("indented key {key:?} outside client-/peer-transport-security"));
    }
    let flag = format!("{}{key}", if nested { prefix.unwrap_or("") } else { "" });
    let empty = matches!(value, "" | "null" | "~" | "[]" | "''" | "\"\"");
    if let Some((_, defaults)) = ETCD_DEFAULTS.iter().find(|(k, _)| *k == flag) {
        if empty || defaults.contains(&value) {
            return Ok(None);
        }
        let default = match defaults.first() {
            Some(d) => format!("{d} (etcd's default)"),
            None => "empty".to_string(),
        };
        return Err(format!(
            "key {key:?} is {value:?}: raftkv has no --{flag}; only {default} is accepted"
        ));
    }
    if !known(&flag) {
        return Err(format!("unknown key {key:?} (raftkv server has no --{flag} flag)"));
    }
    Ok((!empty).then(|| format!("--{flag}={}", list(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(flag: &str) -> bool {
        [
            "name",
            "data-dir",
            "initial-cluster",
            "cert-file",
            "client-cert-auth",
            "peer-key-file",
            "cors",
        ]
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
                "--client-cert-auth=true"
            ]
        );
    }

    #[test]
    fn cors_is_a_real_key_and_empty_leaves_etcds_default() {
        let f = flags("f.yml", "cors: 'http://a.example:80,http://b.example:8080'\n", known);
        assert_eq!(f.unwrap(), ["--cors=http://a.example:80,http://b.example:8080"]);
        assert_eq!(flags("f.yml", "cors: '*'\n", known).unwrap(), ["--cors=*"]);
        // etcd's sample file has `cors:` empty: etcd keeps its default, *.
        assert!(flags("f.yml", "cors:\n", known).unwrap().is_empty());
    }

    #[test]
    fn unknown_keys_and_other_yaml_are_errors_naming_the_line() {
        let e = flags("f.yml", "name: a\nsnap-dir: /w\n", known).unwrap_err();
        assert_eq!(e, "--config-file f.yml: line 2: unknown key \"snap-dir\" (raftkv server has no --snap-dir flag)");
        let e = flags("f.yml", "peer-transport-security:\n  cert-file: x\n", known).unwrap_err();
        assert!(e.contains("line 2") && e.contains("--peer-cert-file"), "{e}");
        let e = flags("f.yml", "- a\n", known).unwrap_err();
        assert!(e.contains("line 1") && e.contains("not `key: value`"), "{e}");
        let e = flags("f.yml", "  name: a\n", known).unwrap_err();
        assert!(e.contains("outside client-/peer-transport-security"), "{e}");
    }

    #[test]
    fn every_bad_line_is_reported_and_etcds_sample_keys_at_their_defaults_pass() {
        let text = "name: a\nwal-dir:\nmax-wals: 5\nproxy: 'off'\nfoo: 1\nbar: 2\n\
            peer-transport-security:\n  auto-tls: false\n  baz: x\ndiscovery: https://d\n\
            client-cert-auth: false\ndata-dir: [x, 'y']\n";
        let e = flags("f.yml", text, known).unwrap_err();
        let lines: Vec<&str> = e.lines().collect();
        assert_eq!(lines.len(), 4, "{e}");
        assert!(lines[0].contains("line 5: unknown key \"foo\""), "{e}");
        assert!(lines[1].contains("line 6: unknown key \"bar\""), "{e}");
        assert!(lines[2].contains("line 9: unknown key \"baz\""), "{e}");
        assert!(lines[3].contains("line 10: key \"discovery\" is \"https://d\""), "{e}");
        assert!(lines[3].contains("only empty is accepted"), "{e}");
        let good = "name: a\nmax-wals: 5\nclient-cert-auth: false\ndata-dir: [x, 'y']\n";
        let f = flags("f.yml", good, known).unwrap();
        assert_eq!(f, ["--name=a", "--client-cert-auth=false", "--data-dir=x,y"]);
        let e = flags("f.yml", "max-snapshots: 9\n", known).unwrap_err();
        assert!(e.contains("only 5 (etcd's default) is accepted"), "{e}");
    }
}
