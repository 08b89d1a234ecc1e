//! RE2's meaning for the patterns Envoy's `safe_regex` takes, on Rust's `regex` crate.
//!
//! The syntax is shared, but in RE2 the Perl classes `\d`, `\w`, `\s` and the word boundaries
//! `\b`, `\B` are ASCII-only, where the `regex` crate makes them Unicode-aware: `user-\d+`
//! would admit a subject of Arabic-Indic digits that Envoy refuses. A pattern is therefore
//! parsed and rewritten with those classes spelled out in ASCII before it is compiled; the
//! rest (`.`, `\pL`, case folding) already means the same in both.

use regex::Regex;
use regex_syntax::ast::{
    self, Ast, ClassBracketed, ClassPerl, ClassPerlKind, ClassSet, ClassSetItem, ClassSetRange,
    ClassSetUnion, Flag, Flags, FlagsItem, FlagsItemKind, Group, GroupKind, Literal, LiteralKind,
    Span,
};

/// Compiles `pattern` with RE2's ASCII Perl classes and word boundaries.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    Regex::new(&rewrite(pattern)?).map_err(|e| e.to_string())
}

/// `pattern` with every Perl class and word boundary spelled out in ASCII.
pub fn rewrite(pattern: &str) -> Result<String, String> {
    let mut tree = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    asciify(&mut tree);
    let mut out = String::with_capacity(pattern.len() * 2);
    ast::print::Printer::new()
        .print(&tree, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn asciify(node: &mut Ast) {
    match node {
        Ast::ClassPerl(class) => {
            *node = Ast::ClassBracketed(Box::new(ascii_class(class)));
        }
        Ast::Assertion(assertion)
            if matches!(
                assertion.kind,
                ast::AssertionKind::WordBoundary | ast::AssertionKind::NotWordBoundary
            ) =>
        {
            let span = assertion.span;
            let inner = std::mem::replace(node, Ast::empty(span));
            *node = Ast::group(Group {
                span,
                kind: GroupKind::NonCapturing(without_unicode(span)),
                ast: Box::new(inner),
            });
        }
        Ast::ClassBracketed(class) => asciify_set(&mut class.kind),
        Ast::Repetition(repetition) => asciify(&mut repetition.ast),
        Ast::Group(group) => asciify(&mut group.ast),
        Ast::Alternation(alternation) => alternation.asts.iter_mut().for_each(asciify),
        Ast::Concat(concat) => concat.asts.iter_mut().for_each(asciify),
        _ => {}
    }
}

fn asciify_set(set: &mut ClassSet) {
    match set {
        ClassSet::Item(item) => asciify_item(item),
        ClassSet::BinaryOp(op) => {
            asciify_set(&mut op.lhs);
            asciify_set(&mut op.rhs);
        }
    }
}

fn asciify_item(item: &mut ClassSetItem) {
    match item {
        ClassSetItem::Perl(class) => {
            *item = ClassSetItem::Bracketed(Box::new(ascii_class(class)));
        }
        ClassSetItem::Bracketed(class) => asciify_set(&mut class.kind),
        ClassSetItem::Union(union) => union.items.iter_mut().for_each(asciify_item),
        _ => {}
    }
}

/// RE2's `\d` `[0-9]`, `\w` `[0-9A-Za-z_]`, `\s` `[\t\n\f\r ]`, negated as written.
fn ascii_class(class: &ClassPerl) -> ClassBracketed {
    let span = class.span;
    let literal = |c: char| Literal {
        span,
        kind: if c.is_ascii_alphanumeric() || c == '_' {
            LiteralKind::Verbatim
        } else {
            LiteralKind::HexFixed(ast::HexLiteralKind::X)
        },
        c,
    };
    let range = |start: char, end: char| {
        ClassSetItem::Range(ClassSetRange {
            span,
            start: literal(start),
            end: literal(end),
        })
    };
    let items = match class.kind {
        ClassPerlKind::Digit => vec![range('0', '9')],
        ClassPerlKind::Word => vec![
            range('0', '9'),
            range('A', 'Z'),
            range('a', 'z'),
            ClassSetItem::Literal(literal('_')),
        ],
        ClassPerlKind::Space => ['\t', '\n', '\x0C', '\r', ' ']
            .into_iter()
            .map(|c| ClassSetItem::Literal(literal(c)))
            .collect(),
    };
    ClassBracketed {
        span,
        negated: class.negated,
        kind: ClassSet::Item(ClassSetItem::Union(ClassSetUnion { span, items })),
    }
}

/// `(?-u:...)`: ASCII word boundaries.
fn without_unicode(span: Span) -> Flags {
    Flags {
        span,
        items: vec![
            FlagsItem {
                span,
                kind: FlagsItemKind::Negation,
            },
            FlagsItem {
                span,
                kind: FlagsItemKind::Flag(Flag::Unicode),
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(pattern: &str) -> Regex {
        compile(&format!("^(?:{pattern})$")).unwrap()
    }

    #[test]
    fn perl_classes_match_ascii_only_as_in_re2() {
        // Arabic-Indic digits, a non-ASCII letter, a no-break space, an em space.
        assert!(whole(r"user-\d+").is_match("user-12"));
        assert!(!whole(r"user-\d+").is_match("user-\u{661}\u{662}"));
        assert!(!whole(r"\w+").is_match("é"));
        assert!(whole(r"\w+").is_match("a_Z9"));
        assert!(!whole(r"a\sb").is_match("a\u{a0}b"));
        assert!(!whole(r"a\sb").is_match("a\u{2003}b"));
        assert!(whole(r"a\sb").is_match("a\tb"));
        // RE2's \s leaves out the vertical tab.
        assert!(!whole(r"a\sb").is_match("a\x0Bb"));
        // Negated classes take everything else, non-ASCII included.
        assert!(whole(r"\D").is_match("\u{661}"));
        assert!(whole(r"\W").is_match("é"));
        assert!(!whole(r"\D").is_match("7"));
        // Inside brackets, negated brackets and set operations too.
        assert!(!whole(r"[\d.]+").is_match("1.\u{662}"));
        assert!(whole(r"[\d.]+").is_match("1.2"));
        assert!(whole(r"[^\d]").is_match("\u{662}"));
        assert!(!whole(r"[\w&&[^_]]+").is_match("é"));
        // Repetitions, groups and alternations are walked.
        assert!(!whole(r"(x|(\d){2})").is_match("\u{661}\u{662}"));
    }

    #[test]
    fn word_boundaries_are_ascii() {
        // "é" is not a word character in RE2: there is a boundary between it and "a".
        assert!(compile(r"\ba").unwrap().is_match("éa"));
        assert!(!compile(r"\Ba").unwrap().is_match("éa"));
    }

    #[test]
    fn other_syntax_is_kept_and_errors_still_name_the_problem() {
        assert_eq!(
            rewrite(r"^/v[0-9]+/(a|b)\.json$").unwrap(),
            r"^/v[0-9]+/(a|b)\.json$"
        );
        assert!(whole(r"\pL+").is_match("é"));
        assert!(whole(r"(?i)ABC").is_match("abc"));
        assert!(compile(r"a(").is_err());
        assert!(compile(r"[z-a]").is_err());
    }
}
