//! Label and field selectors (`labelSelector` / `fieldSelector` query parameters) for list and watch requests.
//!
//! The grammar and the error texts follow `k8s.io/apimachinery/pkg/labels` and
//! `k8s.io/apimachinery/pkg/fields` closely, because the clients under test
//! (kube-rs, client-go, kubectl) are written against the real kube-apiserver and
//! a test server that accepts more — or less — than the real one would hide bugs.
//! Objects are plain `serde_json::Value`s shaped like Kubernetes objects.

use std::borrow::Cow;
use std::fmt;

// Name rules are apimachinery's, shared with object validation.
use crate::validation::{
    is_qualified_name as qualified_name_errors, is_valid_label_value as label_value_errors,
};

use serde_json::{Map, Value};

/// A selector that could not be parsed; the message mimics kube-apiserver's
/// so that clients matching on error text behave as they would in a real cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectorError(pub String);

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SelectorError {}

fn err<T>(msg: impl Into<String>) -> Result<T, SelectorError> {
    Err(SelectorError(msg.into()))
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// The operator of one label requirement. `=` and `==` are the same operator;
/// the distinction only matters for printing, which this server never does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LabelOp {
    Exists,
    DoesNotExist,
    Equals,
    NotEquals,
    In,
    NotIn,
    GreaterThan,
    LessThan,
}

/// One comma-separated term of a label selector. `values` is sorted and
/// de-duplicated, as apimachinery keeps it in a string set.
#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: LabelOp,
    values: Vec<String>,
}

impl Requirement {
    /// Same semantics as apimachinery's `Requirement.Matches`: the negative
    /// operators (`!=`, `notin`, `!key`) are satisfied by objects lacking the key,
    /// the positive ones require it.
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels
            .and_then(|m| m.get(&self.key))
            .and_then(label_value_str);
        let has = |v: &str| self.values.iter().any(|x| x == v);
        match self.op {
            LabelOp::Exists => value.is_some(),
            LabelOp::DoesNotExist => value.is_none(),
            LabelOp::Equals | LabelOp::In => value.is_some_and(|v| has(&v)),
            LabelOp::NotEquals | LabelOp::NotIn => value.is_none_or(|v| !has(&v)),
            LabelOp::GreaterThan | LabelOp::LessThan => {
                let (Some(v), Some(r)) = (value, self.values.first()) else {
                    return false;
                };
                let (Ok(v), Ok(r)) = (v.parse::<i64>(), r.parse::<i64>()) else {
                    return false;
                };
                if self.op == LabelOp::GreaterThan {
                    v > r
                } else {
                    v < r
                }
            }
        }
    }
}

/// Labels are strings in every real object; numbers and bools are tolerated
/// (compared via their text) so a sloppy fixture does not silently vanish, and
/// `null` counts as absent because that is what it means in a JSON merge.
fn label_value_str(v: &Value) -> Option<Cow<'_, str>> {
    match v {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Null => None,
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Bool(b) => Some(Cow::Owned(b.to_string())),
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// A parsed `labelSelector`: the conjunction of its requirements.
/// The default (no requirements) matches everything, as an absent or empty
/// `labelSelector` does in the real API.
#[derive(Debug, Clone, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query string with apimachinery's grammar:
    /// `key`, `!key`, `key=value`, `key==value`, `key!=value`,
    /// `key in (a,b)`, `key notin (a,b)`, `key>n`, `key<n`, comma separated.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let toks = lex(s);
        let requirements = LabelParser { toks, pos: 0 }.parse()?;
        Ok(LabelSelector { requirements })
    }

    /// Whether a label map (absent = no labels) satisfies every requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Matches against `obj.metadata.labels`, the only labels the API filters on.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.matches(obj.pointer("/metadata/labels").and_then(Value::as_object))
    }

    /// True for the selector that matches everything, so callers can skip filtering.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Tokens of the label-selector lexer. `in` and `notin` are lexed as plain
/// identifiers and only treated as keywords where an operator is expected,
/// which is how apimachinery lets `in` be used as a key or value.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Bang,
    NotEquals,
    Equals,
    DoubleEquals,
    Gt,
    Lt,
    OpenPar,
    ClosePar,
    Comma,
    End,
}

