//! Readers for the recorded history formats in `shared/histories/`.
//!
//! Both formats write one event per line; the line number (from 1) becomes the
//! event's time, so the real-time order is the file order. Every malformed line
//! is an error naming the line and what is wrong: a checker that guesses about
//! its input can give a wrong verdict.

use std::fmt;

use crate::{History, KvOp, KvResult, OpId, Outcome, RegisterOp, RegisterResult};

/// A line of a history file that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Line number, from 1.
    pub line: u64,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// An EDN value, as far as these files use EDN.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Edn {
    Nil,
    Int(i64),
    Str(String),
    Keyword(String),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
}

impl fmt::Display for Edn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Nil => write!(f, "nil"),
            Self::Int(n) => write!(f, "{n}"),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::Keyword(k) => write!(f, ":{k}"),
            Self::Vector(items) => {
                let items: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", items.join(" "))
            }
            Self::Map(_) => write!(f, "{{...}}"),
        }
    }
}

/// Reads one EDN value at a time from a line.
struct EdnReader<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> EdnReader<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    /// Skips whitespace and commas (whitespace in EDN).
    fn skip_blank(&mut self) {
        let rest = self.rest();
        let trimmed = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        self.pos += rest.len() - trimmed.len();
    }

    fn at_end(&mut self) -> bool {
        self.skip_blank();
        self.rest().is_empty()
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_blank();
        self.rest().chars().next()
    }

    fn value(&mut self) -> Result<Edn, String> {
        match self.peek() {
            None => Err("expected a value, found the end of the line".to_string()),
            Some('{') => self.map(),
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                while self.peek() != Some(']') {
                    if self.at_end() {
                        return Err("unclosed '['".to_string());
                    }
                    items.push(self.value()?);
                }
                self.pos += 1;
                Ok(Edn::Vector(items))
            }
            Some('"') => self.string(),
            Some(':') => {
                self.pos += 1;
                let word = self.word();
                if word.is_empty() {
                    return Err("empty keyword ':'".to_string());
                }
                Ok(Edn::Keyword(word.to_string()))
            }
            Some(_) => {
                let word = self.word();
                if word == "nil" {
                    Ok(Edn::Nil)
                } else if let Ok(n) = word.parse::<i64>() {
                    Ok(Edn::Int(n))
                } else if word.is_empty() {
                    Err(format!("unexpected character {:?}", self.rest().chars().next()))
                } else {
                    Err(format!("unexpected token {word:?}"))
                }
            }
        }
    }

    /// A bare token: up to whitespace, a comma or a closing bracket.
    fn word(&mut self) -> &'a str {
        let rest = self.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ',' | ']' | '}' | '[' | '{' | '"'))
            .unwrap_or(rest.len());
        self.pos += end;
        &rest[..end]
    }

    fn string(&mut self) -> Result<Edn, String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(Edn::Str(out));
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, 'r')) => out.push('\r'),
                    Some((_, e @ ('"' | '\\'))) => out.push(e),
                    Some((_, e)) => return Err(format!("unsupported escape '\\{e}' in a string")),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err("unterminated string".to_string())
    }

    fn map(&mut self) -> Result<Edn, String> {
        self.pos += 1; // '{'
        let mut entries = Vec::new();
        loop {
            match self.peek() {
                None => return Err("unclosed '{'".to_string()),
                Some('}') => {
                    self.pos += 1;
                    return Ok(Edn::Map(entries));
                }
                Some(_) => {
                    let key = self.value()?;
                    if self.peek() == Some('}') || self.at_end() {
                        return Err(format!("map key {key} has no value"));
                    }
                    let value = self.value()?;
                    entries.push((key, value));
                }
            }
        }
    }
}

fn err(line: u64, message: impl Into<String>) -> ParseError {
    ParseError { line, message: message.into() }
}

/// The kind of an event line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    Invoke,
    Ok,
    Fail,
    Info,
}

