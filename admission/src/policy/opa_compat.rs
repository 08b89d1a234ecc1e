//! Rego as OPA reads it, on regorus: a source-to-source pass applied to every module before
//! regorus loads it, for the differences that can be closed without changing the engine.
//!
//! - **Arguments of a negated call are evaluated outside the negation.** OPA compiles
//!   `not f(input.x)` as `__local0__ = input.x; not f(__local0__)`, so an undefined argument
//!   fails the whole body; regorus makes only the call undefined and `not` succeeds. Each
//!   argument of a negated call (operator or function, `==` and `=` excepted, whose plain
//!   references OPA leaves in place) that holds a reference or a call is bound to a fresh
//!   variable just before the `not`, as OPA does.
//! - **A line that starts with `(`** is a new expression in OPA; regorus reads it as a call of
//!   the previous line's last term, so a `;` is put between them (inside braces).
//! - **Old-style multi-body rules** (`p[x] { A } { B }`, Rego v0) mean `p[x] { A }` and
//!   `p[x] { B }`; regorus refuses them for set rules, so the head is repeated before each
//!   further body.
//! - **Test rules defined more than once** are separate tests in `opa test` (`test_x`,
//!   `test_x#01`); regorus would merge them into one rule, so each later definition is renamed
//!   and reported under OPA's name.
//!
//! Edits never add a line, so line numbers in regorus' messages stay those of the file.

use regorus::unstable::{
    BoolOp, Expr, Lexer, Literal, LiteralStmt, Module, Parser, Query, Rule, RuleHead, Source,
    Token, TokenKind,
};

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither Rego v1 nor Rego v0 parses the module; both parsers' messages.
    #[error("{path}: not valid Rego v1:\n{v1}\nnor Rego v0:\n{v0}")]
    Parse {
        /// The module's path.
        path: String,
        /// The Rego v1 parser's message.
        v1: String,
        /// The Rego v0 parser's message.
        v0: String,
    },
    /// The module does not parse in the Rego version it was given.
    #[error("{0}")]
    Syntax(String),
    /// regorus refused the module after the rewrite (compile-time checks).
    #[error("{0}")]
    Load(String),
}

/// The Rego version a module is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Rego v1 (`if`, `contains`).
    V1,
    /// Rego v0 (Gatekeeper templates without `version: v1`).
    V0,
    /// v1 when it parses, else v0, as `opa test --v0-compatible` users expect of a mixed tree.
    Either,
}

/// A test rule of a loaded module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRule {
    /// The rule's path in the engine: `data.pkg.test_x`, or the renamed later definition.
    pub rule: String,
    /// The name `opa test` reports: `data.pkg.test_x`, `data.pkg.test_x#01`, ...
    pub name: String,
}

/// What loading a module gave.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// `data.`-qualified package.
    pub package: String,
    /// Its `test_*` rules, in source order.
    pub tests: Vec<TestRule>,
}

/// Suffix of a renamed later definition of a test rule.
const DUPLICATE_MARK: &str = "__meshgate_";
/// Prefix of the variables that hold hoisted arguments.
const HOIST_PREFIX: &str = "__meshgate_arg";

/// Rewrites `text` as described in the module docs and adds it to `engine`.
pub fn add_policy(
    engine: &mut regorus::Engine,
    path: &str,
    text: &str,
    version: Version,
) -> Result<Loaded, Error> {
    let (rewritten, tests, v1) = match version {
        Version::V1 => rewrite(path, text, true).map(|(t, tests)| (t, tests, true)),
        Version::V0 => rewrite(path, text, false).map(|(t, tests)| (t, tests, false)),
        Version::Either => match rewrite(path, text, true) {
            Ok((t, tests)) => Ok((t, tests, true)),
            Err(v1) => match rewrite(path, text, false) {
                Ok((t, tests)) => Ok((t, tests, false)),
                Err(v0) => {
                    return Err(Error::Parse {
                        path: path.to_string(),
                        v1: v1.to_string(),
                        v0: v0.to_string(),
                    });
                }
            },
        },
    }?;
    engine.set_rego_v0(!v1);
    let package = engine
        .add_policy(path.to_string(), rewritten)
        .map_err(|e| Error::Load(format!("{e:#}")))?;
    let package = if package.starts_with("data.") {
        package
    } else {
        format!("data.{package}")
    };
    let tests = tests
        .into_iter()
        .map(|(rule, name)| TestRule {
            rule: format!("{package}.{rule}"),
            name: format!("{package}.{name}"),
        })
        .collect();
    Ok(Loaded { package, tests })
}