impl Tok {
    /// The literal apimachinery prints in its `found '...'` messages
    /// (the end of the string prints as an empty literal).
    fn lit(&self) -> &str {
        match self {
            Tok::Ident(s) => s,
            Tok::Bang => "!",
            Tok::NotEquals => "!=",
            Tok::Equals => "=",
            Tok::DoubleEquals => "==",
            Tok::Gt => ">",
            Tok::Lt => "<",
            Tok::OpenPar => "(",
            Tok::ClosePar => ")",
            Tok::Comma => ",",
            Tok::End => "",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '>' | '<')
}

fn is_ws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits the selector into tokens; anything that is neither whitespace nor a
/// special symbol belongs to an identifier, exactly like apimachinery's lexer,
/// so invalid characters surface later as key/value validation errors.
fn lex(s: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut chars = s.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        if is_ws(c) {
            chars.next();
            continue;
        }
        if is_special(c) {
            chars.next();
            let next_is_eq = chars.peek().is_some_and(|&(_, n)| n == '=');
            let tok = match c {
                '!' if next_is_eq => {
                    chars.next();
                    Tok::NotEquals
                }
                '!' => Tok::Bang,
                '=' if next_is_eq => {
                    chars.next();
                    Tok::DoubleEquals
                }
                '=' => Tok::Equals,
                '(' => Tok::OpenPar,
                ')' => Tok::ClosePar,
                ',' => Tok::Comma,
                '>' => Tok::Gt,
                _ => Tok::Lt,
            };
            toks.push(tok);
            continue;
        }
        let mut end = s.len();
        while let Some(&(j, n)) = chars.peek() {
            if is_ws(n) || is_special(n) {
                end = j;
                break;
            }
            chars.next();
        }
        toks.push(Tok::Ident(s[i..end].to_string()));
    }
    toks.push(Tok::End);
    toks
}

/// Recursive-descent parser mirroring apimachinery's `labels.Parser`.
struct LabelParser {
    toks: Vec<Tok>,
    pos: usize,
}