fn event_type(word: &str) -> Result<EventType, String> {
    match word {
        "invoke" => Ok(EventType::Invoke),
        "ok" => Ok(EventType::Ok),
        "fail" => Ok(EventType::Fail),
        "info" => Ok(EventType::Info),
        other => {
            Err(format!("unknown event type :{other} (expected :invoke, :ok, :fail or :info)"))
        }
    }
}

/// Tracks open operations while reading, to check each completion against its
/// invoke before it reaches [`History`] (which would panic on misuse).
struct Recorder<I, O> {
    history: History<I, O>,
    /// Per operation: its `:f` and the line of its invoke.
    invoked: Vec<(String, u64)>,
}

impl<I, O> Recorder<I, O> {
    fn new() -> Self {
        Self { history: History::new(), invoked: Vec::new() }
    }

    fn invoke(&mut self, line: u64, process: u64, f: &str, input: I) -> Result<(), ParseError> {
        if let Some(open) = self.history.open_operation(process) {
            let (open_f, open_line) = &self.invoked[open.index()];
            return Err(err(
                line,
                format!(
                    "process {process} invokes :{f} while its :{open_f} from line {open_line} \
                     has not completed"
                ),
            ));
        }
        self.history.invoke(process, line, input);
        self.invoked.push((f.to_string(), line));
        Ok(())
    }

    /// The open operation of `process`, which must be an `f`.
    fn open(&self, line: u64, process: u64, f: &str) -> Result<OpId, ParseError> {
        let Some(id) = self.history.open_operation(process) else {
            return Err(err(
                line,
                format!("process {process} completes :{f} but has no operation open"),
            ));
        };
        let (open_f, open_line) = &self.invoked[id.index()];
        if open_f != f {
            return Err(err(
                line,
                format!(
                    "process {process} completes :{f} but its open operation is :{open_f} \
                     from line {open_line}"
                ),
            ));
        }
        Ok(id)
    }

    fn complete(&mut self, id: OpId, line: u64, outcome: Outcome<O>) {
        self.history.complete(id, line, outcome);
    }
}

fn map_get<'m>(map: &'m [(Edn, Edn)], key: &str) -> Option<&'m Edn> {
    map.iter().find_map(|(k, v)| match k {
        Edn::Keyword(name) if name == key => Some(v),
        _ => None,
    })
}

/// One line of a `kv/` file, e.g.
/// `{:process 3, :type :invoke, :f :append, :key "4", :value "x 3 1 y"}`.
struct KvLine {
    process: u64,
    event: EventType,
    f: String,
    key: String,
    value: Edn,
}

fn parse_kv_line(text: &str) -> Result<KvLine, String> {
    let mut reader = EdnReader::new(text);
    let not_a_map = || "expected a map {:process ..., :type ..., :f ..., :key ..., :value ...}";
    if reader.peek() != Some('{') {
        return Err(not_a_map().to_string());
    }
    let Edn::Map(map) = reader.value()? else {
        return Err(not_a_map().to_string());
    };
    if !reader.at_end() {
        return Err(format!("unexpected text after the map: {:?}", reader.rest()));
    }
    let field = |name: &str| map_get(&map, name).ok_or_else(|| format!("missing :{name}"));
    let process = match field("process")? {
        Edn::Int(n) if *n >= 0 => *n as u64,
        other => return Err(format!(":process must be a client number, found {other}")),
    };
    let event = match field("type")? {
        Edn::Keyword(k) => event_type(k)?,
        other => return Err(format!(":type must be a keyword, found {other}")),
    };
    let f = match field("f")? {
        Edn::Keyword(k) => k.clone(),
        other => return Err(format!(":f must be a keyword, found {other}")),
    };
    let key = match field("key")? {
        Edn::Str(s) => s.clone(),
        other => return Err(format!(":key must be a string, found {other}")),
    };
    let value = field("value")?.clone();
    Ok(KvLine { process, event, f, key, value })
}

