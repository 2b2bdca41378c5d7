//! The crate's module architecture, checked from the source text under `src/`.
//!
//! `docs/architecture.md` and the top of `src/lib.rs` describe the shape: `request` is a leaf,
//! `identity` depends on it and defines ports, `runtime` implements those ports, `gate` runs
//! the pipeline and `adapters` call the gate. Dependencies point one way
//! (adapters → gate → identity → request; runtime → identity). Nothing in the compiler stops
//! a `use` that points backwards, so this test does:
//!
//! - `no_module_cycles_in_src`: the module graph has no strongly connected component;
//! - `identity_and_request_depend_on_neither_gate_adapters_nor_runtime`: the core never names
//!   the layers above it, and `request` names nothing outside itself;
//! - `no_runtime_cfg_in_identity_or_request`: the runtime (and target) is chosen in
//!   `src/runtime/mod.rs` only, never by a `cfg` in identity or request.
//!
//! The model. Each `.rs` file is a module (`src/a/mod.rs` is `a`, `src/a/b.rs` is `a::b`,
//! `src/lib.rs` is `crate`), and so is each inline `mod x { ... }` (so `lib.rs`'s facade
//! modules `native`, `workers`, `__private` are their own nodes, not the crate root). An edge
//! is a path starting with `crate::` or `super::` (in a `use`, nested groups included, or
//! inline), resolved to the longest existing module prefix; self-edges are dropped. A `pub use`
//! is a `use` too: a module that re-exports another's item depends on it. Relative
//! paths (`use child::X`) and `mod x;` declarations name a module's own children and are not
//! edges. Comments and string/char literals are lexed away first, and `#[cfg(test)]` items
//! (and files declared by `#[cfg(test)] mod x;`) are skipped. The parser works on `&str` (pure
//! functions); the real-tree tests feed it the files and the self-tests feed it synthetic ones.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

// ---------------------------------------------------------------------------------------------
// Lexer: just enough Rust to never mistake a comment or a literal for a path.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// `::`
    Sep,
    Punct(char),
    /// Numbers, char literals, lifetimes: never part of a module path.
    Other,
}

#[derive(Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_char(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// The end (exclusive) of a `"..."` body starting at `i`, escapes honoured.
fn string_end(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i] != '"' {
        i += if s[i] == '\\' { 2 } else { 1 };
    }
    i.min(s.len())
}

/// A raw string opening at `i` (`#*"`): the end of its body and the index after it.
fn raw_string(s: &[char], i: usize) -> Option<(usize, usize)> {
    let hashes = s[i..].iter().take_while(|&&c| c == '#').count();
    if s.get(i + hashes) != Some(&'"') {
        return None;
    }
    let mut j = i + hashes + 1;
    while j < s.len() {
        if s[j] == '"' && s[j + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some((j, j + 1 + hashes));
        }
        j += 1;
    }
    Some((s.len(), s.len()))
}

/// A char literal or a lifetime starting at the `'` at `i`; returns the index after it.
fn quote_end(s: &[char], i: usize) -> usize {
    let at = |k: usize| s.get(k).copied().unwrap_or('\0');
    if at(i + 1) == '\\' {
        let mut j = i + 3; // `'\n'`, `'\''`, `'\u{..}'`: skip the escaped char, find the close
        while j < s.len() && s[j] != '\'' {
            j += 1;
        }
        j + 1
    } else if at(i + 2) == '\'' {
        i + 3 // `'x'`
    } else {
        let mut j = i + 1; // a lifetime or label: `'a`, `'static`
        while j < s.len() && is_ident_char(s[j]) {
            j += 1;
        }
        j
    }
}

