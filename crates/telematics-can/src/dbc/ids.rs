//! Message ids as written in the DBC text.
//!
//! can-dbc 10 turns an id above `0x7FF` written without bit 31 into `value as u16` (so
//! `0x17F00057` becomes standard `0x057`) and masks an id with bit 31 to 29 bits (so Vector's
//! `0xC0000000` placeholder becomes extended `0`). The truncated id is the key of every
//! `VAL_`, `SIG_VALTYPE_`, `SG_MUL_VAL_`, `BA_` and `CM_` entry too, so it cannot be repaired
//! afterwards. This module reads every `message_id` token with can-dbc's own grammar (so a
//! number inside a comment string is never touched), decides how the id is read, and rewrites
//! the tokens can-dbc would misread before can-dbc builds its AST:
//!
//! * `0..=0x7FF` → standard id, left as written;
//! * `0x800..=0x1FFF_FFFF` without bit 31 → extended id, rewritten with bit 31 set;
//! * bit 31 set and the rest `<= 0x1FFF_FFFF` → extended id, left as written;
//! * anything else (bits 29/30 set, above `u32`) → no CAN id: rewritten to a unique alias in
//!   `0x800..=0xFFFF` (a range can-dbc keeps as `Standard` and no valid id uses), so nothing
//!   can collide with a real message; the loader drops such messages.

use std::borrow::Cow;
use std::collections::HashMap;

use can_dbc_pest::{DbcParser, Parser as _, Rule};

/// First alias for an id that is no CAN id (the aliases are `Standard(0x800..=0xFFFF)`).
const ALIAS_BASE: u32 = 0x800;

/// How one written message id is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrittenId {
    /// 11-bit standard id.
    Standard(u16),
    /// 29-bit extended id (with or without bit 31 in the text).
    Extended {
        /// The 29 identifier bits.
        id: u32,
        /// Whether the text set bit 31.
        flagged: bool,
    },
    /// Not a CAN id (e.g. `0xC0000000`, `VECTOR__INDEPENDENT_SIG_MSG`).
    Invalid,
}

/// Classify a decimal id token as written in the DBC.
pub(crate) fn classify(token: &str) -> WrittenId {
    let Ok(w) = token.parse::<u64>() else {
        return WrittenId::Invalid;
    };
    match w {
        0..=0x7FF => WrittenId::Standard(w as u16),
        0x800..=0x1FFF_FFFF => WrittenId::Extended {
            id: w as u32,
            flagged: false,
        },
        0x8000_0000..=0x9FFF_FFFF => WrittenId::Extended {
            id: (w & 0x1FFF_FFFF) as u32,
            flagged: true,
        },
        _ => WrittenId::Invalid,
    }
}

/// The DBC text with every misread id token rewritten, and the written form of each alias.
#[derive(Debug)]
pub(crate) struct Prescan<'a> {
    /// Text to hand to can-dbc (borrowed when nothing had to be rewritten).
    pub text: Cow<'a, str>,
    /// Alias (`MessageId::Standard` value >= 0x800) -> id token as written.
    pub invalid: HashMap<u16, String>,
}

/// Why the pre-scan failed.
#[derive(Debug)]
pub(crate) enum PrescanError {
    /// The text does not follow the DBC grammar.
    Syntax(Box<can_dbc_pest::Error<Rule>>),
    /// More distinct invalid ids than aliases.
    TooManyInvalidIds,
}

/// Read every `message_id` token and rewrite the ones can-dbc would misread.
pub(crate) fn prescan(text: &str) -> Result<Prescan<'_>, PrescanError> {
    let pairs =
        DbcParser::parse(Rule::file, text).map_err(|e| PrescanError::Syntax(Box::new(e)))?;
    let mut edits: Vec<(usize, usize, String)> = Vec::new();
    let mut alias_of: HashMap<&str, u16> = HashMap::new();
    let mut invalid: HashMap<u16, String> = HashMap::new();
    for pair in pairs.flatten() {
        if pair.as_rule() != Rule::message_id {
            continue;
        }
        let span = pair.as_span();
        let token = span.as_str();
        let replacement = match classify(token) {
            WrittenId::Standard(_) | WrittenId::Extended { flagged: true, .. } => continue,
            WrittenId::Extended { id, flagged: false } => (id | 0x8000_0000).to_string(),
            WrittenId::Invalid => {
                // Same written value, same alias (leading zeros are the same id).
                let key = token.trim_start_matches('0');
                let alias = match alias_of.get(key) {
                    Some(a) => *a,
                    None => {
                        let next = ALIAS_BASE + alias_of.len() as u32;
                        let a = u16::try_from(next).map_err(|_| PrescanError::TooManyInvalidIds)?;
                        alias_of.insert(key, a);
                        invalid.insert(a, token.to_string());
                        a
                    }
                };
                alias.to_string()
            }
        };
        edits.push((span.start(), span.end(), replacement));
    }
    if edits.is_empty() {
        return Ok(Prescan {
            text: Cow::Borrowed(text),
            invalid,
        });
    }
    edits.sort_by_key(|(s, _, _)| *s);
    let mut out = String::with_capacity(text.len() + 4 * edits.len());
    let mut pos = 0;
    for (start, end, rep) in &edits {
        out.push_str(text.get(pos..*start).unwrap_or(""));
        out.push_str(rep);
        pos = *end;
    }
    out.push_str(text.get(pos..).unwrap_or(""));
    Ok(Prescan {
        text: Cow::Owned(out),
        invalid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_follows_the_written_value() {
        assert_eq!(classify("0"), WrittenId::Standard(0));
        assert_eq!(classify("2047"), WrittenId::Standard(0x7FF));
        assert_eq!(
            classify("2048"),
            WrittenId::Extended {
                id: 0x800,
                flagged: false
            }
        );
        assert_eq!(
            classify("401604695"),
            WrittenId::Extended {
                id: 0x17F0_0057,
                flagged: false
            }
        );
        assert_eq!(
            classify("2147483648"),
            WrittenId::Extended {
                id: 0,
                flagged: true
            }
        );
        assert_eq!(classify("536870912"), WrittenId::Invalid); // 0x20000000
        assert_eq!(classify("3221225472"), WrittenId::Invalid); // 0xC0000000
        assert_eq!(classify("99999999999999999999999"), WrittenId::Invalid);
    }

    #[test]
    fn only_id_tokens_are_rewritten() {
        let text = "VERSION \"\"\n\nBU_: X\n\nBO_ 401604695 A: 8 X\n SG_ S : 0|8@1+ (1,0) [0|0] \"\" X\n\n\
                    BO_ 3221225472 VECTOR__INDEPENDENT_SIG_MSG: 0 Vector__XXX\n\n\
                    CM_ BO_ 401604695 \"BO_ 401604695 stays in the comment\";\n\
                    VAL_ 401604695 S 1 \"ONE\" ;\n";
        let p = prescan(text).expect("parses");
        assert!(p.text.contains("BO_ 2549088343 A: 8 X"), "{}", p.text);
        assert!(p.text.contains("\"BO_ 401604695 stays in the comment\""));
        assert!(p.text.contains("VAL_ 2549088343 S"));
        assert!(p.text.contains("BO_ 2048 VECTOR__INDEPENDENT_SIG_MSG"));
        assert_eq!(
            p.invalid.get(&0x800).map(String::as_str),
            Some("3221225472")
        );
    }
}