/// Reads a `kv/` history (Get / Put / Append on string keys). Check it with
/// [`crate::KvModel::empty_is_absent`]: a never-written key reads as `""`.
///
/// An operation whose client never completes it, or completes it with `:info`,
/// has an unknown outcome; `:fail` means it did not take effect.
pub fn parse_kv_history(text: &str) -> Result<History<KvOp, KvResult>, ParseError> {
    let mut rec = Recorder::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index as u64 + 1;
        if raw.trim().is_empty() {
            continue;
        }
        let ev = parse_kv_line(raw).map_err(|m| err(line, m))?;
        let string_value = || match &ev.value {
            Edn::Str(s) => Ok(s.clone()),
            other => Err(err(line, format!(":{} needs a string :value, found {other}", ev.f))),
        };
        match ev.event {
            EventType::Invoke => {
                let input = match ev.f.as_str() {
                    "get" => KvOp::get(ev.key.as_str()),
                    "put" => KvOp::put(ev.key.as_str(), string_value()?),
                    "append" => KvOp::append(ev.key.as_str(), string_value()?),
                    other => {
                        return Err(err(
                            line,
                            format!("unknown :f :{other} (expected :get, :put or :append)"),
                        ))
                    }
                };
                rec.invoke(line, ev.process, &ev.f, input)?;
            }
            completion => {
                let id = rec.open(line, ev.process, &ev.f)?;
                let invoked_key = rec.history.operation(id).input.key();
                if invoked_key != ev.key.as_bytes() {
                    return Err(err(
                        line,
                        format!(
                            "completion names key {:?} but the operation was invoked on {:?}",
                            ev.key,
                            String::from_utf8_lossy(invoked_key)
                        ),
                    ));
                }
                let outcome = match completion {
                    EventType::Ok if ev.f == "get" => match &ev.value {
                        Edn::Str(s) => Outcome::Ok(KvResult::value(s.as_str())),
                        Edn::Nil => Outcome::Ok(KvResult::Value(None)),
                        other => {
                            return Err(err(
                                line,
                                format!(":get returned {other}, expected a string or nil"),
                            ))
                        }
                    },
                    EventType::Ok => Outcome::Ok(KvResult::Done),
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
                rec.complete(id, line, outcome);
            }
        }
    }
    Ok(rec.history)
}

/// Marks the Jepsen log lines that carry operations.
const JEPSEN_OP_MARKER: &str = "jepsen.util - ";

fn int_value(value: &Edn, what: &str) -> Result<i64, String> {
    match value {
        Edn::Int(n) => Ok(*n),
        other => Err(format!("{what} needs an integer value, found {other}")),
    }
}

fn register_input(f: &str, value: &Edn) -> Result<RegisterOp, String> {
    match f {
        "read" => Ok(RegisterOp::Read),
        "write" => Ok(RegisterOp::Write(int_value(value, ":write")?)),
        "cas" => match value {
            Edn::Vector(pair) if pair.len() == 2 => Ok(RegisterOp::Cas {
                from: int_value(&pair[0], ":cas")?,
                to: int_value(&pair[1], ":cas")?,
            }),
            other => Err(format!(":cas needs a value [FROM TO], found {other}")),
        },
        other => Err(format!("unknown :f :{other} (expected :read, :write or :cas)")),
    }
}

