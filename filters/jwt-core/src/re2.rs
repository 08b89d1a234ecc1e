//! RE2's meaning for the patterns Envoy's `safe_regex` takes, on Rust's `regex` crate.
//!
//! The syntax is mostly shared, but not the meaning of all of it:
//! - in RE2 the Perl classes `\d`, `\w`, `\s` and the word boundaries `\b`, `\B` are
//!   ASCII-only, where the `regex` crate makes them Unicode-aware (`user-\d+` would admit a
//!   subject of Arabic-Indic digits that Envoy refuses): they are spelled out in ASCII;
//! - `\<` and `\>` are the characters `<` and `>` in RE2, word boundaries in the `regex`
//!   crate: they become the characters;
//! - what only the `regex` crate has is refused at load, naming it, rather than read another
//!   way: class set operations (`&&`, `--`, `~~`) and nested brackets (literal characters in
//!   RE2), `\b{start}` and its kin, the `u`, `x` and `R` flags.
//!
//! The pattern is parsed on its own and only the rewritten tree is anchored (`^(?:...)$`), so
//! no pattern reaches outside its group. The rest (`.`, `\pL`, case folding) already means
//! the same in both.

use regex::Regex;
use regex_syntax::ast::{
    self, AssertionKind, Ast, ClassBracketed, ClassPerl, ClassPerlKind, ClassSet, ClassSetItem,
    ClassSetRange, ClassSetUnion, Flag, Flags, FlagsItem, FlagsItemKind, Group, GroupKind, Literal,
    LiteralKind, Span,
};

/// Compiles `pattern` to match whole strings only, as Envoy's `safe_regex` does, with RE2's
/// meaning.
pub fn whole(pattern: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{})$", rewrite(pattern)?)).map_err(|e| e.to_string())
}

