//! etcd 3.4's JSON gateway on a raftkv member's client URL: the curl flows of etcd's
//! "gRPC gateway" page (put, range, txn, lease grant + put with the lease + time to
//! live + keep-alive, watch, auth enable / authenticate / the token in `Authorization`)
//! and its errors (no key, malformed JSON, a compacted revision, a bad token, an unknown
//! path, a GET), over plain HTTP/1.1, as `curl` sends them.
//!
//! Each answer (status, content type, body) must be the one written down here, which
//! is etcd 3.4.23's with what must differ masked (cluster and member ids, raft term,
//! tokens, a lease's remaining TTL). With `etcd` installed the same flow also runs
//! against a real etcd, and its answers must be the same, so the expectations cannot
//! drift from etcd's; without it that half prints SKIPPED. The CORS headers (`--cors`)
//! on these answers, preflights, `/health`, `/version`, 404 and 405 are compared so too.

mod common;

use common::{ClusterSpec, TestCluster};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One answer: status code, content type, body (de-chunked), ids masked.
type Answer = (u16, String, String);

/// `POST path` with `body` (and `Authorization: token`) over HTTP/1.1 on `port`; the
/// answer whole (the server closes the connection after it).
fn post(port: u16, path: &str, body: &str, token: Option<&str>) -> Answer {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    sock.write_all(request("POST", path, body, token).as_bytes()).unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    parse(&raw).unwrap_or_else(|| panic!("not a whole HTTP answer: {raw:?}"))
}

fn request(method: &str, path: &str, body: &str, token: Option<&str>) -> String {
    let auth = token.map(|t| format!("authorization: {t}\r\n")).unwrap_or_default();
    format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n\
         content-type: application/x-www-form-urlencoded\r\n{auth}connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Status, content type and body of `raw`, if it holds a whole answer.
fn parse(raw: &[u8]) -> Option<Answer> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let body = if header("transfer-encoding").is_some_and(|v| v == "chunked") {
        dechunk(body)?
    } else {
        let len: usize = header("content-length")?.parse().ok()?;
        (body.len() >= len).then(|| body[..len].to_string())?
    };
    Some((code, header("content-type").unwrap_or_default(), mask(&body)))
}

/// A chunked body's data, as far as it has come (`None` before its first chunk).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].strip_prefix("\r\n").unwrap_or("");
    }
    (!out.is_empty()).then_some(out)
}

/// `body` with the values of the fields that must differ replaced by `N`.
fn mask(body: &str) -> String {
    const MASKED: [&str; 5] =
        ["\"cluster_id\":", "\"member_id\":", "\"raft_term\":", "\"token\":", "\"TTL\":"];
    let mut out = body.to_string();
    for field in MASKED {
        let mut from = 0;
        while let Some(at) = out[from..].find(field) {
            let start = from + at + field.len();
            let rest = &out[start..];
            let len = if let Some(s) = rest.strip_prefix('"') {
                s.find('"').map_or(rest.len(), |e| e + 2)
            } else {
                rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())
            };
            out.replace_range(start..start + len, "N");
            from = start + 1;
        }
    }
    out
}

/// A stream (`/v3/watch`, `/v3/lease/keepalive`) on `port`: the request sent, its
/// answer read as it streams.
struct Watch {
    sock: TcpStream,
    raw: Vec<u8>,
}

impl Watch {
    fn start(port: u16, path: &str, body: &str) -> Watch {
        let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        sock.write_all(request("POST", path, body, None).as_bytes()).unwrap();
        Watch { sock, raw: Vec::new() }
    }

    /// The answer once its body has `lines` lines (each a JSON object and a newline).
    fn until_lines(&mut self, lines: usize) -> Answer {
        loop {
            if let Some(answer) = parse(&self.raw) {
                if answer.2.matches('\n').count() >= lines {
                    return answer;
                }
            }
            let mut buf = [0u8; 4096];
            let n = self.sock.read(&mut buf).expect("the watch answers within 20 s");
            assert!(n > 0, "the watch ended: {:?}", String::from_utf8_lossy(&self.raw));
            self.raw.extend_from_slice(&buf[..n]);
        }
    }
}

const JSON: &str = "application/json";
const HEADER: &str = "\"header\":{\"cluster_id\":N,\"member_id\":N,\"revision\":";

fn ok(body: &str) -> Answer {
    (200, JSON.into(), body.replace("H:", HEADER))
}

fn err(status: u16, code: u32, message: &str) -> Answer {
    let body = format!("{{\"error\":\"{message}\",\"message\":\"{message}\",\"code\":{code}}}");
    (status, JSON.into(), body)
}