/// The rewritten text and the test rules (engine name, reported name).
pub fn rewrite(path: &str, text: &str, v1: bool) -> Result<(String, Vec<(String, String)>), Error> {
    let separated = separate_parenthesised_lines(path, text);
    let text = separated.as_deref().unwrap_or(text);
    let text = match parse(path, text, v1) {
        Ok(_) => text.to_string(),
        Err(first) => match split_bodies(path, text) {
            // Only when the split makes it parse: otherwise the original message is the one
            // that says what is wrong.
            Some(split) if parse(path, &split, v1).is_ok() => split,
            _ => return Err(first),
        },
    };
    let module = parse(path, &text, v1)?;
    let mut edits = Edits::default();
    let mut counter = 0usize;
    for rule in &module.policy {
        rule_edits(rule, &text, &mut edits, &mut counter);
    }
    let tests = test_rules(&module, &mut edits);
    Ok((edits.apply(&text), tests))
}

/// Names given to calls of the v0 builtins `all` and `any`, which Rego v1 removed, by
/// [`to_v1`]; the engine that reads the result provides them.
pub const V0_BUILTINS: [(&str, &str); 2] = [("all", "v0_all"), ("any", "v0_any")];

/// A Rego v0 module written as Rego v1 (`if` before each body, `contains` for partial sets,
/// `all(...)`/`any(...)` calls renamed per [`V0_BUILTINS`]), for engines that read only v1,
/// such as OPA 1.x's own library in the differential test. Nothing else changes: the
/// semantics are v0's.
pub fn to_v1(path: &str, text: &str) -> Result<String, Error> {
    let module = parse(path, text, false)?;
    let mut edits = Edits::default();
    let source = Source::from_contents(path.to_string(), text.to_string())
        .map_err(|e| Error::Syntax(format!("{e:#}")))?;
    let mut lexer = Lexer::new(&source);
    let mut tokens = Vec::new();
    loop {
        let token = lexer
            .next_token()
            .map_err(|e| Error::Syntax(format!("{e:#}")))?;
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push(token);
    }
    for (i, token) in tokens.iter().enumerate() {
        let after_dot =
            i > 0 && tokens[i - 1].0 == TokenKind::Symbol && tokens[i - 1].1.text() == ".";
        let called = tokens.get(i + 1).is_some_and(|t| {
            t.0 == TokenKind::Symbol && t.1.text() == "(" && t.1.start == token.1.end
        });
        if token.0 != TokenKind::Ident || after_dot || !called {
            continue;
        }
        if let Some((_, renamed)) = V0_BUILTINS.iter().find(|(name, _)| *name == token.1.text()) {
            let (start, end) = range(&token.1);
            edits.replace(start, end, (*renamed).to_string());
        }
    }
    for rule in &module.policy {
        let Rule::Spec { head, bodies, .. } = &**rule else {
            continue;
        };
        if let RuleHead::Set {
            refr, key: Some(_), ..
        } = head
        {
            // `p[key]` → `p contains key`: the `[` after the name and its matching `]`.
            let (_, refr_end) = range(refr.span());
            let symbol = |t: &Token, s: &str| t.0 == TokenKind::Symbol && t.1.text() == s;
            if let Some(open) = tokens
                .iter()
                .position(|t| t.1.start as usize >= refr_end && symbol(t, "["))
            {
                let mut depth = 0i32;
                for t in &tokens[open..] {
                    match t.1.text() {
                        "[" | "{" | "(" if t.0 == TokenKind::Symbol => depth += 1,
                        "]" | "}" | ")" if t.0 == TokenKind::Symbol => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        let (open_start, open_end) = range(&tokens[open].1);
                        edits.replace(refr_end, open_end.max(open_start), " contains ".into());
                        let (close_start, close_end) = range(&t.1);
                        edits.replace(close_start, close_end, String::new());
                        break;
                    }
                }
            }
        }
        for body in bodies {
            // The body's `{`: where its query starts, or for an `else` body (whose query span
            // starts at `else`) the first `{` after its value.
            let (start, _) = range(&body.query.span);
            let brace = if text.get(start..).is_some_and(|t| t.starts_with('{')) {
                Some(start)
            } else if body.is_else {
                let from = body
                    .assign
                    .as_ref()
                    .map_or(start, |a| range(a.value.span()).1);
                tokens
                    .iter()
                    .find(|t| {
                        t.1.start as usize >= from && t.0 == TokenKind::Symbol && t.1.text() == "{"
                    })
                    .map(|t| t.1.start as usize)
                    .filter(|at| *at < range(&body.span).1)
            } else {
                None
            };
            if let Some(at) = brace {
                edits.insert(at, "if ".into());
            }
        }
    }
    Ok(edits.apply(text))
}