impl LabelParser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).unwrap_or(&Tok::End)
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            match self.peek() {
                Tok::Ident(_) | Tok::Bang => {
                    let r = self.parse_requirement().map_err(|e| {
                        SelectorError(format!("unable to parse requirement: {}", e.0))
                    })?;
                    reqs.push(r);
                    match self.next() {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => match self.peek() {
                            Tok::Ident(_) | Tok::Bang => {}
                            t => {
                                return err(format!(
                                    "found '{}', expected: identifier after ','",
                                    t.lit()
                                ));
                            }
                        },
                        t => {
                            return err(format!(
                                "found '{}', expected: ',' or 'end of string'",
                                t.lit()
                            ));
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                t => {
                    return err(format!(
                        "found '{}', expected: !, identifier, or 'end of string'",
                        t.lit()
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut negated = false;
        let mut tok = self.next();
        if tok == Tok::Bang {
            negated = true;
            tok = self.next();
        }
        let key = match tok {
            Tok::Ident(k) => k,
            t if negated => {
                return err(format!(
                    "found '{}', expected: identifier after '!'",
                    t.lit()
                ));
            }
            t => return err(format!("found '{}', expected: identifier", t.lit())),
        };
        validate_label_key(&key)?;
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            let op = if negated {
                LabelOp::DoesNotExist
            } else {
                LabelOp::Exists
            };
            return Ok(Requirement {
                key,
                op,
                values: Vec::new(),
            });
        }
        if negated {
            return err(format!(
                "found '{}', expected: ',' or 'end of string'",
                self.peek().lit()
            ));
        }
        let op = match self.next() {
            Tok::Ident(s) if s == "in" => LabelOp::In,
            Tok::Ident(s) if s == "notin" => LabelOp::NotIn,
            Tok::Equals | Tok::DoubleEquals => LabelOp::Equals,
            Tok::NotEquals => LabelOp::NotEquals,
            Tok::Gt => LabelOp::GreaterThan,
            Tok::Lt => LabelOp::LessThan,
            t => {
                return err(format!(
                    "found '{}', expected: in, notin, =, ==, !=, gt, lt",
                    t.lit()
                ));
            }
        };
        let mut values = match op {
            LabelOp::In | LabelOp::NotIn => self.parse_values()?,
            _ => vec![self.parse_exact_value()?],
        };
        values.sort();
        values.dedup();
        validate_requirement(&key, op, &values)?;
        Ok(Requirement { key, op, values })
    }

    /// The single value after `=`, `==`, `!=`, `>` or `<`; an immediately
    /// following `,` or the end of the string means the empty value (`key=`).
    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek(), Tok::End | Tok::Comma) {
            return Ok(String::new());
        }
        match self.next() {
            Tok::Ident(v) => Ok(v),
            t => err(format!("found '{}', expected: identifier", t.lit())),
        }
    }

    /// The parenthesised set after `in`/`notin`. Empty slots (`(a,)`, `(,a)`,
    /// `(a,,b)`) stand for the empty value, as in apimachinery; `()` is rejected.
    fn parse_values(&mut self) -> Result<Vec<String>, SelectorError> {
        match self.next() {
            Tok::OpenPar => {}
            t => return err(format!("found '{}', expected: '('", t.lit())),
        }
        match self.peek() {
            Tok::Ident(_) | Tok::Comma => {
                let vals = self.parse_identifiers_list()?;
                match self.next() {
                    Tok::ClosePar => Ok(vals),
                    t => err(format!("found '{}', expected: ')'", t.lit())),
                }
            }
            Tok::ClosePar => {
                self.next();
                err(
                    "values: Required value: for 'in', 'notin' operators, values set can't be empty",
                )
            }
            t => err(format!(
                "found '{}', expected: ',', ')' or identifier",
                t.lit()
            )),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut vals: Vec<String> = Vec::new();
        loop {
            match self.next() {
                Tok::Ident(v) => {
                    vals.push(v);
                    match self.peek() {
                        Tok::Comma => continue,
                        Tok::ClosePar => return Ok(vals),
                        t => return err(format!("found '{}', expected: ',' or ')'", t.lit())),
                    }
                }
                Tok::Comma => {
                    if vals.is_empty() {
                        vals.push(String::new()); // "(,"
                    }
                    match self.peek() {
                        Tok::ClosePar => {
                            vals.push(String::new()); // ",)"
                            return Ok(vals);
                        }
                        Tok::Comma => {
                            self.next();
                            vals.push(String::new()); // ",,"
                        }
                        _ => {}
                    }
                }
                t => {
                    return err(format!("found '{}', expected: ',', or identifier", t.lit()));
                }
            }
        }
    }
}

fn validate_label_key(key: &str) -> Result<(), SelectorError> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        err(format!(
            "key: Invalid value: \"{key}\": {}",
            errs.join("; ")
        ))
    }
}

/// apimachinery's `NewRequirement` checks, run after parsing a term.
fn validate_requirement(key: &str, op: LabelOp, values: &[String]) -> Result<(), SelectorError> {
    let mut errs: Vec<String> = Vec::new();
    if matches!(op, LabelOp::In | LabelOp::NotIn) && values.is_empty() {
        errs.push(
            "values: Required value: for 'in', 'notin' operators, values set can't be empty"
                .to_string(),
        );
    }
    if matches!(op, LabelOp::GreaterThan | LabelOp::LessThan) {
        if values.len() != 1 {
            errs.push(format!(
                "values: Invalid value: {values:?}: for 'Gt', 'Lt' operators, exactly one value is required"
            ));
        }
        for (i, v) in values.iter().enumerate() {
            if v.parse::<i64>().is_err() {
                errs.push(format!(
                    "values[{i}]: Invalid value: \"{v}\": for 'Gt', 'Lt' operators, the value must be an integer"
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        let ve = label_value_errors(v);
        if !ve.is_empty() {
            errs.push(format!(
                "values[{i}][{key}]: Invalid value: \"{v}\": {}",
                ve.join("; ")
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else if errs.len() == 1 {
        err(errs.remove(0))
    } else {
        err(format!("[{}]", errs.join(", ")))
    }
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

/// One `path=value` / `path!=value` term; `value` is already unescaped.
#[derive(Debug, Clone, PartialEq)]
struct FieldTerm {
    path: String,
    value: String,
    equal: bool,
}

/// A parsed `fieldSelector`: the conjunction of its terms. The default (no
/// terms) matches everything.
///
/// Unlike kube-apiserver, which accepts only a per-resource list of field
/// labels, any dotted path is looked up generically in the object's JSON; a
/// selector on a field the real server would reject therefore just compares
/// against "" here.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

impl FieldSelector {
    /// Parses `path=value`, `path==value`, `path!=value` terms separated by
    /// unescaped commas; values may contain `\,`, `\=` and `\\`. The path is
    /// trimmed of surrounding whitespace (the real server would instead reject
    /// it as an unsupported field label, which is no more useful to a test).
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for part in split_terms(s) {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, equal, rhs)) = split_term(part) else {
                return err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let path = lhs.trim();
            if path.is_empty() {
                return err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            }
            terms.push(FieldTerm {
                path: path.to_string(),
                value: unescape_value(rhs)?,
                equal,
            });
        }
        Ok(FieldSelector { terms })
    }

    /// Whether every term holds for the object. A missing field compares as
    /// the empty string, so `spec.nodeName=` selects unscheduled pods.
    pub fn matches_object(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let actual = lookup_field(obj, &t.path);
            (actual == t.value) == t.equal
        })
    }

    /// True for the selector that matches everything, so callers can skip filtering.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// the value required by an `=`/`==` term on this path, e.g. metadata.name — the server uses it to answer `fieldSelector=metadata.name=x` cheaply
    ///
    /// It is only a pre-filter: other terms may still reject the object, so the
    /// server must still call [`FieldSelector::matches_object`].
    pub fn required_value(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.equal && t.path == path)
            .map(|t| t.value.as_str())
    }

    /// The field paths the selector names, so that the server can refuse ones it does not
    /// support for the resource, as the real one does.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().map(|t| t.path.as_str())
    }
}

/// Splits on commas not preceded by a backslash, keeping escapes in the terms
/// (apimachinery's `splitTerms`).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first operator; `!=` and `==` are tried before `=` at each
/// position so that `a==b` does not leave `=b` as the value. Returns
/// (path, is-equality, raw value).
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(v) = rest.strip_prefix("!=") {
            return Some((&term[..i], false, v));
        }
        if let Some(v) = rest.strip_prefix("==") {
            return Some((&term[..i], true, v));
        }
        if let Some(v) = rest.strip_prefix('=') {
            return Some((&term[..i], true, v));
        }
    }
    None
}

/// apimachinery's `fields.UnescapeValue`: `\\`, `\,` and `\=` are the only
/// escapes, and unescaped `,` or `=` in a value are errors.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => {
                    return err(format!(
                        "invalid field selector: invalid escape sequence: \\{c}"
                    ));
                }
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return err(format!(
                    "invalid field selector: unescaped character in value: {c}"
                ));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return err("invalid field selector: invalid escape sequence: \\");
    }
    Ok(out)
}