/// `pattern` with RE2's meaning spelled out for the `regex` crate, or why it cannot be.
pub fn rewrite(pattern: &str) -> Result<String, String> {
    let mut tree = ast::parse::Parser::new()
        .parse(pattern)
        .map_err(|e| e.to_string())?;
    asciify(&mut tree)?;
    let mut out = String::with_capacity(pattern.len() * 2);
    ast::print::Printer::new()
        .print(&tree, &mut out)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

fn not_re2(what: &str) -> String {
    format!("{what} is not RE2 syntax (Envoy reads it otherwise); escape the characters")
}

/// Refuses flags RE2 does not have.
fn check_flags(flags: &Flags) -> Result<(), String> {
    for item in &flags.items {
        if let FlagsItemKind::Flag(flag @ (Flag::Unicode | Flag::IgnoreWhitespace | Flag::CRLF)) =
            &item.kind
        {
            return Err(format!(
                "the flag {flag:?} is not RE2 syntax (RE2 has i, m, s and U)"
            ));
        }
    }
    Ok(())
}

fn asciify(node: &mut Ast) -> Result<(), String> {
    match node {
        Ast::ClassPerl(class) => {
            *node = Ast::ClassBracketed(Box::new(ascii_class(class)));
        }
        Ast::Assertion(assertion) => match assertion.kind {
            AssertionKind::WordBoundary | AssertionKind::NotWordBoundary => {
                let span = assertion.span;
                let inner = std::mem::replace(node, Ast::empty(span));
                *node = Ast::group(Group {
                    span,
                    kind: GroupKind::NonCapturing(without_unicode(span)),
                    ast: Box::new(inner),
                });
            }
            AssertionKind::WordBoundaryStartAngle | AssertionKind::WordBoundaryEndAngle => {
                let c = if assertion.kind == AssertionKind::WordBoundaryStartAngle {
                    '<'
                } else {
                    '>'
                };
                *node = Ast::literal(Literal {
                    span: assertion.span,
                    kind: LiteralKind::Verbatim,
                    c,
                });
            }
            AssertionKind::WordBoundaryStart
            | AssertionKind::WordBoundaryEnd
            | AssertionKind::WordBoundaryStartHalf
            | AssertionKind::WordBoundaryEndHalf => return Err(not_re2("\\b{...}")),
            _ => {}
        },
        Ast::Flags(set) => check_flags(&set.flags)?,
        Ast::ClassBracketed(class) => asciify_set(&mut class.kind)?,
        Ast::Repetition(repetition) => asciify(&mut repetition.ast)?,
        Ast::Group(group) => {
            if let GroupKind::NonCapturing(flags) = &group.kind {
                check_flags(flags)?;
            }
            asciify(&mut group.ast)?;
        }
        Ast::Alternation(alternation) => {
            for ast in &mut alternation.asts {
                asciify(ast)?;
            }
        }
        Ast::Concat(concat) => {
            for ast in &mut concat.asts {
                asciify(ast)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn asciify_set(set: &mut ClassSet) -> Result<(), String> {
    match set {
        ClassSet::Item(item) => asciify_item(item),
        ClassSet::BinaryOp(_) => Err(not_re2("a class set operation (&&, --, ~~)")),
    }
}

fn asciify_item(item: &mut ClassSetItem) -> Result<(), String> {
    match item {
        ClassSetItem::Perl(class) => {
            *item = ClassSetItem::Bracketed(Box::new(ascii_class(class)));
        }
        ClassSetItem::Bracketed(_) => return Err(not_re2("a bracket inside brackets")),
        ClassSetItem::Union(union) => {
            for item in &mut union.items {
                asciify_item(item)?;
            }
        }
        _ => {}
    }
    Ok(())
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

    fn re(pattern: &str) -> Regex {
        whole(pattern).unwrap()
    }

    #[test]
    fn perl_classes_match_ascii_only_as_in_re2() {
        // Arabic-Indic digits, a non-ASCII letter, a no-break space, an em space.
        assert!(re(r"user-\d+").is_match("user-12"));
        assert!(!re(r"user-\d+").is_match("user-\u{661}\u{662}"));
        assert!(!re(r"\w+").is_match("é"));
        assert!(re(r"\w+").is_match("a_Z9"));
        assert!(!re(r"a\sb").is_match("a\u{a0}b"));
        assert!(!re(r"a\sb").is_match("a\u{2003}b"));
        assert!(re(r"a\sb").is_match("a\tb"));
        // RE2's \s leaves out the vertical tab.
        assert!(!re(r"a\sb").is_match("a\x0Bb"));
        // Negated classes take everything else, non-ASCII included.
        assert!(re(r"\D").is_match("\u{661}"));
        assert!(re(r"\W").is_match("é"));
        assert!(!re(r"\D").is_match("7"));
        // Inside brackets and negated brackets too.
        assert!(!re(r"[\d.]+").is_match("1.\u{662}"));
        assert!(re(r"[\d.]+").is_match("1.2"));
        assert!(re(r"[^\d]").is_match("\u{662}"));
        assert!(!re(r"[^\W_]+").is_match("é"));
        // Repetitions, groups and alternations are walked.
        assert!(!re(r"(x|(\d){2})").is_match("\u{661}\u{662}"));
    }

    #[test]
    fn word_boundaries_are_ascii_and_angles_are_characters() {
        // "é" is not a word character in RE2: there is a boundary between it and "a".
        assert!(re(r".*\ba").is_match("éa"));
        assert!(!re(r".*\Ba").is_match("éa"));
        // RE2 reads \< and \> as the characters.
        assert!(re(r"\<admin\>").is_match("<admin>"));
        assert!(!re(r"\<admin\>").is_match("admin"));
        assert!(!re(r"(?i)\<ab").is_match("AB"));
    }

    #[test]
    fn what_re2_reads_otherwise_is_refused_at_load() {
        for pattern in [
            r"[a[b]c]",
            r"[a-z&&0-9]+",
            r"[a-z--b]",
            r"[a~~b]",
            r"\b{start}x",
            r"(?u)\w",
            r"(?-u:\w)",
            r"(?x)a b",
            r"a(?R)b",
        ] {
            assert!(whole(pattern).is_err(), "{pattern} loaded");
        }
    }

    #[test]
    fn a_pattern_stays_inside_its_anchors() {
        for pattern in [r"a)|(b", r"a)(?x)#", r")(?x)#", r"a)"] {
            assert!(whole(pattern).is_err(), "{pattern} loaded");
        }
        assert!(!re(r"a|b").is_match("ab"));
        assert!(re(r"a|b").is_match("b"));
    }

    #[test]
    fn other_syntax_is_kept_and_errors_still_name_the_problem() {
        assert_eq!(
            rewrite(r"^/v[0-9]+/(a|b)\.json$").unwrap(),
            r"^/v[0-9]+/(a|b)\.json$"
        );
        assert!(re(r"\pL+").is_match("é"));
        assert!(re(r"(?i)ABC").is_match("abc"));
        assert!(re(r"[[:alpha:]]+").is_match("abc"));
        assert!(whole(r"a(").is_err());
        assert!(whole(r"[z-a]").is_err());
    }
}