/// Reads a Jepsen etcd log: one register, operations on `jepsen.util` lines
/// (`PROCESS<tab>:TYPE<tab>:F<tab>VALUE`). Check it with
/// [`crate::RegisterModel`].
///
/// Lines of other loggers, and `jepsen.util` lines whose process is not a
/// number (the nemesis), are not operations and are skipped. `:fail` (also a
/// read that `:fail`s with `:timed-out`) means no effect; `:info` or no
/// completion at all means the outcome is unknown.
pub fn parse_jepsen_register_history(
    text: &str,
) -> Result<History<RegisterOp, RegisterResult>, ParseError> {
    let mut rec = Recorder::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index as u64 + 1;
        let Some(at) = raw.find(JEPSEN_OP_MARKER) else {
            continue;
        };
        let fields = &raw[at + JEPSEN_OP_MARKER.len()..];
        let mut words = fields.split_whitespace();
        let Some(Ok(process)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let mut keyword = |what: &str| match words.next() {
            Some(w) if w.starts_with(':') && w.len() > 1 => Ok(w[1..].to_string()),
            Some(w) => Err(err(line, format!("expected the {what} as a keyword, found {w:?}"))),
            None => Err(err(line, format!("missing the {what}"))),
        };
        let event = event_type(&keyword("event type")?).map_err(|m| err(line, m))?;
        let f = keyword("operation")?;
        let value_text = words.collect::<Vec<_>>().join(" ");
        let mut reader = EdnReader::new(&value_text);
        let value = if reader.at_end() {
            Edn::Nil
        } else {
            let v = reader.value().map_err(|m| err(line, m))?;
            if !reader.at_end() {
                return Err(err(
                    line,
                    format!("unexpected text after the value: {:?}", reader.rest()),
                ));
            }
            v
        };
        match event {
            EventType::Invoke => {
                let input = register_input(&f, &value).map_err(|m| err(line, m))?;
                rec.invoke(line, process, &f, input)?;
            }
            completion => {
                let id = rec.open(line, process, &f)?;
                let outcome = match completion {
                    EventType::Ok if f == "read" => match value {
                        Edn::Nil => Outcome::Ok(RegisterResult::Read(None)),
                        Edn::Int(n) => Outcome::Ok(RegisterResult::Read(Some(n))),
                        other => {
                            return Err(err(
                                line,
                                format!(":read returned {other}, expected an integer or nil"),
                            ))
                        }
                    },
                    EventType::Ok => Outcome::Ok(RegisterResult::Done),
                    EventType::Fail => Outcome::Fail,
                    _ => Outcome::Unknown,
                };
                rec.complete(id, line, outcome);
            }
        }
    }
    Ok(rec.history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edn_values() {
        let mut r = EdnReader::new(r#"{:a 1, :b "x \"q\" y", :c nil, :d [4 0] :e :timed-out}"#);
        let Edn::Map(m) = r.value().unwrap() else { panic!("not a map") };
        assert_eq!(map_get(&m, "a"), Some(&Edn::Int(1)));
        assert_eq!(map_get(&m, "b"), Some(&Edn::Str("x \"q\" y".into())));
        assert_eq!(map_get(&m, "c"), Some(&Edn::Nil));
        assert_eq!(map_get(&m, "d"), Some(&Edn::Vector(vec![Edn::Int(4), Edn::Int(0)])));
        assert_eq!(map_get(&m, "e"), Some(&Edn::Keyword("timed-out".into())));
        assert!(r.at_end());
        assert!(EdnReader::new(r#""open"#).value().is_err());
        assert!(EdnReader::new("{:a 1").value().is_err());
        assert!(EdnReader::new("[1 2").value().is_err());
    }

    #[test]
    fn kv_lines_become_operations() {
        let text = r#"{:process 3, :type :invoke, :f :append, :key "4", :value "x 3 1 y"}
{:process 0, :type :invoke, :f :get, :key "4", :value nil}
{:process 3, :type :ok, :f :append, :key "4", :value "x 3 1 y"}
{:process 0, :type :ok, :f :get, :key "4", :value ""}
{:process 1, :type :invoke, :f :put, :key "5", :value "v"}
"#;
        let h = parse_kv_history(text).unwrap();
        assert_eq!(h.len(), 3);
        let ops = h.operations();
        assert_eq!(ops[0].input, KvOp::append("4", "x 3 1 y"));
        assert_eq!(ops[0].invoke_time, 1);
        assert_eq!(ops[0].outcome(), &Outcome::Ok(KvResult::Done));
        assert_eq!(ops[1].outcome(), &Outcome::Ok(KvResult::value("")));
        assert_eq!(ops[1].completion.as_ref().unwrap().time, 4);
        assert_eq!(ops[2].outcome(), &Outcome::Unknown, "never completed");
    }

    #[test]
    fn kv_errors_name_the_line_and_the_problem() {
        let bad_f = r#"{:process 1, :type :invoke, :f :frob, :key "4", :value nil}"#;
        let e = parse_kv_history(bad_f).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains(":frob"), "{e}");

        let orphan = "\n{:process 2, :type :ok, :f :get, :key \"4\", :value \"\"}";
        let e = parse_kv_history(orphan).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("no operation open"), "{e}");

        let twice = r#"{:process 1, :type :invoke, :f :get, :key "4", :value nil}
{:process 1, :type :invoke, :f :get, :key "4", :value nil}"#;
        let e = parse_kv_history(twice).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("line 1"), "{e}");

        let wrong_key = r#"{:process 1, :type :invoke, :f :get, :key "4", :value nil}
{:process 1, :type :ok, :f :get, :key "5", :value ""}"#;
        assert!(parse_kv_history(wrong_key).unwrap_err().message.contains("key"));

        let garbage = "{:process 1, :type :invoke";
        assert_eq!(parse_kv_history(garbage).unwrap_err().line, 1);
    }

    #[test]
    fn jepsen_lines_become_register_operations() {
        let text = "INFO  jepsen.util - 2\t:invoke\t:write\t4
INFO  jepsen.core - something else
INFO  jepsen.util - :nemesis\t:info\t:start\tnil
INFO  jepsen.util - 2\t:ok\t:write\t4
INFO  jepsen.util - 1   :invoke :cas    [4 0]
INFO  jepsen.util - 1\t:fail\t:cas\t[4 0]
INFO  jepsen.util - 0\t:invoke\t:read\tnil
INFO  jepsen.util - 0\t:ok\t:read\tnil
INFO  jepsen.util - 4\t:invoke\t:read\tnil
INFO  jepsen.util - 4\t:fail\t:read\t:timed-out
INFO  jepsen.util - 5\t:invoke\t:write\t1
INFO  jepsen.util - 5\t:info\t:write\t:timed-out
INFO  jepsen.util - 6\t:invoke\t:cas\t[1 2]
";
        let h = parse_jepsen_register_history(text).unwrap();
        let ops = h.operations();
        assert_eq!(ops.len(), 6);
        assert_eq!(ops[0].input, RegisterOp::Write(4));
        assert_eq!(ops[0].outcome(), &Outcome::Ok(RegisterResult::Done));
        assert_eq!(ops[1].input, RegisterOp::Cas { from: 4, to: 0 });
        assert_eq!(ops[1].outcome(), &Outcome::Fail);
        assert_eq!(ops[2].outcome(), &Outcome::Ok(RegisterResult::Read(None)));
        assert_eq!(ops[3].outcome(), &Outcome::Fail);
        assert_eq!(ops[4].outcome(), &Outcome::Unknown);
        assert_eq!(ops[5].outcome(), &Outcome::Unknown);
        assert!(ops[5].completion.is_none());
    }

    #[test]
    fn jepsen_errors_name_the_line_and_the_problem() {
        let e = parse_jepsen_register_history("x\nINFO  jepsen.util - 1\t:invoke\t:cas\t[4]")
            .unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("[FROM TO]"), "{e}");
        let e = parse_jepsen_register_history("INFO  jepsen.util - 1\t:ok\t:read\t3").unwrap_err();
        assert!(e.message.contains("no operation open"), "{e}");
        let e =
            parse_jepsen_register_history("INFO  jepsen.util - 1\t:begin\t:read\tnil").unwrap_err();
        assert!(e.message.contains(":begin"), "{e}");
        let mismatch =
            "INFO  jepsen.util - 1\t:invoke\t:read\tnil\nINFO  jepsen.util - 1\t:ok\t:write\t3";
        let e = parse_jepsen_register_history(mismatch).unwrap_err();
        assert!(e.message.contains("open operation is :read"), "{e}");
    }
}