fn lex(src: &str) -> Vec<Token> {
    let s: Vec<char> = src.chars().collect();
    let at = |k: usize| s.get(k).copied().unwrap_or('\0');
    let (mut out, mut i, mut line, mut counted) = (Vec::new(), 0, 1, 0);
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        line += s[counted..i].iter().filter(|&&c| c == '\n').count();
        counted = i;
        let (tok, next) = if c == '/' && at(i + 1) == '/' {
            let end = s[i..].iter().position(|&c| c == '\n').map_or(s.len(), |p| i + p);
            (None, end)
        } else if c == '/' && at(i + 1) == '*' {
            let (mut j, mut depth) = (i + 2, 1);
            while j < s.len() && depth > 0 {
                match (s[j], at(j + 1)) {
                    ('/', '*') => (depth, j) = (depth + 1, j + 2),
                    ('*', '/') => (depth, j) = (depth - 1, j + 2),
                    _ => j += 1,
                }
            }
            (None, j)
        } else if c == '"' {
            let end = string_end(&s, i + 1);
            (Some(Tok::Str(s[i + 1..end].iter().collect())), end + 1)
        } else if c == '\'' {
            (Some(Tok::Other), quote_end(&s, i))
        } else if is_ident_start(c) {
            let j = i + s[i..].iter().take_while(|&&c| is_ident_char(c)).count();
            let word: String = s[i..j].iter().collect();
            match (word.as_str(), at(j)) {
                ("r" | "br" | "cr", '"' | '#') if raw_string(&s, j).is_some() => {
                    let (end, next) = raw_string(&s, j).unwrap_or_default();
                    let body = s[j..end].iter().skip_while(|&&c| c == '#').skip(1).collect();
                    (Some(Tok::Str(body)), next)
                }
                ("b" | "c", '"') => {
                    let end = string_end(&s, j + 1);
                    (Some(Tok::Str(s[j + 1..end].iter().collect())), end + 1)
                }
                ("b", '\'') => (Some(Tok::Other), quote_end(&s, j)),
                ("r", '#') if is_ident_start(at(j + 1)) => {
                    let k = j + 1 + s[j + 1..].iter().take_while(|&&c| is_ident_char(c)).count();
                    (Some(Tok::Ident(s[j + 1..k].iter().collect())), k)
                }
                _ => (Some(Tok::Ident(word)), j),
            }
        } else if c.is_ascii_digit() {
            (Some(Tok::Other), i + s[i..].iter().take_while(|&&c| is_ident_char(c)).count())
        } else if c == ':' && at(i + 1) == ':' {
            (Some(Tok::Sep), i + 2)
        } else {
            (Some(Tok::Punct(c)), i + 1)
        };
        if let Some(tok) = tok {
            out.push(Token { tok, line });
        }
        i = next;
    }
    out
}

fn ident(t: &[Token], i: usize) -> Option<&str> {
    match t.get(i).map(|t| &t.tok) {
        Some(Tok::Ident(w)) => Some(w),
        _ => None,
    }
}

fn is(t: &[Token], i: usize, want: &Tok) -> bool {
    t.get(i).is_some_and(|t| &t.tok == want)
}

/// The index of the bracket closing the one opened at `open`.
fn close_of(t: &[Token], open: usize) -> usize {
    let mut depth = 0i64;
    for (j, token) in t.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            return j;
        }
    }
    t.len()
}

