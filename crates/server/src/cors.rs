//! etcd 3.4's CORS headers on the plain HTTP answers of the client URLs (`--cors`).
//!
//! etcd wraps every plain HTTP answer of a client URL (the JSON gateway, `/health`,
//! `/version`, `/metrics`, its 404s and 405s; not gRPC, not `--listen-metrics-urls`) in
//! one handler: with `--cors` at its default `*` every answer carries
//! `Access-Control-Allow-Headers: accept, content-type, authorization`,
//! `Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE` and
//! `Access-Control-Allow-Origin: *`, with or without an `Origin` header; with a list of
//! origins only a request whose `Origin` is in the list gets them, with its origin. Any
//! `OPTIONS` request is a preflight: `200 OK` with an empty body, the headers if the
//! origin is allowed. Checked against etcd 3.4.23 with curl; `client_http` applies this
//! once, to every plain HTTP answer.

use crate::config::ConfigError;
use http::header::{HeaderMap, HeaderValue};

/// `Access-Control-Allow-Headers`, as etcd sends it.
pub const ALLOW_HEADERS: &str = "accept, content-type, authorization";
/// `Access-Control-Allow-Methods`, as etcd sends it.
pub const ALLOW_METHODS: &str = "POST, GET, OPTIONS, PUT, DELETE";

/// Which origins get CORS headers (`--cors`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Cors {
    /// `*` (etcd's default): every request, with `Access-Control-Allow-Origin: *`.
    #[default]
    Any,
    /// A list of origins (`scheme://host:port`, the scheme in lower case as etcd stores
    /// it): a request whose `Origin` header is exactly one of them gets the headers.
    Origins(Vec<String>),
}

impl Cors {
    /// Parses `--cors` as etcd 3.4 does: `*` alone, or comma-separated URLs, each
    /// `http`, `https`, `unix` or `unixs` with a `host:port` and no path (spaces around
    /// an entry are dropped, the scheme is matched in lower case, the host as given).
    /// raftkv also refuses a user, query or fragment in an entry (etcd keeps them in the
    /// origin it matches, which no browser sends).
    pub fn parse(text: &str) -> Result<Cors, ConfigError> {
        if text == "*" {
            return Ok(Cors::Any);
        }
        let mut origins = Vec::new();
        for entry in text.split(',').map(str::trim) {
            let origin = origin(entry).map_err(|why| {
                ConfigError(format!(
                    "--cors {text:?}: {why}: {entry:?}; give * (every origin, the default) or \
                     origins as scheme://host:port separated by commas, such as \
                     http://a.example:80,https://b.example:443"
                ))
            })?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        Ok(Cors::Origins(origins))
    }

    /// The `Access-Control-Allow-Origin` a request with this `Origin` header gets; `None`:
    /// no CORS headers at all.
    pub fn allowed_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Cors::Any => Some(HeaderValue::from_static("*")),
            Cors::Origins(list) => {
                let origin = origin?;
                list.iter().any(|o| o.as_bytes() == origin.as_bytes()).then(|| origin.clone())
            }
        }
    }

    /// Adds etcd's three CORS headers to `headers` when `origin` (the request's `Origin`
    /// header) is allowed.
    pub fn add_headers(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if let Some(allowed) = self.allowed_origin(origin) {
            headers.insert(
                http::header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            headers.insert(
                http::header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            headers.insert(http::header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        }
    }
}

/// One `--cors` entry as the origin it allows, or why etcd (or raftkv) refuses it.
fn origin(entry: &str) -> Result<String, &'static str> {
    let scheme_error = "URL scheme must be http, https, unix, or unixs";
    let (scheme, rest) = entry.split_once("://").ok_or(scheme_error)?;
    let scheme = scheme.to_ascii_lowercase();
    if !["http", "https", "unix", "unixs"].contains(&scheme.as_str()) {
        return Err(scheme_error);
    }
    if rest.contains('/') {
        return Err("URL must not contain a path");
    }
    if rest.contains(['?', '#', '@']) {
        return Err("raftkv takes no user, query or fragment in an origin");
    }
    let host_port = match rest.strip_prefix('[') {
        Some(v6) => v6.split_once("]:"),
        None => rest.split_once(':'),
    };
    match host_port {
        Some((_, port)) if !port.contains(':') => Ok(format!("{scheme}://{rest}")),
        _ => Err("URL address does not have the form \"host:port\""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cors: &Cors, origin: Option<&str>) -> Vec<(String, String)> {
        let origin = origin.map(|o| HeaderValue::from_str(o).unwrap());
        let mut map = HeaderMap::new();
        cors.add_headers(origin.as_ref(), &mut map);
        let mut out: Vec<(String, String)> =
            map.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
        out.sort();
        out
    }

    fn etcds(origin: &str) -> Vec<(String, String)> {
        vec![
            ("access-control-allow-headers".into(), ALLOW_HEADERS.into()),
            ("access-control-allow-methods".into(), ALLOW_METHODS.into()),
            ("access-control-allow-origin".into(), origin.into()),
        ]
    }

    #[test]
    fn the_default_star_allows_every_request_with_or_without_an_origin() {
        assert_eq!(Cors::parse("*"), Ok(Cors::Any));
        assert_eq!(Cors::default(), Cors::Any);
        assert_eq!(headers(&Cors::Any, None), etcds("*"));
        assert_eq!(headers(&Cors::Any, Some("http://x.example:1")), etcds("*"));
    }

    #[test]
    fn a_list_allows_exactly_its_origins_and_echoes_the_origin() {
        let cors =
            Cors::parse("http://a.example:80, HTTPS://B.example:8443,http://a.example:80").unwrap();
        assert_eq!(
            cors,
            Cors::Origins(vec!["http://a.example:80".into(), "https://B.example:8443".into()]),
            "trimmed, scheme in lower case, host as given, duplicates once"
        );
        assert_eq!(headers(&cors, Some("http://a.example:80")), etcds("http://a.example:80"));
        assert_eq!(headers(&cors, Some("https://B.example:8443")), etcds("https://B.example:8443"));
        assert_eq!(headers(&cors, Some("https://b.example:8443")), [], "the host as given");
        assert_eq!(headers(&cors, Some("http://a.example")), [], "no port: another origin");
        assert_eq!(headers(&cors, Some("*")), []);
        assert_eq!(headers(&cors, None), [], "no Origin: no headers");
        let v6 = Cors::parse("http://[::1]:2379").unwrap();
        assert_eq!(headers(&v6, Some("http://[::1]:2379")), etcds("http://[::1]:2379"));
    }

    #[test]
    fn entries_etcd_refuses_are_refused_with_its_words_and_what_to_give() {
        for (text, why) in [
            ("", "URL scheme must be http, https, unix, or unixs: \"\""),
            ("*,http://a.example:80", "URL scheme must be http, https, unix, or unixs: \"*\""),
            ("a.example:80", "URL scheme must be"),
            ("ftp://a.example:80", "URL scheme must be"),
            ("http://a.example", "URL address does not have the form \"host:port\""),
            ("http://a.example:80/", "URL must not contain a path"),
            ("http://a.example:80,", "URL scheme must be"),
            ("http://u@a.example:80", "no user, query or fragment"),
        ] {
            let e = Cors::parse(text).unwrap_err().0;
            assert!(e.starts_with(&format!("--cors {text:?}: ")), "{e}");
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(e.contains("give * (every origin, the default)"), "{e}");
        }
    }
}