/// Runs the documented flows on the member whose client port is `port`, checking each
/// answer against etcd 3.4's; returns how many it checked.
fn documented_flows(port: u16) -> usize {
    let mut checked = 0;
    let mut expect = |answer: Answer, expected: Answer, what: &str| {
        assert_eq!(answer, expected, "{what}");
        checked += 1;
    };
    let p = |path: &str, body: &str| post(port, path, body, None);

    // Put and range (etcd's page: foo=bar as base64).
    let put = p("/v3/kv/put", r#"{"key": "Zm9v", "value": "YmFy"}"#);
    expect(put, ok(r#"{H:"2","raft_term":N}}"#), "put");
    let range = p("/v3/kv/range", r#"{"key": "Zm9v"}"#);
    let kvs = r#""kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy"}],"count":"1""#;
    expect(range, ok(&format!(r#"{{H:"2","raft_term":N}},{kvs}}}"#)), "range");
    let beta = p("/v3beta/kv/range", r#"{"key": "Zm9v", "keys_only": true, "limit": "1"}"#);
    let keys = r#""kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1"}],"count":"1""#;
    expect(beta, ok(&format!(r#"{{H:"2","raft_term":N}},{keys}}}"#)), "the /v3beta alias");
    // A null field is an absent one, as Go's jsonpb reads it.
    let null = p("/v3/kv/range", r#"{"key": "Zm9v", "range_end": null, "limit": null}"#);
    expect(null, ok(&format!(r#"{{H:"2","raft_term":N}},{kvs}}}"#)), "null fields");

    // A watch from before the txn sees its put.
    let mut watch = Watch::start(port, "/v3/watch", r#"{"create_request": {"key":"Zm9v"}}"#);
    let created = watch.until_lines(1);
    let created_line = r#"{"result":{H:"2","raft_term":N},"created":true}}"#.replace("H:", HEADER);
    expect(created, (200, JSON.into(), format!("{created_line}\n")), "watch created");

    // Txn, as on etcd's page: compare the create revision, put on success.
    let txn = p(
        "/v3/kv/txn",
        r#"{"compare":[{"target":"CREATE","key":"Zm9v","createRevision":"2"}],
            "success":[{"requestPut":{"key":"Zm9v","value":"YmF6"}}]}"#,
    );
    let txn_ok = r#"{H:"3","raft_term":N},"succeeded":true,"responses":[{"response_put":{"header":{"revision":"3"}}}]}"#;
    expect(txn, ok(txn_ok), "txn");
    let event = r#"{"result":{H:"3","raft_term":N},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmF6"}}]}}"#
        .replace("H:", HEADER);
    expect(
        watch.until_lines(2),
        (200, JSON.into(), format!("{created_line}\n{event}\n")),
        "watch event",
    );

    // Lease: grant, put with it, time to live with its keys.
    let grant = p("/v3/lease/grant", r#"{"TTL": 60, "ID": 1234}"#);
    expect(grant, ok(r#"{H:"3","raft_term":N},"ID":"1234","TTL":N}"#), "lease grant");
    let put = p("/v3/kv/put", r#"{"key": "a2V5", "value": "dg==", "lease": "1234"}"#);
    expect(put, ok(r#"{H:"4","raft_term":N}}"#), "put with a lease");
    let ttl = p("/v3/lease/timetolive", r#"{"ID": "1234", "keys": true}"#);
    let ttl_ok = r#"{H:"4","raft_term":N},"ID":"1234","TTL":N,"grantedTTL":"60","keys":["a2V5"]}"#;
    expect(ttl, ok(ttl_ok), "time to live");
    let mut keepalive = Watch::start(port, "/v3/lease/keepalive", r#"{"ID": "1234"}"#);
    let kept = r#"{"result":{H:"4","raft_term":N},"ID":"1234","TTL":N}}"#.replace("H:", HEADER);
    expect(keepalive.until_lines(1), (200, JSON.into(), format!("{kept}\n")), "keep-alive");

    // Errors, as etcd's gateway maps them.
    let no_key = p("/v3/kv/put", r#"{"value": "YmFy"}"#);
    expect(no_key, err(400, 3, "etcdserver: key is not provided"), "a put without a key");
    let malformed = p("/v3/kv/put", r#"{"value": "#);
    expect(malformed, err(400, 3, "unexpected EOF"), "malformed JSON");
    let compact = p("/v3/kv/compaction", r#"{"revision": "3"}"#);
    expect(compact, ok(r#"{H:"4","raft_term":N}}"#), "compaction");
    let compacted = p("/v3/kv/range", r#"{"key": "Zm9v", "revision": 2}"#);
    let message = "etcdserver: mvcc: required revision has been compacted";
    expect(compacted, err(400, 11, message), "a range on a compacted revision");
    let unknown = p("/v3/lease/revoke", r#"{"ID": 99}"#);
    expect(unknown, err(404, 5, "etcdserver: requested lease not found"), "unknown lease");
    let text = "text/plain; charset=utf-8".to_string();
    expect(p("/v3/kv/nothing", "{}"), (404, text.clone(), "Not Found\n".into()), "unknown path");
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.write_all(request("GET", "/v3/kv/range", "", None).as_bytes()).unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    let get = parse(&raw).unwrap();
    expect(get, (405, text, "Method Not Allowed\n".into()), "GET");

    // Auth: root, enable, a token from authenticate in `Authorization`.
    let empty = ok(r#"{H:"4","raft_term":N}}"#);
    for (path, body) in [
        ("/v3/auth/user/add", r#"{"name": "root", "password": "pass"}"#),
        ("/v3/auth/role/add", r#"{"name": "root"}"#),
        ("/v3/auth/user/grant", r#"{"user": "root", "role": "root"}"#),
        ("/v3/auth/enable", "{}"),
    ] {
        expect(p(path, body), empty.clone(), path);
    }
    let put = r#"{"key": "Zm9v", "value": "YmFy"}"#;
    expect(p("/v3/kv/put", put), err(400, 3, "etcdserver: user name is empty"), "no token");
    let bad = p("/v3/auth/authenticate", r#"{"name": "root", "password": "bad"}"#);
    let refused = "etcdserver: authentication failed, invalid user ID or password";
    expect(bad, err(400, 3, refused), "a wrong password");
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = r#"{"name": "root", "password": "pass"}"#;
    sock.write_all(request("POST", "/v3/auth/authenticate", auth, None).as_bytes()).unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let token = raw.split("\"token\":\"").nth(1).and_then(|t| t.split('"').next()).unwrap();
    let with_token = post(port, "/v3/kv/put", put, Some(token));
    expect(with_token, ok(r#"{H:"5","raft_term":N}}"#), "a put with the token");
    let forged = post(port, "/v3/kv/put", put, Some("nonsense.5"));
    expect(forged, err(401, 16, "etcdserver: invalid auth token"), "a bad token");
    let disable = post(port, "/v3/auth/disable", "{}", Some(token));
    expect(disable, ok(r#"{H:"5","raft_term":N}}"#), "auth disable with the token");
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_curl_flows_answer_as_etcd_34s_gateway() {
    let raftkv = TestCluster::start_spec(ClusterSpec::raftkv("gateway", &[]).members(1));
    raftkv.wait_ready().await;
    let checked = documented_flows(raftkv.members()[0].client_port);
    println!("raftkv: {checked} answers as etcd's");
    if !common::have("etcd", "--version") {
        println!("\n*** SKIPPED the etcd half of gateway: needs `etcd` 3.4 ***\n");
        return;
    }
    let etcd = TestCluster::start_spec(ClusterSpec::etcd("gateway-etcd", &[]).members(1));
    etcd.wait_ready().await;
    assert_eq!(documented_flows(etcd.members()[0].client_port), checked);
}

/// What a plain HTTP answer says about CORS: its status, its `Access-Control-*` headers
/// (names in lower case, sorted) and, for a preflight, its `Content-Length`.
type CorsAnswer = (u16, Vec<(String, String)>, Option<String>);

/// `method path` with `Origin: origin` (if any) and `body` on `port`.
fn cors_ask(port: u16, method: &str, path: &str, origin: Option<&str>, body: &str) -> CorsAnswer {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    let text = request(method, path, body, None).replacen("\r\n", &format!("\r\n{origin}"), 1);
    sock.write_all(text.as_bytes()).unwrap();
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8_lossy(&raw);
    let head = raw.split("\r\n\r\n").next().unwrap_or_default();
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut length = None;
    let mut cors = Vec::new();
    for (name, value) in head.lines().skip(1).filter_map(|l| l.split_once(':')) {
        let (name, value) = (name.to_ascii_lowercase(), value.trim().to_string());
        if name.starts_with("access-control-") {
            cors.push((name, value));
        } else if name == "content-length" && method == "OPTIONS" {
            length = Some(value);
        }
    }
    cors.sort();
    (code, cors, length)
}

/// etcd's three CORS headers for `origin`, as [`cors_ask`] lists them.
fn cors_headers(origin: &str) -> Vec<(String, String)> {
    vec![
        ("access-control-allow-headers".into(), "accept, content-type, authorization".into()),
        ("access-control-allow-methods".into(), "POST, GET, OPTIONS, PUT, DELETE".into()),
        ("access-control-allow-origin".into(), origin.into()),
    ]
}

/// The requests of the CORS check: a gateway POST, a preflight, `/health`, `/version`,
/// a 404 and a 405 (method, path, body, etcd's status), each sent with every one of
/// [`CORS_ORIGINS`].
const CORS_REQUESTS: [(&str, &str, &str, u16); 7] = [
    ("POST", "/v3/kv/range", r#"{"key": "Zm9v"}"#, 200),
    ("OPTIONS", "/v3/kv/range", "", 200),
    ("OPTIONS", "/nothing", "", 200),
    ("GET", "/health", "", 200),
    ("GET", "/version", "", 200),
    ("GET", "/nothing", "", 404),
    ("GET", "/v3/kv/range", "", 405),
];

/// No `Origin`, the allowed one, another one.
const CORS_ORIGINS: [Option<&str>; 3] = [None, Some(ALLOWED_ORIGIN), Some("http://x.example:80")];

/// The answers to [`CORS_REQUESTS`] on `port`, each named.
fn cors_answers(port: u16) -> Vec<(String, CorsAnswer)> {
    let mut out = Vec::new();
    for origin in CORS_ORIGINS {
        for (method, path, body, _) in CORS_REQUESTS {
            let what = format!("{method} {path} origin {origin:?}");
            out.push((what, cors_ask(port, method, path, origin, body)));
        }
    }
    out
}

/// The origin the `--cors` list of [`CORS_LIST`] allows in [`cors_answers`].
const ALLOWED_ORIGIN: &str = "http://a.example:80";
/// A `--cors` list, with spaces as an operator may write it.
const CORS_LIST: &str = "http://a.example:80, http://b.example:8080";

/// What etcd 3.4.23 answers to [`cors_answers`]: with `--cors` unset (`*`) every answer
/// has the headers with `*`; with [`CORS_LIST`] only the allowed origin gets them, with
/// itself. Any OPTIONS is `200` with `Content-Length: 0`.
fn expected_cors(list: bool) -> Vec<(String, CorsAnswer)> {
    let mut out = Vec::new();
    for origin in CORS_ORIGINS {
        let headers = match (list, origin) {
            (false, _) => cors_headers("*"),
            (true, Some(ALLOWED_ORIGIN)) => cors_headers(ALLOWED_ORIGIN),
            (true, _) => Vec::new(),
        };
        for (method, path, _, code) in CORS_REQUESTS {
            let length = (method == "OPTIONS").then(|| "0".to_string());
            let what = format!("{method} {path} origin {origin:?}");
            out.push((what, (code, headers.clone(), length)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_headers_and_preflights_are_etcd_34s_by_default_and_with_a_list() {
    let list = format!("--cors={CORS_LIST}");
    let default = TestCluster::start_spec(ClusterSpec::raftkv("cors", &[]).members(1));
    let listed = TestCluster::start_spec(ClusterSpec::raftkv("cors-list", &[&list]).members(1));
    default.wait_ready().await;
    listed.wait_ready().await;
    assert_eq!(cors_answers(default.members()[0].client_port), expected_cors(false));
    assert_eq!(cors_answers(listed.members()[0].client_port), expected_cors(true));
    // Not on the metrics URL, as etcd's (whose OPTIONS there is not a preflight either).
    let metrics = default.members()[0].metrics_port;
    assert_eq!(cors_ask(metrics, "GET", "/health", None, ""), (200, Vec::new(), None));
    if !common::have("etcd", "--version") {
        println!("\n*** SKIPPED the etcd half of the CORS check: needs `etcd` 3.4 ***\n");
        return;
    }
    let etcd = TestCluster::start_spec(ClusterSpec::etcd("cors-etcd", &[]).members(1));
    let etcd_list =
        TestCluster::start_spec(ClusterSpec::etcd("cors-etcd-list", &[&list]).members(1));
    etcd.wait_ready().await;
    etcd_list.wait_ready().await;
    assert_eq!(cors_answers(etcd.members()[0].client_port), expected_cors(false));
    assert_eq!(cors_answers(etcd_list.members()[0].client_port), expected_cors(true));
}