fn parse(path: &str, text: &str, v1: bool) -> Result<Module, Error> {
    let syntax = |e: anyhow::Error| Error::Syntax(format!("{e:#}"));
    let source = Source::from_contents(path.to_string(), text.to_string()).map_err(syntax)?;
    let mut parser = Parser::new(&source).map_err(syntax)?;
    if v1 {
        parser.enable_rego_v1().map_err(syntax)?;
    }
    parser.parse().map_err(syntax)
}

/// Text edits by byte offset, applied back to front.
#[derive(Default)]
struct Edits {
    /// (start, end, replacement); `start == end` inserts.
    list: Vec<(usize, usize, String)>,
}

impl Edits {
    fn insert(&mut self, at: usize, text: String) {
        self.list.push((at, at, text));
    }

    fn replace(&mut self, start: usize, end: usize, text: String) {
        self.list.push((start, end, text));
    }

    /// Whether a replacement would touch a range already edited.
    fn overlaps(&self, start: usize, end: usize) -> bool {
        self.list
            .iter()
            .any(|(s, e, _)| (*s < end && start < *e) || (s == e && start < *s && *s < end))
    }

    fn apply(mut self, text: &str) -> String {
        // Back to front; at one offset, later insertions go first so that they end up after
        // earlier ones.
        self.list
            .sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let mut out = text.to_string();
        for (start, end, replacement) in self.list {
            if start <= end
                && end <= out.len()
                && out.is_char_boundary(start)
                && out.is_char_boundary(end)
            {
                out.replace_range(start..end, &replacement);
            }
        }
        out
    }
}

fn range(span: &regorus::unstable::Span) -> (usize, usize) {
    (span.start as usize, span.end as usize)
}

fn rule_edits(rule: &Rule, text: &str, edits: &mut Edits, counter: &mut usize) {
    match rule {
        Rule::Spec { head, bodies, .. } => {
            match head {
                RuleHead::Compr { refr, assign, .. } => {
                    expr_edits(refr, text, edits, counter);
                    if let Some(a) = assign {
                        expr_edits(&a.value, text, edits, counter);
                    }
                }
                RuleHead::Set { refr, key, .. } => {
                    expr_edits(refr, text, edits, counter);
                    if let Some(k) = key {
                        expr_edits(k, text, edits, counter);
                    }
                }
                RuleHead::Func { assign, .. } => {
                    if let Some(a) = assign {
                        expr_edits(&a.value, text, edits, counter);
                    }
                }
            }
            for body in bodies {
                if let Some(a) = &body.assign {
                    expr_edits(&a.value, text, edits, counter);
                }
                query_edits(&body.query, text, edits, counter, true);
            }
        }
        Rule::Default { value, .. } => expr_edits(value, text, edits, counter),
    }
}