/// Looks a dotted path up in the JSON (numeric segments index arrays) and
/// renders it the way the real field-label conversion does: strings as-is,
/// numbers and bools via their text, missing or null as "".
fn lookup_field<'a>(obj: &'a Value, path: &str) -> Cow<'a, str> {
    let mut cur = obj;
    for seg in path.split('.') {
        let next = match cur {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => cur = v,
            None => return Cow::Borrowed(""),
        }
    }
    match cur {
        Value::String(s) => Cow::Borrowed(s),
        Value::Null => Cow::Borrowed(""),
        Value::Number(n) => Cow::Owned(n.to_string()),
        Value::Bool(b) => Cow::Owned(b.to_string()),
        other => Cow::Owned(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} failed: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match LabelSelector::parse(s) {
            Ok(v) => panic!("{s:?} unexpectedly parsed as {v:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn empty_label_selector_matches_everything() {
        for s in ["", "   "] {
            let ls = sel(s);
            assert!(ls.is_empty());
            assert!(ls.matches(None));
            assert!(ls.matches(Some(&labels(json!({"a": "b"})))));
        }
        assert!(LabelSelector::default().matches_object(&json!({})));
        assert!(!sel("a").is_empty());
    }

    #[test]
    fn equality_operators() {
        let l = labels(json!({"app": "web", "tier": "front"}));
        assert!(sel("app=web").matches(Some(&l)));
        assert!(sel("app==web").matches(Some(&l)));
        assert!(!sel("app=db").matches(Some(&l)));
        assert!(sel("app!=db").matches(Some(&l)));
        assert!(!sel("app!=web").matches(Some(&l)));
        // `!=` matches objects lacking the key, `=` does not.
        assert!(sel("missing!=x").matches(Some(&l)));
        assert!(sel("missing!=x").matches(None));
        assert!(!sel("missing=x").matches(Some(&l)));
        // conjunction
        assert!(sel("app=web,tier=front").matches(Some(&l)));
        assert!(!sel("app=web,tier=back").matches(Some(&l)));
    }

    #[test]
    fn set_operators() {
        let l = labels(json!({"env": "prod"}));
        assert!(sel("env in (prod,staging)").matches(Some(&l)));
        assert!(!sel("env in (dev,staging)").matches(Some(&l)));
        assert!(!sel("env notin (prod)").matches(Some(&l)));
        assert!(sel("env notin (dev, staging)").matches(Some(&l)));
        // `in` requires the key, `notin` is satisfied without it.
        assert!(!sel("other in (prod)").matches(Some(&l)));
        assert!(sel("other notin (prod)").matches(Some(&l)));
        assert!(sel("other notin (prod)").matches(None));
    }

    #[test]
    fn exists_and_not_exists() {
        let l = labels(json!({"a": "1"}));
        assert!(sel("a").matches(Some(&l)));
        assert!(!sel("b").matches(Some(&l)));
        assert!(!sel("!a").matches(Some(&l)));
        assert!(sel("!b").matches(Some(&l)));
        assert!(sel("! b").matches(None));
        assert!(sel("a,!b").matches(Some(&l)));
    }

    #[test]
    fn whitespace_and_empty_values() {
        let l = labels(json!({"a": "", "b": "x"}));
        let ls = sel("  a =  ,  b in ( x , y ) , c notin(z)  ");
        assert_eq!(ls.requirements.len(), 3);
        assert!(ls.matches(Some(&l)));
        assert!(sel("a=").matches(Some(&l)));
        assert!(!sel("b=").matches(Some(&l)));
        assert!(sel("a in (x,)").matches(Some(&l)));
        assert!(sel("a in (,x)").matches(Some(&l)));
        assert_eq!(sel("k in (b,a,b)").requirements[0].values, vec!["a", "b"]);
        // `in` and `notin` are ordinary identifiers outside operator position.
        assert!(sel("in=notin").matches(Some(&labels(json!({"in": "notin"})))));
    }

    #[test]
    fn prefixed_keys_and_object_matching() {
        let obj = json!({"metadata": {"name": "p", "labels": {
            "app.kubernetes.io/name": "ferry", "batch.kubernetes.io/job-name": "j1"}}});
        assert!(sel("app.kubernetes.io/name=ferry").matches_object(&obj));
        assert!(sel("batch.kubernetes.io/job-name in (j1,j2)").matches_object(&obj));
        assert!(!sel("app.kubernetes.io/name=other").matches_object(&obj));
        // an object without labels behaves as an empty label set
        assert!(sel("!app").matches_object(&json!({"metadata": {}})));
        assert!(!sel("app").matches_object(&json!({})));
    }

    #[test]
    fn greater_and_less_than() {
        let l = labels(json!({"n": "5", "s": "abc"}));
        assert!(sel("n>3").matches(Some(&l)));
        assert!(!sel("n>5").matches(Some(&l)));
        assert!(sel("n<10").matches(Some(&l)));
        assert!(!sel("s>1").matches(Some(&l)));
        assert!(!sel("missing<1").matches(Some(&l)));
        assert!(parse_err("n>x").contains("the value must be an integer"));
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            parse_err("!!a"),
            "unable to parse requirement: found '!', expected: identifier after '!'"
        );
        assert_eq!(
            parse_err("a in ()"),
            "unable to parse requirement: values: Required value: for 'in', 'notin' operators, values set can't be empty"
        );
        assert_eq!(
            parse_err("a b"),
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            parse_err("a in b"),
            "unable to parse requirement: found 'b', expected: '('"
        );
        assert_eq!(
            parse_err("a in (b"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert_eq!(
            parse_err("a=b,"),
            "found '', expected: identifier after ','"
        );
        assert_eq!(
            parse_err("=a"),
            "found '=', expected: !, identifier, or 'end of string'"
        );
        assert_eq!(
            parse_err("a=b c"),
            "found 'c', expected: ',' or 'end of string'"
        );
        assert!(parse_err("!a=b").contains("expected: ',' or 'end of string'"));
        assert!(parse_err("a==b==c").contains("found '==', expected"));
    }

    #[test]
    fn invalid_keys_rejected() {
        let long = "a".repeat(64);
        let e = parse_err(&format!("{long}=x"));
        assert!(
            e.starts_with("unable to parse requirement: key: Invalid value:"),
            "{e}"
        );
        assert!(
            e.contains("name part must be no more than 63 characters"),
            "{e}"
        );
        assert!(sel(&format!("{}=x", "a".repeat(63))).requirements.len() == 1);

        let e = parse_err("-bad=x");
        assert!(
            e.contains("name part must consist of alphanumeric characters"),
            "{e}"
        );
        let e = parse_err("Example.com/a=x");
        assert!(
            e.contains("prefix part a lowercase RFC 1123 subdomain"),
            "{e}"
        );
        assert!(parse_err("/a").contains("prefix part must be non-empty"));
        assert!(parse_err("a/").contains("name part must be non-empty"));
        assert!(parse_err("a/b/c").contains("a qualified name must consist"));
        assert!(parse_err("a:b").contains("key: Invalid value: \"a:b\""));
    }

    #[test]
    fn invalid_values_rejected() {
        let e = parse_err(&format!("a={}", "v".repeat(64)));
        assert!(e.contains("values[0][a]: Invalid value"), "{e}");
        assert!(e.contains("must be no more than 63 characters"), "{e}");
        let e = parse_err("a in (ok,-bad)");
        assert!(e.contains("values[0][a]: Invalid value: \"-bad\""), "{e}");
        assert!(
            e.contains("a valid label must be an empty string or consist of"),
            "{e}"
        );
        assert!(parse_err("a=b/c").contains("Invalid value: \"b/c\""));
    }

    fn fsel(s: &str) -> FieldSelector {
        FieldSelector::parse(s).unwrap_or_else(|e| panic!("{s:?} failed: {e}"))
    }

    #[test]
    fn empty_field_selector_matches_everything() {
        let fs = fsel("");
        assert!(fs.is_empty());
        assert!(fs.matches_object(&json!({"metadata": {"name": "x"}})));
        assert!(fsel(",").is_empty());
        assert!(!fsel("metadata.name=x").is_empty());
    }

    #[test]
    fn field_equality_and_required_value() {
        let pod = json!({"metadata": {"name": "p1", "namespace": "ns"},
                         "status": {"phase": "Running"}});
        assert!(fsel("metadata.name=p1").matches_object(&pod));
        assert!(fsel("metadata.name==p1,metadata.namespace=ns").matches_object(&pod));
        assert!(!fsel("metadata.name=p2").matches_object(&pod));
        assert!(fsel("status.phase!=Pending").matches_object(&pod));
        assert!(!fsel("status.phase!=Running").matches_object(&pod));

        let fs = fsel("metadata.namespace!=x,metadata.name==p1");
        assert_eq!(fs.required_value("metadata.name"), Some("p1"));
        assert_eq!(fs.required_value("metadata.namespace"), None);
        assert_eq!(fs.required_value("status.phase"), None);
        assert_eq!(
            fsel("metadata.name=").required_value("metadata.name"),
            Some("")
        );
    }

    #[test]
    fn missing_fields_and_scalars() {
        let unscheduled = json!({"spec": {}});
        let scheduled = json!({"spec": {"nodeName": "n1", "replicas": 3, "paused": false}});
        assert!(fsel("spec.nodeName=").matches_object(&unscheduled));
        assert!(!fsel("spec.nodeName=").matches_object(&scheduled));
        assert!(fsel("spec.nodeName!=").matches_object(&scheduled));
        assert!(fsel("spec.replicas=3").matches_object(&scheduled));
        assert!(fsel("spec.paused=false").matches_object(&scheduled));
        assert!(fsel("spec.nodeName=").matches_object(&json!({"spec": {"nodeName": null}})));
        let ev = json!({"involvedObject": {"name": "j", "uid": "u-1"}});
        assert!(fsel("involvedObject.name=j,involvedObject.uid=u-1").matches_object(&ev));
        assert!(fsel(" involvedObject.name =j").matches_object(&ev));
    }

    #[test]
    fn field_value_escaping() {
        let obj = json!({"metadata": {"name": "a,b=c\\d"}});
        let fs = fsel(r"metadata.name=a\,b\=c\\d");
        assert_eq!(fs.required_value("metadata.name"), Some("a,b=c\\d"));
        assert!(fs.matches_object(&obj));
        // an escaped comma does not split, an unescaped one does
        let fs = fsel(r"metadata.name!=x\,y,status.phase=Ok");
        assert_eq!(fs.terms.len(), 2);
        assert_eq!(fs.terms[0].value, "x,y");
    }

    #[test]
    fn field_selector_errors() {
        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err().0,
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert!(
            FieldSelector::parse("a=b=c")
                .unwrap_err()
                .0
                .contains("unescaped character in value: =")
        );
        assert_eq!(
            FieldSelector::parse(r"a=b\x").unwrap_err().0,
            "invalid field selector: invalid escape sequence: \\x"
        );
        assert!(
            FieldSelector::parse(r"a=b\")
                .unwrap_err()
                .0
                .contains("invalid escape sequence")
        );
        assert!(
            FieldSelector::parse("=b")
                .unwrap_err()
                .0
                .contains("can't understand '=b'")
        );
    }
}
