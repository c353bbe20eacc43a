//! Roles map to operations on source-name patterns.

use std::collections::BTreeMap;

use globset::{GlobBuilder, GlobMatcher};
use serde::Deserialize;

use crate::Error;

/// An operation of the data service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Upload a new version.
    Put,
    /// Download.
    Get,
    /// List names.
    List,
    /// Describe one source.
    Stat,
    /// Delete.
    Delete,
}

impl Op {
    /// The name used in configuration and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Stat => "stat",
            Op::Delete => "delete",
        }
    }

    fn parse(s: &str) -> Option<Vec<Op>> {
        Some(match s {
            "*" => vec![Op::Put, Op::Get, Op::List, Op::Stat, Op::Delete],
            "put" => vec![Op::Put],
            "get" => vec![Op::Get],
            "list" => vec![Op::List],
            "stat" => vec![Op::Stat],
            "delete" => vec![Op::Delete],
            _ => return None,
        })
    }
}

/// One rule as written in `ferry.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Operations allowed.
    pub ops: Vec<String>,
    /// Source patterns they are allowed on.
    pub sources: Vec<String>,
}

#[derive(Debug)]
enum Pattern {
    Fixed(GlobMatcher),
    /// Contains `{name}`: compiled per principal.
    PerName(String),
}

#[derive(Debug)]
struct CompiledRule {
    ops: Vec<Op>,
    patterns: Vec<Pattern>,
}

/// The compiled role rules.
#[derive(Debug)]
pub struct Policy {
    roles: BTreeMap<String, Vec<CompiledRule>>,
}

fn compile(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()?
        .compile_matcher())
}

impl Policy {
    /// Compiles the rules.
    pub fn new(roles: &BTreeMap<String, Vec<Rule>>) -> Result<Self, Error> {
        let mut out = BTreeMap::new();
        for (role, rules) in roles {
            let mut compiled = Vec::new();
            for rule in rules {
                let mut ops = Vec::new();
                for op in &rule.ops {
                    ops.extend(Op::parse(op).ok_or_else(|| {
                        Error::Config(format!("ferry.toml: role {role}: unknown operation {op:?}"))
                    })?);
                }
                let mut patterns = Vec::new();
                for written in &rule.sources {
                    // Names are matched in NFC (PROTOCOL.md §5.1), so patterns are too: a
                    // pattern typed in another form still matches the names it shows.
                    let p = &ferry_proto::names::nfc(written);
                    // Check the pattern compiles, with a sample name substituted.
                    compile(&p.replace("{name}", "x")).map_err(|e| {
                        Error::Config(format!("ferry.toml: role {role}: pattern {written:?}: {e}"))
                    })?;
                    patterns.push(if p.contains("{name}") {
                        Pattern::PerName(p.clone())
                    } else {
                        Pattern::Fixed(compile(p).map_err(|e| Error::Config(e.to_string()))?)
                    });
                }
                compiled.push(CompiledRule { ops, patterns });
            }
            out.insert(role.clone(), compiled);
        }
        Ok(Self { roles: out })
    }

    /// The built-in roles, as in the default `ferry.toml`.
    #[cfg(test)]
    pub fn defaults() -> Self {
        let c = crate::config::Config::parse(crate::config::DEFAULT_CONFIG);
        match c.and_then(|c| Self::new(&c.roles)) {
            Ok(p) => p,
            Err(_) => Self {
                roles: BTreeMap::new(),
            },
        }
    }

    /// Whether a principal with `role` and `name` may do `op` on `source`.
    pub fn allows(&self, role: Option<&str>, name: &str, op: Op, source: &str) -> bool {
        let Some(rules) = role.and_then(|r| self.roles.get(r)) else {
            return false;
        };
        rules.iter().filter(|r| r.ops.contains(&op)).any(|r| {
            r.patterns.iter().any(|p| match p {
                Pattern::Fixed(m) => m.is_match(source),
                // Names are validated to letters, digits and . _ -, so they cannot inject
                // pattern syntax.
                Pattern::PerName(p) => {
                    compile(&p.replace("{name}", name)).is_ok_and(|m| m.is_match(source))
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roles() {
        let p = Policy::defaults();
        assert!(p.allows(Some("admin"), "a", Op::Delete, "x/y"));
        assert!(p.allows(Some("writer"), "a", Op::Put, "x/y/z"));
        assert!(p.allows(Some("reader"), "a", Op::Get, "x"));
        assert!(!p.allows(Some("reader"), "a", Op::Put, "x"));
        assert!(!p.allows(Some("reader"), "a", Op::Delete, "x"));
        assert!(!p.allows(Some("nobody"), "a", Op::Get, "x"));
        assert!(!p.allows(None, "a", Op::Get, "x"));
    }

    #[test]
    fn patterns_and_name_substitution() {
        let c = crate::config::Config::parse(
            "[roles]\nuploader = [{ ops = [\"put\"], sources = [\"inbox/{name}/**\", \"public/*\"] }]",
        )
        .unwrap();
        let p = Policy::new(&c.roles).unwrap();
        let r = Some("uploader");
        assert!(p.allows(r, "bob", Op::Put, "inbox/bob/a/b"));
        assert!(!p.allows(r, "bob", Op::Put, "inbox/alice/a"));
        assert!(p.allows(r, "bob", Op::Put, "public/x"));
        assert!(!p.allows(r, "bob", Op::Put, "public/x/y"));
        assert!(!p.allows(r, "bob", Op::Get, "public/x"));
    }

    /// Patterns match names in NFC whatever form they were written in; `*` spans any
    /// characters of a segment; `?` matches one byte (the glob engine works on bytes), so it
    /// never matches a character of several bytes (PROTOCOL.md §6).
    #[test]
    fn unicode_patterns() {
        let c = crate::config::Config::parse(
            r#"[roles]
r = [{ ops = ["get"], sources = ["e\u0301te\u0301/*", "?.txt", "\u65e5\u672c/**"] }]"#,
        )
        .unwrap();
        let p = Policy::new(&c.roles).unwrap();
        let r = Some("r");
        let allows = |s: &str| {
            p.allows(
                r,
                "a",
                Op::Get,
                ferry_proto::names::SourceName::parse(s).unwrap().as_str(),
            )
        };
        assert!(allows("\u{e9}t\u{e9}/Q3 report.pdf"));
        assert!(allows("e\u{301}te\u{301}/x"));
        assert!(!allows("\u{e9}t\u{e9}/a/b"));
        assert!(allows("e.txt"));
        assert!(!allows("\u{e9}.txt"));
        assert!(!allows("ab.txt"));
        assert!(allows("\u{65e5}\u{672c}/\u{30d5}\u{30a1}\u{30a4}\u{30eb}"));
        assert!(!allows("\u{65e5}/x"));
    }
}