/// `rule_body`: the query is a rule's body, which may be written without braces (`p if x`).
fn query_edits(query: &Query, text: &str, edits: &mut Edits, counter: &mut usize, rule_body: bool) {
    let (start, end) = range(&query.span);
    // Braced when a `{` comes before the first statement (a v0 `else` body's query span
    // starts at `else`, a braceless v1 body's at its only statement).
    let first = query
        .stmts
        .first()
        .map_or(start, |s| range(&s.span).0.max(start));
    let braced = text.get(start..first).is_some_and(|t| t.contains('{'));
    let mut hoisted_any = false;
    for stmt in &query.stmts {
        hoisted_any |= stmt_edits(stmt, text, edits, counter);
    }
    if hoisted_any && rule_body && !braced {
        edits.insert(start, "{ ".into());
        edits.insert(end, " }".into());
    }
}

/// Returns whether arguments were hoisted before this statement.
fn stmt_edits(stmt: &LiteralStmt, text: &str, edits: &mut Edits, counter: &mut usize) -> bool {
    for m in &stmt.with_mods {
        expr_edits(&m.refr, text, edits, counter);
        expr_edits(&m.r#as, text, edits, counter);
    }
    match &stmt.literal {
        Literal::SomeVars { .. } => false,
        Literal::SomeIn {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(k) = key {
                expr_edits(k, text, edits, counter);
            }
            expr_edits(value, text, edits, counter);
            expr_edits(collection, text, edits, counter);
            false
        }
        Literal::Expr { expr, .. } => {
            expr_edits(expr, text, edits, counter);
            false
        }
        Literal::Every { domain, query, .. } => {
            expr_edits(domain, text, edits, counter);
            query_edits(query, text, edits, counter, false);
            false
        }
        Literal::NotExpr { expr, .. } => {
            expr_edits(expr, text, edits, counter);
            hoist(stmt, expr, text, edits, counter)
        }
    }
}

/// Binds the dynamic operands of a negated call to fresh variables before the statement.
fn hoist(
    stmt: &LiteralStmt,
    expr: &Expr,
    text: &str,
    edits: &mut Edits,
    counter: &mut usize,
) -> bool {
    let operands: Vec<&Expr> = match expr {
        Expr::Call { params, .. } => params.iter().map(|p| &**p).collect(),
        // `==` and `=` unify: OPA leaves their references in the negation, not their calls.
        Expr::BoolExpr {
            op: BoolOp::Eq,
            lhs,
            rhs,
            ..
        }
        | Expr::AssignExpr { lhs, rhs, .. } => [&**lhs, &**rhs]
            .into_iter()
            .filter(|e| is_call(e))
            .collect(),
        Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::BinExpr { lhs, rhs, .. } => vec![&**lhs, &**rhs],
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => key
            .iter()
            .map(|k| &**k)
            .chain([&**value, &**collection])
            .collect(),
        _ => Vec::new(),
    };
    let with_text: Vec<&str> = stmt.with_mods.iter().map(|m| m.span.text()).collect();
    let (at, _) = range(&stmt.span);
    let mut hoisted = false;
    for operand in operands {
        if !is_dynamic(operand) {
            continue;
        }
        let (start, end) = range(operand.span());
        let Some(operand_text) = text.get(start..end) else {
            continue;
        };
        if edits.overlaps(start, end) || operand_text.contains(['#', '`']) {
            // Nested edits would be lost; a comment or raw string cannot be put on one line.
            continue;
        }
        // The binding on one line (strings hold no raw newline); the operand's line breaks
        // stay where it was, so that line numbers do too.
        let line_breaks = "\n".repeat(operand_text.matches('\n').count());
        let operand_text = operand_text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let operand_text = operand_text.as_str();
        let var = format!("{HOIST_PREFIX}{counter}");
        *counter += 1;
        let mut binding = format!("{var} := {operand_text}");
        for w in &with_text {
            binding.push(' ');
            binding.push_str(w);
        }
        binding.push_str("; ");
        edits.insert(at, binding);
        edits.replace(start, end, format!("{var}{line_breaks}"));
        hoisted = true;
    }
    hoisted
}

fn is_call(expr: &Expr) -> bool {
    matches!(
        expr,
        Expr::Call { .. }
            | Expr::ArithExpr { .. }
            | Expr::BinExpr { .. }
            | Expr::BoolExpr { .. }
            | Expr::Membership { .. }
    )
}

/// Whether an operand may be undefined: it holds a reference or a call (comprehensions are
/// always defined, variables and literals are what they are).
fn is_dynamic(expr: &Expr) -> bool {
    match expr {
        Expr::RefDot { .. } | Expr::RefBrack { .. } | Expr::UnaryExpr { .. } => true,
        e if is_call(e) => true,
        Expr::Array { items, .. } | Expr::Set { items, .. } => items.iter().any(|i| is_dynamic(i)),
        Expr::Object { fields, .. } => fields
            .iter()
            .any(|(_, k, v)| is_dynamic(k) || is_dynamic(v)),
        _ => false,
    }
}

/// Edits inside an expression: the queries of its comprehensions.
fn expr_edits(expr: &Expr, text: &str, edits: &mut Edits, counter: &mut usize) {
    let mut recurse = |e: &Expr| expr_edits(e, text, edits, counter);
    match expr {
        Expr::Array { items, .. } | Expr::Set { items, .. } => {
            items.iter().for_each(|i| recurse(i))
        }
        Expr::Object { fields, .. } => fields.iter().for_each(|(_, k, v)| {
            recurse(k);
            recurse(v);
        }),
        Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
            recurse(term);
            query_edits(query, text, edits, counter, false);
        }
        Expr::ObjectCompr {
            key, value, query, ..
        } => {
            recurse(key);
            recurse(value);
            query_edits(query, text, edits, counter, false);
        }
        Expr::Call { fcn, params, .. } => {
            recurse(fcn);
            params.iter().for_each(|p| recurse(p));
        }
        Expr::UnaryExpr { expr, .. } => recurse(expr),
        Expr::RefDot { refr, .. } => recurse(refr),
        Expr::RefBrack { refr, index, .. } => {
            recurse(refr);
            recurse(index);
        }
        Expr::BinExpr { lhs, rhs, .. }
        | Expr::BoolExpr { lhs, rhs, .. }
        | Expr::ArithExpr { lhs, rhs, .. }
        | Expr::AssignExpr { lhs, rhs, .. } => {
            recurse(lhs);
            recurse(rhs);
        }
        Expr::Membership {
            key,
            value,
            collection,
            ..
        } => {
            if let Some(k) = key {
                recurse(k);
            }
            recurse(value);
            recurse(collection);
        }
        _ => {}
    }
}