/// Splits a token list at top-level commas.
fn args(t: &[Token]) -> Vec<&[Token]> {
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0i64);
    for (j, token) in t.iter().enumerate() {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => {
                out.push(&t[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    out.push(&t[start..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Parser: the paths a file names, per (inline) module.

#[derive(Debug)]
struct Ref {
    from: Module,
    /// Absolute segments, not yet resolved to a module.
    target: Module,
    line: usize,
    /// As written, e.g. `crate::runtime::SystemClock` or `super::jwks`.
    text: String,
}

#[derive(Debug, Default)]
struct Parsed {
    refs: Vec<Ref>,
    inline_modules: Vec<Module>,
    /// Children declared `#[cfg(test)] mod x;`: their files are skipped.
    test_only_children: Vec<Module>,
}

/// Whether a `cfg(...)` predicate holds only under `cfg(test)`: `test` or `all(.., test, ..)`.
fn requires_test(pred: &[Token]) -> bool {
    match pred {
        [only] => only.tok == Tok::Ident("test".into()),
        [all, open, inner @ .., _] if all.tok == Tok::Ident("all".into()) && open.tok == Tok::Punct('(') => {
            args(inner).into_iter().any(requires_test)
        }
        _ => false,
    }
}

/// Skips the item starting at `i` (up to its `;` or its balanced `{}`), noting `mod x;`.
fn skip_item(t: &[Token], mut i: usize, cur: &Module, parsed: &mut Parsed) -> usize {
    let mut depth = 0i64;
    while i < t.len() {
        match &t[i].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') if depth <= 1 => return i + usize::from(depth == 1),
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return i + 1,
            Tok::Ident(w) if w == "mod" && depth == 0 && is(t, i + 2, &Tok::Punct(';')) => {
                if let Some(name) = ident(t, i + 1) {
                    parsed.test_only_children.push([cur.clone(), vec![name.to_owned()]].concat());
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Expands a use tree at `i` (`a::b`, `a::{b, c::{d, self}}`, `a::*`) into paths below `prefix`.
fn use_tree(t: &[Token], mut i: usize, prefix: Module, out: &mut Vec<Module>) -> usize {
    match t.get(i).map(|t| &t.tok) {
        Some(Tok::Punct('{')) => {
            i += 1;
            while i < t.len() && !is(t, i, &Tok::Punct('}')) {
                i = use_tree(t, i, prefix.clone(), out);
                while i < t.len() && !matches!(t[i].tok, Tok::Punct(',' | '}')) {
                    i += 1; // `as Name`
                }
                i += usize::from(is(t, i, &Tok::Punct(',')));
            }
            i + 1
        }
        Some(Tok::Ident(w)) if w == "self" => {
            out.push(prefix);
            i + 1
        }
        Some(Tok::Ident(w)) => {
            let path = [prefix, vec![w.clone()]].concat();
            if is(t, i + 1, &Tok::Sep) {
                use_tree(t, i + 2, path, out)
            } else {
                out.push(path);
                i + 1
            }
        }
        _ => {
            out.push(prefix); // `*`, or `::<T>` after an inline path
            i
        }
    }
}

fn parse(module: &[String], src: &str) -> Parsed {
    let t = lex(src);
    let mut parsed = Parsed::default();
    // The module each open brace belongs to: (module, brace depth inside it).
    let mut stack: Vec<(Module, usize)> = vec![(module.to_vec(), 0)];
    let (mut i, mut depth) = (0, 0);
    while i < t.len() {
        let cur = stack.last().map(|(m, _)| m.clone()).unwrap_or_default();
        match &t[i].tok {
            Tok::Punct('#') if is(&t, i + 1, &Tok::Punct('[')) => {
                let close = close_of(&t, i + 1);
                let is_cfg = ident(&t, i + 2) == Some("cfg") && is(&t, i + 3, &Tok::Punct('('));
                if is_cfg && requires_test(&t[i + 4..close.saturating_sub(1).max(i + 4)]) {
                    i = skip_item(&t, close + 1, &cur, &mut parsed);
                    continue;
                }
            }
            Tok::Ident(w) if w == "mod" && is(&t, i + 2, &Tok::Punct('{')) => {
                if let Some(name) = ident(&t, i + 1) {
                    depth += 1;
                    let inner = [cur, vec![name.to_owned()]].concat();
                    parsed.inline_modules.push(inner.clone());
                    stack.push((inner, depth));
                    i += 3;
                    continue;
                }
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if stack.len() > 1 && stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(w) if (w == "crate" || w == "super") && is(&t, i + 1, &Tok::Sep) => {
                let line = t[i].line;
                let (mut base, mut head) = (Vec::new(), String::from("crate::"));
                if w == "crate" {
                    i += 2;
                } else {
                    (base, head) = (cur.clone(), String::new());
                    while ident(&t, i) == Some("super") && is(&t, i + 1, &Tok::Sep) {
                        base.pop();
                        head.push_str("super::");
                        i += 2;
                    }
                }
                let mut leaves = Vec::new();
                i = use_tree(&t, i, Vec::new(), &mut leaves);
                for rel in leaves {
                    let text = format!("{head}{}", rel.join("::")).trim_end_matches("::").to_owned();
                    let target = [base.clone(), rel].concat();
                    parsed.refs.push(Ref { from: cur.clone(), target, line, text });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    parsed
}

// ---------------------------------------------------------------------------------------------
// The graph.

/// Where an edge comes from: `file:line` and the path as written.
type Reasons = Vec<String>;

struct Graph {
    files: usize,
    modules: BTreeSet<Module>,
    edges: BTreeMap<Module, BTreeMap<Module, Reasons>>,
}

fn name(m: &Module) -> String {
    if m.is_empty() { "crate".to_owned() } else { m.join("::") }
}

/// `src/a/mod.rs` → `a`, `src/a/b.rs` → `a::b`, `src/lib.rs` → the root.
fn module_of(path: &str) -> Module {
    let rel = path.strip_prefix("src/").unwrap_or(path).trim_end_matches(".rs");
    let mut m: Module = rel.split('/').map(str::to_owned).collect();
    if m.last().is_some_and(|l| l == "mod") || m == ["lib"] || m == ["main"] {
        m.pop();
    }
    m
}

/// Builds the graph from `(path relative to the crate, source)` pairs.
fn build_graph(files: &[(String, String)]) -> Graph {
    let parsed: Vec<(&str, Module, Parsed)> =
        files.iter().map(|(p, src)| (p.as_str(), module_of(p), parse(&module_of(p), src))).collect();
    let test_only: Vec<Module> = parsed.iter().flat_map(|(_, _, p)| p.test_only_children.clone()).collect();
    let live: Vec<_> =
        parsed.iter().filter(|(_, m, _)| !test_only.iter().any(|t| m.starts_with(t))).collect();
    let mut modules: BTreeSet<Module> = BTreeSet::from([Vec::new()]);
    for (_, m, p) in &live {
        modules.insert(m.clone());
        modules.extend(p.inline_modules.iter().cloned());
    }
    let mut edges: BTreeMap<Module, BTreeMap<Module, Reasons>> = BTreeMap::new();
    for (file, _, p) in &live {
        for r in &p.refs {
            let k = (0..=r.target.len()).rev().find(|&k| modules.contains(&r.target[..k])).unwrap_or(0);
            let to = r.target[..k].to_vec();
            if to != r.from {
                let why = format!("{file}:{} `{}`", r.line, r.text);
                edges.entry(r.from.clone()).or_default().entry(to).or_default().push(why);
            }
        }
    }
    Graph { files: live.len(), modules, edges }
}

impl Graph {
    fn edge_count(&self) -> usize {
        self.edges.values().map(BTreeMap::len).sum()
    }

    /// Strongly connected components of two or more modules (Tarjan).
    fn cycles(&self) -> Vec<Vec<Module>> {
        struct Tarjan<'g> {
            g: &'g Graph,
            index: BTreeMap<&'g Module, (usize, usize)>, // (index, lowlink)
            stack: Vec<&'g Module>,
            out: Vec<Vec<Module>>,
        }
        impl<'g> Tarjan<'g> {
            fn visit(&mut self, v: &'g Module) -> usize {
                let n = self.index.len();
                self.index.insert(v, (n, n));
                self.stack.push(v);
                let (g, mut low) = (self.g, n);
                for w in g.edges.get(v).into_iter().flat_map(BTreeMap::keys) {
                    low = match self.index.get(w) {
                        None => low.min(self.visit(w)),
                        Some(&(i, _)) if self.stack.contains(&w) => low.min(i),
                        Some(_) => low,
                    };
                }
                self.index.insert(v, (n, low));
                if low == n {
                    let at = self.stack.iter().rposition(|m| *m == v).unwrap_or(0);
                    let comp: Vec<Module> = self.stack.drain(at..).cloned().collect();
                    if comp.len() > 1 {
                        self.out.push(comp);
                    }
                }
                low
            }
        }
        let mut t = Tarjan { g: self, index: BTreeMap::new(), stack: Vec::new(), out: Vec::new() };
        for m in &self.modules {
            if !t.index.contains_key(m) {
                t.visit(m);
            }
        }
        t.out
    }

    /// One paragraph per cycle: its modules, then each edge inside it with what caused it.
    fn cycle_report(&self) -> Vec<String> {
        let mut out = Vec::new();
        for comp in self.cycles() {
            let mut text = format!(
                "cycle of {} modules: {}",
                comp.len(),
                comp.iter().map(name).collect::<Vec<_>>().join(", ")
            );
            for from in &comp {
                for (to, why) in
                    self.edges.get(from).into_iter().flatten().filter(|(to, _)| comp.contains(to))
                {
                    text.push_str(&format!("\n  {} -> {}: {}", name(from), name(to), why.join("; ")));
                }
            }
            out.push(text);
        }
        out
    }

    /// Edges that point backwards: out of the leaf, or from the core up to the outer layers.
    fn forbidden_edges(&self) -> Vec<String> {
        let top = |m: &Module| m.first().cloned().unwrap_or_default();
        let mut out = Vec::new();
        for (from, tos) in &self.edges {
            for (to, why) in tos {
                let rule = if top(from) == "request"
                    && top(to) != "request"
                    && !REQUEST_MAY_USE.contains(&name(to).as_str())
                {
                    "request is a leaf"
                } else if ["identity", "request"].contains(&top(from).as_str())
                    && OUTER.contains(&top(to).as_str())
                {
                    "identity and request never name gate, adapters or a runtime"
                } else {
                    continue;
                };
                out.push(format!("{} -> {} ({rule}): {}", name(from), name(to), why.join("; ")));
            }
        }
        out
    }
}

/// What `request` may name outside itself: nothing. Today it names no other module, and none
/// would fit a leaf: `error` names `request::RequestError` (so request → error is a cycle),
/// `secrets` names `clock`, which re-exports `runtime::SystemClock`, and the crate root
/// re-exports everything, the gate included.
const REQUEST_MAY_USE: &[&str] = &[];

/// The layers above identity. `native` and `workers` are `lib.rs`'s runtime facade modules.
const OUTER: &[&str] = &["gate", "adapters", "runtime", "native", "workers"];

// ---------------------------------------------------------------------------------------------
// `cfg` in identity and request.

/// `cfg` predicates identity and request may use: build-profile ones, and `dev` (today
/// `identity/hmac_token.rs` gates `KeyRing::random` behind it: a dev-mode helper that picks no
/// platform). Anything else fails, so a new runtime feature cannot slip in under a new name.
const ALLOWED_CFG: &[&str] = &["test", "doc", "doctest", "debug_assertions", "feature = \"dev\""];

/// The crypto backend is chosen in `identity/rs256/mod.rs` (`docs/architecture.md`): a choice of
/// algorithm implementation, not of platform. Allowed under `src/identity/rs256/` only.
const CRYPTO_CFG: &[&str] =
    &["feature = \"jwt_simple\"", "feature = \"aws_lc_rs\"", "feature = \"rust_crypto\""];

/// Every predicate atom in a `cfg(..)`, `cfg_attr(pred, ..)` or `cfg!(..)` that is not allowed
/// in `file`, as `file:line: atom in cfg(..)`.
fn disallowed_cfgs(file: &str, src: &str) -> Vec<String> {
    let t = lex(src);
    let mut out = Vec::new();
    for i in 0..t.len() {
        let open = match ident(&t, i) {
            Some("cfg") if is(&t, i + 1, &Tok::Punct('!')) => i + 2,
            Some("cfg" | "cfg_attr") if i > 0 && matches!(t[i - 1].tok, Tok::Punct('[' | '(' | ',')) => i + 1,
            _ => continue,
        };
        if !is(&t, open, &Tok::Punct('(')) {
            continue;
        }
        let body = &t[open + 1..close_of(&t, open).max(open + 1)];
        let pred = if ident(&t, i) == Some("cfg_attr") { args(body)[0] } else { body };
        for (j, token) in pred.iter().enumerate() {
            let Tok::Ident(key) = &token.tok else { continue };
            if ["all", "any", "not"].contains(&key.as_str()) {
                continue;
            }
            let atom = match (pred.get(j + 1).map(|t| &t.tok), pred.get(j + 2).map(|t| &t.tok)) {
                (Some(Tok::Punct('=')), Some(Tok::Str(v))) => format!("{key} = \"{v}\""),
                _ => key.clone(),
            };
            let crypto_ok = file.starts_with("src/identity/rs256/") && CRYPTO_CFG.contains(&atom.as_str());
            if !crypto_ok && !ALLOWED_CFG.contains(&atom.as_str()) {
                let what = ident(&t, i).unwrap_or_default();
                out.push(format!("{file}:{}: `{atom}` in {what}(..)", token.line));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The real tree.

/// Every `.rs` file under `src/`, as (`src/...` with `/` separators, contents), sorted.
fn src_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (mut out, mut dirs) = (Vec::new(), vec![root.join("src")]);
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under the crate");
                let rel: Vec<_> = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect();
                out.push((rel.join("/"), std::fs::read_to_string(&path).expect("read source")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn no_module_cycles_in_src() {
    let g = build_graph(&src_files());
    let cycles = g.cycle_report();
    println!(
        "architecture: {} files, {} modules, {} edges, {} cycles",
        g.files,
        g.modules.len(),
        g.edge_count(),
        cycles.len()
    );
    assert!(g.files > 10 && g.edge_count() > 10, "the checker read almost nothing: is src/ there?");
    assert!(cycles.is_empty(), "module cycles in src/:\n{}", cycles.join("\n"));
}

#[test]
fn identity_and_request_depend_on_neither_gate_adapters_nor_runtime() {
    let g = build_graph(&src_files());
    let seen =
        |from: &str, to: &str| g.edges.get(&module_of(from)).is_some_and(|t| t.contains_key(&module_of(to)));
    // The checker must see the edges that are there, or "no forbidden edge" means nothing.
    assert!(seen("identity/access_jwt", "request") && seen("runtime/native", "identity/jwks"));
    let bad = g.forbidden_edges();
    assert!(bad.is_empty(), "forbidden dependencies in src/:\n{}", bad.join("\n"));
}

#[test]
fn no_runtime_cfg_in_identity_or_request() {
    let files = src_files();
    let core: Vec<_> = files
        .iter()
        .filter(|(p, _)| p.starts_with("src/identity/") || p.starts_with("src/request/"))
        .collect();
    assert!(core.len() > 5, "identity and request files not found");
    let bad: Vec<String> = core.iter().flat_map(|(p, src)| disallowed_cfgs(p, src)).collect();
    assert!(
        bad.is_empty(),
        "runtime/target cfg in identity or request (choose it in src/runtime/mod.rs):\n{}",
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Self-tests: the checker catches what it claims, and only that.

fn files(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(p, s)| (p.to_string(), s.to_string())).collect()
}

fn edges_of(g: &Graph, from: &str) -> Vec<String> {
    g.edges.get(&module_of(from)).into_iter().flat_map(BTreeMap::keys).map(name).collect()
}

#[test]
fn self_test_two_module_cycle_is_reported() {
    let g = build_graph(&files(&[
        ("src/lib.rs", "mod a; mod b;"),
        ("src/a.rs", "use crate::b::X;"),
        ("src/b.rs", "pub fn f() {\n    crate::a::g();\n}"),
    ]));
    let report = g.cycle_report();
    assert_eq!(report.len(), 1, "{report:?}");
    assert!(report[0].contains("a -> b: src/a.rs:1 `crate::b::X`"), "{}", report[0]);
    assert!(report[0].contains("b -> a: src/b.rs:2 `crate::a::g`"), "{}", report[0]);
}

#[test]
fn self_test_forbidden_edges_are_reported() {
    let g = build_graph(&files(&[
        ("src/identity/mod.rs", "use crate::runtime::SystemClock;"),
        ("src/runtime/mod.rs", "use crate::identity::Port;"),
        ("src/request/mod.rs", "use crate::error::Rejection;\nuse crate::request::Facts;"),
        ("src/error.rs", ""),
    ]));
    let bad = g.forbidden_edges();
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert!(
        bad.iter()
            .any(|b| b.starts_with("identity -> runtime") && b.contains("`crate::runtime::SystemClock`"))
    );
    assert!(bad.iter().any(|b| b.starts_with("request -> error (request is a leaf)")));
}

#[test]
fn self_test_comments_literals_and_test_items_are_not_edges() {
    let identity = r####"
//! crate::runtime::a
// crate::runtime::b
/// crate::runtime::c
/* outer /* nested crate::runtime::d */ still a comment crate::runtime::e */
const S: &str = "crate::runtime::f \" crate::runtime::g";
const R: &str = r#"crate::runtime::h " still raw crate::runtime::i"#;
const R2: &str = r##"crate::runtime::j "# still raw crate::runtime::k"##;
const B: &[u8] = br#"crate::runtime::l"#;
const Q: char = '"';
const E: char = '\'';
const BS: &str = "\\";
fn lt<'a>(x: &'a str) -> &'a str { let _ = "crate::runtime::m"; x }
impl<'a> Tr for crate::clock::Lifetimed<'a> {}
#[cfg(test)]
mod tests {
    use crate::runtime::n;
    fn f() { if true { crate::runtime::o(); } }
}
#[cfg(all(test, feature = "x"))]
use crate::runtime::p;
#[cfg(test)]
mod more;
use crate::gate::Real;
"####;
    let g = build_graph(&files(&[
        ("src/identity/mod.rs", identity),
        ("src/identity/more.rs", "use crate::runtime::q;"),
        ("src/runtime/mod.rs", ""),
        ("src/gate/mod.rs", ""),
        ("src/clock.rs", ""),
    ]));
    // Only `clock` (between two lifetimes) and the last line are edges: the lexer got back in
    // step after every literal, and did not read `'a> ... <'a` as one char literal.
    assert_eq!(edges_of(&g, "identity"), ["clock", "gate"]);
    assert!(edges_of(&g, "identity/more").is_empty(), "a test-only file was read");
}

#[test]
fn self_test_nested_use_groups_super_and_inline_modules() {
    let g = build_graph(&files(&[
        ("src/lib.rs", "pub mod facade {\n    pub use crate::a::b::X;\n}\n"),
        (
            "src/x.rs",
            "use crate::{a::{b, c as d}, e::{self, F as G}};\nfn f() { crate::a::b::Y::<u8>::new(); }",
        ),
        ("src/a/mod.rs", "use super::e::Z;"),
        ("src/a/b.rs", "use super::{c::*, T};\nfn f() { super::super::e::g() }"),
        ("src/a/c.rs", ""),
        ("src/e.rs", ""),
    ]));
    assert_eq!(edges_of(&g, "x"), ["a::b", "a::c", "e"]);
    assert_eq!(edges_of(&g, "a"), ["e"]);
    assert_eq!(edges_of(&g, "a/b"), ["a", "a::c", "e"]);
    assert_eq!(edges_of(&g, "facade"), ["a::b"]);
    assert!(edges_of(&g, "lib").is_empty(), "an inline module's paths were given to its parent");
}

#[test]
fn self_test_runtime_cfgs_are_reported() {
    let src = r#"
#[cfg(feature = "native")]
fn a() {}
fn b() -> bool { cfg!(target_arch = "wasm32") }
#[cfg_attr(target_family = "wasm", allow(dead_code))]
#[cfg(all(test, not(feature = "workers")))]
fn c() {}
#[cfg(feature = "jwt_simple")]
fn d() {}
#[cfg(test)] #[cfg(feature = "dev")] #[cfg_attr(test, derive(Debug))]
fn ok() { let _ = cfg.grace; let _ = "cfg(feature = \"native\")"; }
"#;
    let bad = disallowed_cfgs("src/identity/x.rs", src);
    let atoms = ["native", "target_arch", "target_family", "workers", "jwt_simple"];
    assert_eq!(bad.len(), atoms.len(), "{bad:?}");
    assert!(atoms.iter().zip(&bad).all(|(a, b)| b.contains(a)), "{bad:?}");
    assert!(bad[0].starts_with("src/identity/x.rs:2: `feature = \"native\"` in cfg(..)"), "{bad:?}");
    // The crypto backend may be chosen in identity/rs256, and only there.
    assert_eq!(disallowed_cfgs("src/identity/rs256/mod.rs", src).len(), atoms.len() - 1);
}