/// The module's `test_*` rules, each later definition of a name renamed so that it runs on
/// its own. Returns (rule name in the engine, name reported), package-relative.
fn test_rules(module: &Module, edits: &mut Edits) -> Vec<(String, String)> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut tests = Vec::new();
    for rule in &module.policy {
        let Rule::Spec { head, .. } = &**rule else {
            continue;
        };
        let refr = match head {
            RuleHead::Compr { refr, .. } => refr,
            // Functions and partial sets are not tests.
            _ => continue,
        };
        let Expr::Var { span, .. } = &**refr else {
            continue;
        };
        let name = span.text().to_string();
        if !name.starts_with("test_") {
            continue;
        }
        let n = seen.entry(name.clone()).or_insert(0);
        if *n == 0 {
            tests.push((name.clone(), name));
        } else {
            let renamed = format!("{name}{DUPLICATE_MARK}{n:02}");
            let (start, end) = range(span);
            edits.replace(start, end, renamed.clone());
            tests.push((renamed, format!("{name}#{n:02}")));
        }
        *n += 1;
    }
    tests
}

/// A statement on a line of its own that starts with `(` is a new expression in OPA; regorus
/// reads it as a call of the previous line's last term (`y := input.a` ⏎ `(x + 1) > y`). Inside
/// braces, a `;` after that term keeps them apart. `None` when there is no such line.
fn separate_parenthesised_lines(path: &str, text: &str) -> Option<String> {
    const KEYWORDS: [&str; 11] = [
        "if", "else", "not", "some", "in", "with", "as", "contains", "every", "default", "import",
    ];
    let source = Source::from_contents(path.to_string(), text.to_string()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut edits = Edits::default();
    let mut open: Vec<String> = Vec::new();
    let mut previous: Option<Token> = None;
    loop {
        let token = lexer.next_token().ok()?;
        if token.0 == TokenKind::Eof {
            break;
        }
        let t = token.1.text();
        let symbol = token.0 == TokenKind::Symbol;
        if symbol
            && t == "("
            && open.last().is_some_and(|o| o == "{")
            && let Some(p) = &previous
            && p.1.line < token.1.line
        {
            let ends_term = match p.0 {
                TokenKind::Ident => !KEYWORDS.contains(&p.1.text()),
                TokenKind::Number => true,
                TokenKind::Symbol => matches!(p.1.text(), ")" | "]" | "}"),
                // Strings lose their closing quote in the span.
                _ => true,
            };
            if ends_term {
                let end = match p.0 {
                    TokenKind::String | TokenKind::RawString => p.1.end as usize + 1,
                    _ => p.1.end as usize,
                };
                edits.insert(end, ";".into());
            }
        }
        if symbol {
            match t {
                "{" | "[" | "(" => open.push(t.to_string()),
                "}" | "]" | ")" => {
                    open.pop();
                }
                _ => {}
            }
        }
        previous = Some(token);
    }
    if edits.list.is_empty() {
        None
    } else {
        Some(edits.apply(text))
    }
}

/// `HEAD { A } { B }` → `HEAD { A } HEAD { B }`, on one line each, for every top-level run of
/// bodies. `None` when the text has none (or does not tokenize).
fn split_bodies(path: &str, text: &str) -> Option<String> {
    let source = Source::from_contents(path.to_string(), text.to_string()).ok()?;
    let mut lexer = Lexer::new(&source);
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token().ok()?;
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push((token.0, token.1));
    }
    // Byte range of a token as written: strings lose their quotes in the lexer.
    let written = |(kind, span): &(TokenKind, regorus::unstable::Span)| match kind {
        TokenKind::String | TokenKind::RawString => {
            (span.start as usize).saturating_sub(1)..span.end as usize + 1
        }
        _ => span.start as usize..span.end as usize,
    };
    let symbol = |i: usize| match tokens.get(i) {
        Some((TokenKind::Symbol, span)) | Some((TokenKind::Ident, span)) => span.text(),
        _ => "",
    };
    let mut edits = Edits::default();
    let mut depth = 0i32;
    // Start of the current top-level statement, and where its first body opened.
    let mut head_start: Option<usize> = None;
    let mut first_body: Option<usize> = None;
    for i in 0..tokens.len() {
        let (_, span) = &tokens[i];
        let t = symbol(i);
        let previous = if i == 0 { "" } else { symbol(i - 1) };
        if depth == 0 {
            let new_line = i == 0 || span.line != tokens[i - 1].1.line;
            let continues = matches!(t, "else" | "{" | "}" | "if" | "contains" | "=" | ":=");
            if new_line && !continues && previous != "else" {
                head_start = Some(i);
                first_body = None;
            }
            if t == "{" {
                if previous == "}" {
                    // A further body of the same head.
                    if let (Some(h), Some(b)) = (head_start, first_body) {
                        if (h..b).any(|j| symbol(j) == "else") {
                            return None;
                        }
                        // The head on one line: a gap between two tokens (spaces, a
                        // newline, a comment) becomes one space.
                        let mut head = String::new();
                        let mut last_end = None;
                        for token in &tokens[h..b] {
                            let r = written(token);
                            if last_end.is_some_and(|end| r.start > end) {
                                head.push(' ');
                            }
                            last_end = Some(r.end);
                            head.push_str(text.get(r)?);
                        }
                        edits.insert(span.start as usize, format!("{head} "));
                    }
                } else if first_body.is_none() && previous != "else" {
                    first_body = Some(i);
                }
            }
        }
        match t {
            "{" | "[" | "(" => depth += 1,
            "}" | "]" | ")" => depth -= 1,
            _ => {}
        }
    }
    if edits.list.is_empty() {
        None
    } else {
        Some(edits.apply(text))
    }
}

#[cfg(test)]
mod tests;
